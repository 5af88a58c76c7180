"""Calibration, conformal prediction and selective-prediction metrics: pure numpy functions.

Inputs are single-label class probabilities ``probs`` (N, C) with rows summing to 1 (a binary
(N,) positive-class probability is accepted and becomes ``[1 - p, p]``) and labels ``y`` (N,)
int in [0, C). Inputs go through ``medfm.metrics.classification.prepare`` (same checks, same
errors as the other classification metrics).

- ``ece`` / ``mce``: expected / maximum calibration error of the top-label confidence over
  equal-width bins (``ece`` is ``classification``'s own ECE, not a second copy).
- ``brier``: mean over samples of the squared distance between the probability vector and the
  one-hot label, divided by 2 so that binary tasks equal scikit-learn's ``brier_score_loss``
  (in [0, 1]).
- ``nll``: mean negative log-likelihood of the true class (probabilities clipped at 1e-12).
- ``fit_temperature`` / ``apply_temperature``: temperature scaling (Guo et al. 2017) of the
  log-probabilities, T fitted by minimising the validation NLL.
- ``conformal_quantile`` / ``prediction_sets``: split-conformal sets with the LAC score
  ``1 - p_true`` (Sadinle et al. 2019; MAPIE's ``"lac"``): the set keeps every class whose
  score is below the calibration quantile at level ceil((n+1)(1-alpha))/n.
- ``smoothed_prediction_sets``: the same score with smoothed (randomised) conformal p-values
  (Vovk et al. 2005, ch. 2): ties and the rank rounding are broken by one uniform draw per test
  sample, so the expected coverage is exactly 1 - alpha, where LAC's is up to 1 / (n + 1) above
  it, and more when scores tie (kNN votes, saturated probabilities).
- ``coverage_ci`` / ``conformal_coverage_law``: the exact binomial CI of a measured coverage and
  the Beta law of the coverage that one calibration set of n samples gives (finite-sample spread).
- ``risk_coverage`` / ``aurc``: selective risk (error rate among the kept samples) against
  coverage when samples are kept in order of decreasing confidence.
"""

from __future__ import annotations

import math

import numpy as np

from medfm.errors import InputError
from medfm.metrics.classification import ECE_BINS, _ece_from, prepare

HIGHER_IS_BETTER: dict[str, bool] = {
    "ece": False,
    "mce": False,
    "brier": False,
    "nll": False,
    "coverage": True,  # of conformal sets; the target is 1 - alpha, more is not the aim
    "set_size": False,
    "singleton_rate": True,  # share of samples predicted (not abstained) under conformal abstention
    "selective_risk": False,
    "aurc": False,
}
# the same metrics of raw ("_before") and temperature-scaled ("_after") probabilities
HIGHER_IS_BETTER.update({f"{k}_{when}": False for k in ("ece", "mce", "brier", "nll", "aurc") for when in ("before", "after")})
# the explanation sanity checks' numbers (``medfm explain`` records; see tasks/trust/explain.py)
HIGHER_IS_BETTER.update({
    "randomisation_rank_corr": False,  # maps of the trained vs the weight-randomised model
    "deletion_auc": False, "deletion_auc_random": False,
    "insertion_auc": True, "insertion_auc_random": True,
})

EPS = 1e-12


