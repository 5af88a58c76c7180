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
