"""Coverage CIs and the finite-sample law of split-conformal coverage, checked by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medfm.errors import InputError
from medfm.metrics import calibration as cal


def test_coverage_ci_is_exact_binomial() -> None:
    from scipy.stats import beta

    lo, hi = cal.coverage_ci(140, 156)
    # Clopper-Pearson from its Beta quantiles
    assert lo == pytest.approx(beta.ppf(0.025, 140, 17), rel=1e-6)
    assert hi == pytest.approx(beta.ppf(0.975, 141, 16), rel=1e-6)
    assert cal.coverage_ci(156, 156)[1] == 1.0 and cal.coverage_ci(0, 10)[0] == 0.0
    with pytest.raises(InputError):
        cal.coverage_ci(11, 10)


def test_conformal_coverage_law_matches_simulation() -> None:
    """Exchangeable scores: the coverage given one calibration set follows Beta(k, n + 1 - k)."""
    n, alpha = 78, 0.1
    law = cal.conformal_coverage_law(n, alpha)
    assert law["k"] == math.ceil(79 * 0.9)
    assert 1 - alpha <= law["mean"] <= 1 - alpha + 1 / (n + 1)
    rng = np.random.default_rng(0)
    # scores uniform: the threshold is the k-th smallest calibration score; coverage = P(score <= q) = q
    cover = [np.sort(rng.random(n))[law["k"] - 1] for _ in range(4000)]
    assert np.mean(cover) == pytest.approx(law["mean"], abs=0.003)
    assert np.std(cover) == pytest.approx(law["sd"], rel=0.06)
    assert 0.03 < law["sd"] < 0.04  # the ~3.4 points that 78 val samples leave
    with pytest.raises(InputError):
        cal.conformal_coverage_law(5, 0.1)


def test_smoothed_law_matches_simulation() -> None:
    """Continuous scores: smoothed sets cover 1 - alpha on average (LAC: up to 1/(n+1) more),
    with the spread the law states, and a uniform score u is covered exactly when u beats the
    interpolated order statistic."""
    n, alpha = 78, 0.1
    law = cal.conformal_coverage_law(n, alpha, smoothed=True)
    assert law["mean"] == pytest.approx(0.9)
    lac = cal.conformal_coverage_law(n, alpha)
    assert lac["mean"] > law["mean"] + 0.01 and 0.03 < law["sd"] < 0.04
    rng = np.random.default_rng(1)
    cover = []
    for _ in range(3000):
        ycal = np.ones(n, dtype=int)
        pcal = rng.random(n)  # p_true: score 1 - p uniform
        ptest = rng.random(400)
        sets = cal.smoothed_prediction_sets(ycal, pcal, ptest, alpha, seed=int(rng.integers(1 << 30)))
        cover.append(sets[:, 1].mean())
    assert np.mean(cover) == pytest.approx(0.9, abs=0.003)
    # the per-calibration-set spread: the simulated sd also holds 400-sample test noise (~1.5 points)
    assert np.std(cover) == pytest.approx(math.sqrt(law["sd"] ** 2 + 0.9 * 0.1 / 400), rel=0.08)


def test_smoothed_sets_cover_exactly_when_scores_tie() -> None:
    """kNN-like probabilities (multiples of 1/5) tie heavily: LAC over-covers, smoothed does not."""
    rng = np.random.default_rng(2)
    n, alpha, reps = 60, 0.1, 2000
    lac, smooth = [], []
    for r in range(reps):
        y = rng.integers(0, 2, size=n + 200)
        votes = rng.binomial(5, np.where(y == 1, 0.7, 0.3)) / 5.0  # p(class 1)
        probs = np.stack([1 - votes, votes], axis=1)
        yc, pc, yt, pt = y[:n], probs[:n], y[n:], probs[n:]
        q = cal.conformal_quantile(yc, pc, alpha)
        lac.append(cal.set_coverage(yt, cal.prediction_sets(pt, q)))
        smooth.append(cal.set_coverage(yt, cal.smoothed_prediction_sets(yc, pc, pt, alpha, seed=r)))
    assert np.mean(lac) > 0.93  # ties push the deterministic sets well above the target
    assert np.mean(smooth) == pytest.approx(1 - alpha, abs=0.004)
    a = cal.smoothed_prediction_sets(yc, pc, pt, alpha, seed=7)
    assert np.array_equal(a, cal.smoothed_prediction_sets(yc, pc, pt, alpha, seed=7))  # seeded
    assert np.array_equal(a, cal.smoothed_prediction_sets(yc, pc[:, 1], pt[:, 1], alpha, seed=7))  # (N,) binary form
