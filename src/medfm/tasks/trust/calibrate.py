"""Post-hoc calibration and abstention of a classifier's probabilities.

``calibrate(val_y, val_scores, test_y, test_scores, cfg)`` fits everything on the validation
split only (temperature, conformal threshold) and reports on the test split: ECE / MCE /
Brier / NLL and reliability bins before and after temperature scaling, split-conformal
prediction sets at coverage ``1 - alpha`` (LAC score on the scaled probabilities; ``conformal=
"smoothed"``: randomised p-values, expected coverage exactly 1 - alpha even when scores tie), selective
prediction that abstains when the set is not exactly one class, and the risk-coverage curve.
Single-label tasks only (binary, multiclass, ordinal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medfm.errors import ConfigError, InputError
from medfm.metrics import calibration as cal
from medfm.metrics.bootstrap import bootstrap_cis
from medfm.metrics.classification import ECE_BINS, prepare, reliability_bins
from medfm.results import MetricValue


CONFORMAL_METHODS = ("lac", "smoothed")


@dataclass
class CalibrationConfig:
    """``alpha``: conformal miscoverage (sets cover the true class with probability >= 1 - alpha);
    ``n_bins``: ECE / reliability bins; ``curve_points``: risk-coverage points kept for plots;
    ``keep_if_val_ece_rises``: the NLL-optimal temperature is kept only when it does not raise
    the validation ECE (else T = 1): NLL and ECE can disagree on small validation sets;
    ``conformal``: "lac" (deterministic sets, coverage >= 1 - alpha, above it when scores tie) or
    "smoothed" (one seeded uniform draw per test sample breaks ties: coverage 1 - alpha on average)."""

    alpha: float = 0.1
    n_bins: int = ECE_BINS
    curve_points: int = 51
    n_boot: int = 1000
    seed: int = 0
    keep_if_val_ece_rises: bool = True
    conformal: str = "lac"

    def __post_init__(self) -> None:
        if self.conformal not in CONFORMAL_METHODS:
            raise ConfigError(f"calibrate: conformal must be one of {', '.join(CONFORMAL_METHODS)}, got {self.conformal!r}")
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"calibrate: alpha must be in (0, 1), got {self.alpha}")
        if self.n_bins < 2 or self.curve_points < 2:
            raise ConfigError("calibrate: n_bins and curve_points must be >= 2")


@dataclass
class CalibrationResult:
    """What ``calibrate`` measured. ``before`` / ``after`` hold test-split metrics (``ece``,
    ``mce``, ``brier``, ``nll``) of the raw and the temperature-scaled probabilities;
    ``metrics`` the same with bootstrap CIs as ``{ece_before, ece_after, ..., coverage, set_size}``;
    ``conformal`` the test coverage, mean set size, singleton rate and selective risk;
    ``risk_coverage`` thinned curves ``{"raw"|"scaled": {"coverage", "risk"}}`` and their AURC."""

    temperature: float
    alpha: float
    conformal_q: float
    n_val: int
    n_test: int
    before: dict[str, float]
    after: dict[str, float]
    val_before: dict[str, float]
    val_after: dict[str, float]
    conformal: dict[str, float]
    risk_coverage: dict[str, Any]
    reliability_before: dict[str, Any]
    reliability_after: dict[str, Any]
    metrics: dict[str, MetricValue] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def coverage_gap(self) -> float:
        """Test coverage minus the target 1 - alpha (positive = over-covers)."""
        return self.conformal["coverage"] - (1.0 - self.alpha)


def _task_of(scores: np.ndarray) -> str:
    return "binary" if scores.ndim == 1 or scores.shape[1] <= 2 else "multiclass"


def _thin_curve(rc: dict[str, np.ndarray], points: int) -> dict[str, list[float]]:
    n = len(rc["coverage"])
    keep = np.unique(np.linspace(0, n - 1, min(points, n)).round().astype(int))
    return {k: [round(float(v), 4) for v in rc[k][keep]] for k in ("coverage", "risk")}


def _metric_fns(c: int, n_bins: int) -> dict[str, Any]:
    """Numpy metrics on stacked columns ``[raw probs (C) | scaled probs (C) | set (C)]``."""

    def parts(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return s[:, :c], s[:, c:2 * c], s[:, 2 * c:] > 0.5

    fns: dict[str, Any] = {}
    for name, fn in (("ece", cal.ece), ("mce", cal.mce), ("brier", cal.brier), ("nll", cal.nll)):
        kw = {"n_bins": n_bins} if name in ("ece", "mce") else {}
        fns[f"{name}_before"] = lambda y, s, fn=fn, kw=kw: fn(y, parts(s)[0], **kw)
        fns[f"{name}_after"] = lambda y, s, fn=fn, kw=kw: fn(y, parts(s)[1], **kw)
    fns["coverage"] = lambda y, s: cal.set_coverage(y, parts(s)[2])
    fns["set_size"] = lambda y, s: float(parts(s)[2].sum(axis=1).mean())
    fns["singleton_rate"] = lambda y, s: float((parts(s)[2].sum(axis=1) == 1).mean())
    fns["aurc_before"] = lambda y, s: cal.aurc(y, parts(s)[0])
    fns["aurc_after"] = lambda y, s: cal.aurc(y, parts(s)[1])
    return fns


METRIC_NAMES = (
    "ece_before", "ece_after", "mce_before", "mce_after", "brier_before", "brier_after", "nll_before", "nll_after",
    "coverage", "set_size", "singleton_rate", "aurc_before", "aurc_after",
)


def calibrate(
    val_y: np.ndarray,
    val_scores: np.ndarray,
    test_y: np.ndarray,
    test_scores: np.ndarray,
    cfg: CalibrationConfig | None = None,
) -> CalibrationResult:
    """Fit temperature and conformal threshold on val, evaluate both on test (see module doc)."""
    cfg = cfg or CalibrationConfig()
    val_scores, test_scores = np.asarray(val_scores, dtype=np.float64), np.asarray(test_scores, dtype=np.float64)
    if np.asarray(val_y).ndim == 2 and np.asarray(val_y).shape[1] > 1:
        raise InputError("calibrate: multilabel predictions are not supported (single-label tasks only)")
    task = _task_of(test_scores)
    if _task_of(val_scores) != task or (val_scores.ndim == 2 and val_scores.shape[1:] != test_scores.shape[1:]):
        raise InputError(f"calibrate: val scores {val_scores.shape} and test scores {test_scores.shape} differ in classes")
    vy, vs = prepare(val_y, val_scores, task)
    ty, ts = prepare(test_y, test_scores, task)
    need = cal.min_calibration_size(cfg.alpha)
    if len(vy) < need:
        raise InputError(f"calibrate: {len(vy)} validation samples; conformal sets at alpha={cfg.alpha} need at least {need}")

    temperature = cal.fit_temperature(vy, vs)
    fitted = temperature
    if cfg.keep_if_val_ece_rises and cal.ece(vy, cal.apply_temperature(vs, temperature), cfg.n_bins) > cal.ece(vy, vs, cfg.n_bins):
        temperature = 1.0
    vs_t, ts_t = cal.apply_temperature(vs, temperature), cal.apply_temperature(ts, temperature)
    q = cal.conformal_quantile(vy, vs_t, cfg.alpha)
    if cfg.conformal == "smoothed":
        sets = cal.smoothed_prediction_sets(vy, vs_t, ts_t, cfg.alpha, seed=cfg.seed)
    else:
        sets = cal.prediction_sets(ts_t, q)
    rc_raw, rc_t = cal.risk_coverage(ty, ts), cal.risk_coverage(ty, ts_t)
    curves = {
        "raw": {**_thin_curve(rc_raw, cfg.curve_points), "aurc": cal.aurc(ty, ts)},
        "scaled": {**_thin_curve(rc_t, cfg.curve_points), "aurc": cal.aurc(ty, ts_t)},
    }
    stacked = np.hstack([ts, ts_t, sets.astype(np.float64)])
    fns = _metric_fns(ts.shape[1], cfg.n_bins)
    cis = bootstrap_cis(fns, ty, stacked, n_boot=cfg.n_boot, seed=cfg.seed, stratify=ty)
    metrics = {}
    for name, fn in fns.items():
        v = float(fn(ty, stacked))
        c = cis[name]
        metrics[name] = MetricValue(v, c.low if cfg.n_boot else None, c.high if cfg.n_boot else None)
    return CalibrationResult(
        metrics=metrics, temperature=temperature, alpha=cfg.alpha, conformal_q=q, n_val=int(len(vy)), n_test=int(len(ty)),
        before=cal.calibration_metrics(ty, ts, cfg.n_bins), after=cal.calibration_metrics(ty, ts_t, cfg.n_bins),
        val_before=cal.calibration_metrics(vy, vs, cfg.n_bins), val_after=cal.calibration_metrics(vy, vs_t, cfg.n_bins),
        conformal=_conformal_with_ci(ty, sets, ts_t, len(vy), cfg.alpha, cfg.conformal == "smoothed"), risk_coverage=curves,
        reliability_before=reliability_bins(ty, ts, cfg.n_bins, task=task),
        reliability_after=reliability_bins(ty, ts_t, cfg.n_bins, task=task),
        extra={"set_size_hist": np.bincount(sets.sum(axis=1), minlength=ts.shape[1] + 1).tolist(),
               "nll_temperature": fitted, "kept_t1_on_val_ece": temperature != fitted},
    )


def _conformal_with_ci(ty: np.ndarray, sets: np.ndarray, probs: np.ndarray, n_cal: int, alpha: float,
                       smoothed: bool = False) -> dict[str, float]:
    """Conformal metrics plus the coverage's exact binomial 95% CI on the test set and the
    Beta spread (sd) that ``n_cal`` calibration samples allow (see ``cal.conformal_coverage_law``)."""
    out = cal.conformal_metrics(ty, sets, probs)
    covered = int(sets[np.arange(len(ty)), np.asarray(ty).astype(np.int64)].sum())
    out["coverage_ci_low"], out["coverage_ci_high"] = cal.coverage_ci(covered, len(ty))
    law = cal.conformal_coverage_law(n_cal, alpha, smoothed=smoothed)
    out["coverage_expected"], out["coverage_calibration_sd"] = law["mean"], law["sd"]
    return out


def summary_row(result: CalibrationResult) -> dict[str, float]:
    """Flat numbers for tables: temperature, ECE/MCE/Brier before -> after, coverage, set size."""
    row = {"temperature": result.temperature}
    for k in ("ece", "mce", "brier", "nll"):
        row[f"{k}_before"], row[f"{k}_after"] = result.before[k], result.after[k]
    row.update({f"conformal_{k}": v for k, v in result.conformal.items()})
    row["target_coverage"] = 1.0 - result.alpha
    row["aurc_before"], row["aurc_after"] = result.risk_coverage["raw"]["aurc"], result.risk_coverage["scaled"]["aurc"]
    return {k: (float(v) if v is not None and math.isfinite(float(v)) else float("nan")) for k, v in row.items()}