def _single(y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    p = np.asarray(probs, dtype=np.float64)
    task = "binary" if p.ndim == 1 or (p.ndim == 2 and p.shape[1] <= 2) else "multiclass"
    return prepare(y, p, task)


def ece(y: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error (top-label, equal-width bins, L1), as ``classification``'s ``ece``."""
    yy, s = _single(y, probs)
    return _ece_from(s.max(axis=1), s.argmax(axis=1) == yy, n_bins)


def mce(y: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Maximum calibration error: the largest |accuracy - confidence| over non-empty bins."""
    yy, s = _single(y, probs)
    conf, correct = s.max(axis=1), (s.argmax(axis=1) == yy).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    gap = np.bincount(idx, weights=correct, minlength=n_bins) - np.bincount(idx, weights=conf, minlength=n_bins)
    used = count > 0
    return float(np.max(np.abs(gap[used]) / count[used]))


def brier(y: np.ndarray, probs: np.ndarray) -> float:
    """Half the mean squared distance to the one-hot label (binary: scikit-learn's Brier score)."""
    yy, s = _single(y, probs)
    onehot = np.eye(s.shape[1])[yy]
    return float(np.mean(np.sum((s - onehot) ** 2, axis=1)) / 2.0)


def nll(y: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class."""
    yy, s = _single(y, probs)
    return float(-np.mean(np.log(np.clip(s[np.arange(len(yy)), yy], EPS, 1.0))))


def calibration_metrics(y: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS) -> dict[str, float]:
    """``{"ece", "mce", "brier", "nll"}`` of one set of predictions."""
    return {"ece": ece(y, probs, n_bins), "mce": mce(y, probs, n_bins), "brier": brier(y, probs), "nll": nll(y, probs)}


# --------------------------------------------------------------------------------------
# temperature scaling
# --------------------------------------------------------------------------------------
def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities rescaled as softmax(log p / T); (N,) binary input gives (N, 2)."""
    if not (temperature > 0 and math.isfinite(temperature)):
        raise InputError(f"temperature must be a positive finite number, got {temperature}")
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    z = np.log(np.clip(p, EPS, 1.0)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(y: np.ndarray, probs: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature T in ``bounds`` minimising the NLL of ``apply_temperature(probs, T)``.

    One parameter: a bounded scalar search on log T (NLL is smooth and, in log T, unimodal in
    practice). ``probs`` are a held-out (validation) split's probabilities, never the test's.
    """
    from scipy.optimize import minimize_scalar

    yy, s = _single(y, probs)
    if len(yy) < 2:
        raise InputError(f"temperature scaling needs at least 2 validation samples, got {len(yy)}")
    logp = np.log(np.clip(s, EPS, 1.0))
    rows = np.arange(len(yy))

    def loss(log_t: float) -> float:
        z = logp / math.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        return float(np.mean(lse - z[rows, yy]))

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    best = float(res.x)
    if loss(0.0) <= loss(best):  # already optimal at T = 1 (or a flat objective)
        return 1.0
    return float(math.exp(best))


# --------------------------------------------------------------------------------------
# split-conformal prediction sets (LAC score)
# --------------------------------------------------------------------------------------
def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise InputError(f"alpha (miscoverage) must be in (0, 1), got {alpha}")


def min_calibration_size(alpha: float) -> int:
    """Smallest calibration set for which the (1 - alpha) conformal quantile is finite."""
    _check_alpha(alpha)
    return int(math.ceil(1.0 / alpha - 1.0 - 1e-9))


def conformal_quantile(y_cal: np.ndarray, probs_cal: np.ndarray, alpha: float) -> float:
    """The LAC threshold q: sets are ``{c : 1 - p_c <= q}``; marginal coverage >= 1 - alpha.

    q is the ceil((n+1)(1-alpha))-th smallest calibration score ``1 - p_true``. Too few
    calibration samples for that rank (n < 1/alpha - 1) is an ``InputError``.
    """
    _check_alpha(alpha)
    yy, s = _single(y_cal, probs_cal)
    n = len(yy)
    k = int(math.ceil((n + 1) * (1.0 - alpha) - 1e-9))
    if k > n:
        raise InputError(
            f"split conformal at alpha={alpha} needs at least {min_calibration_size(alpha)} calibration samples, got {n}"
        )
    scores = 1.0 - s[np.arange(n), yy]
    return float(np.sort(scores)[k - 1])


def prediction_sets(probs: np.ndarray, q: float) -> np.ndarray:
    """(N, C) bool: class c is in sample i's set when ``1 - p_ic <= q`` (a tiny tolerance keeps
    the calibration sample that defines q inside its own set despite float rounding)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    return (1.0 - p) <= q + 1e-12


def smoothed_prediction_sets(
    y_cal: np.ndarray, probs_cal: np.ndarray, probs: np.ndarray, alpha: float, seed: int = 0
) -> np.ndarray:
    """(N, C) bool sets from smoothed conformal p-values of the LAC score ``1 - p_c``.

    For test sample i with draw u_i ~ U(0, 1): p_ic = (#{cal > s_ic} + u_i (#{cal = s_ic} + 1)) / (n + 1),
    and c is in the set when p_ic > alpha. Marginal coverage is exactly 1 - alpha for exchangeable
    data, ties included; the draws are seeded, so a run is reproducible.
    """
    _check_alpha(alpha)
    yy, s = _single(y_cal, probs_cal)
    n = len(yy)
    if n < 1:
        raise InputError("smoothed conformal sets need at least one calibration sample")
    cal_scores = np.sort(1.0 - s[np.arange(n), yy])
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    scores = 1.0 - p
    tol = 1e-12  # scores equal up to float rounding count as ties (as in ``prediction_sets``)
    below = np.searchsorted(cal_scores, scores - tol, side="left")  # cal < s - tol
    upto = np.searchsorted(cal_scores, scores + tol, side="right")  # cal <= s + tol
    greater, ties = n - upto, upto - below
    u = np.random.default_rng(seed).random(len(p))[:, None]
    pvalues = (greater + u * (ties + 1)) / (n + 1)
    return pvalues > alpha


def coverage_ci(covered: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact binomial) interval of a coverage measured as ``covered`` of ``n`` test samples."""
    from scipy.stats import binomtest

    if n < 1 or not 0 <= covered <= n:
        raise InputError(f"coverage_ci: {covered} covered of {n} samples")
    ci = binomtest(int(covered), int(n)).proportion_ci(confidence_level=level, method="exact")
    return float(ci.low), float(ci.high)


def conformal_coverage_law(n_cal: int, alpha: float, smoothed: bool = False) -> dict[str, float]:
    """What split conformal promises with ``n_cal`` calibration samples (Vovk 2012; Angelopoulos &
    Bates 2021, sec. 3.2), for continuous scores. LAC: coverage given the calibration set is
    Beta(k, n + 1 - k) with k = ceil((n + 1)(1 - alpha)); its mean lies in [1 - alpha,
    1 - alpha + 1 / (n + 1)], and its sd is the spread a single calibration set leaves (about
    3.4 points at n = 78, alpha = 0.1). Smoothed: with t = (n + 1)(1 - alpha) = i + f, the
    coverage is (1 - f) U_(i) + f U_(i+1) of the uniform order statistics: mean exactly
    1 - alpha, the sd from their covariances."""
    _check_alpha(alpha)
    k = int(math.ceil((n_cal + 1) * (1.0 - alpha) - 1e-9))
    if k > n_cal:
        raise InputError(f"split conformal at alpha={alpha} needs at least {min_calibration_size(alpha)} calibration samples")
    a, b = float(k), float(n_cal + 1 - k)
    if not smoothed:
        return {"mean": a / (a + b), "sd": math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1))), "k": k, "n_cal": n_cal}
    t = (n_cal + 1) * (1.0 - alpha)
    i = int(math.floor(t + 1e-9))
    f = max(0.0, t - i)
    m = n_cal + 1

    def cov(x: int, y: int) -> float:  # Cov(U_(x), U_(y)), x <= y, of n_cal uniforms; U_(0) = 0, U_(n+1) = 1
        return 0.0 if x <= 0 or y >= m else x * (m - y) / (m * m * (m + 1))

    j = min(i + 1, m)
    var = (1 - f) ** 2 * cov(i, i) + f**2 * cov(j, j) + 2 * f * (1 - f) * cov(i, j)
    return {"mean": 1.0 - alpha, "sd": math.sqrt(max(var, 0.0)), "k": k, "n_cal": n_cal}


def set_coverage(y: np.ndarray, sets: np.ndarray) -> float:
    """Share of samples whose set contains the true class."""
    yy = np.asarray(y).reshape(-1).astype(np.int64)
    return float(np.mean(sets[np.arange(len(yy)), yy]))


def conformal_metrics(y: np.ndarray, sets: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Coverage, mean set size, and selective prediction that abstains unless the set is one
    class: ``singleton_rate`` (coverage of the selective classifier) and ``selective_risk``
    (error of the argmax among the samples not abstained; NaN when every sample abstains)."""
    yy, s = _single(y, probs)
    single = sets.sum(axis=1) == 1
    wrong = s.argmax(axis=1) != yy
    return {
        "coverage": set_coverage(yy, sets),
        "set_size": float(sets.sum(axis=1).mean()),
        "singleton_rate": float(single.mean()),
        "selective_risk": float(wrong[single].mean()) if single.any() else math.nan,
    }


# --------------------------------------------------------------------------------------
# risk-coverage
# --------------------------------------------------------------------------------------
def risk_coverage(y: np.ndarray, probs: np.ndarray) -> dict[str, np.ndarray]:
    """Selective risk at every coverage when samples are kept by decreasing top-label confidence.

    Returns ``{"coverage": (N,), "risk": (N,), "threshold": (N,)}``: keeping the k most
    confident samples gives coverage k/N and risk = errors among them / k. Ties in confidence
    are kept together (the curve only has points where the threshold changes).
    """
    yy, s = _single(y, probs)
    conf = s.max(axis=1)
    wrong = (s.argmax(axis=1) != yy).astype(np.float64)
    order = np.argsort(-conf, kind="mergesort")
    conf_sorted = conf[order]
    cum_err = np.cumsum(wrong[order])
    n = len(yy)
    k = np.arange(1, n + 1)
    last_of_tie = np.r_[conf_sorted[1:] != conf_sorted[:-1], True]
    return {
        "coverage": (k / n)[last_of_tie],
        "risk": (cum_err / k)[last_of_tie],
        "threshold": conf_sorted[last_of_tie],
    }


def aurc(y: np.ndarray, probs: np.ndarray) -> float:
    """Area under the risk-coverage curve (Geifman et al. 2019): mean selective risk over the
    coverages 1/N..1, ties in confidence sharing their group's risk."""
    yy, s = _single(y, probs)
    rc = risk_coverage(yy, s)
    n = len(yy)
    counts = np.diff(np.r_[0, np.round(rc["coverage"] * n).astype(int)])
    return float(np.sum(rc["risk"] * counts) / n)
