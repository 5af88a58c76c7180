"""Bootstrap CIs: reproducible from the documented resampling scheme, stratified, skip-counting."""

from __future__ import annotations

import numpy as np
import pytest

from medfm.errors import ConfigError, InputError
from medfm.metrics.bootstrap import bootstrap_ci, bootstrap_cis, resample_indices


def _direct(metric, y, s, n_boot, seed, stratify, ci=0.95):
    """The scheme written out in plain numpy, independently of the module."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(len(y))] if stratify is None else [np.flatnonzero(stratify == v) for v in np.unique(stratify)]
    vals = []
    for _ in range(n_boot):
        idx = np.concatenate([g[rng.integers(0, len(g), size=len(g))] for g in groups])
        vals.append(metric(y[idx], s[idx]))
    a = (1 - ci) / 2
    return np.percentile(vals, [100 * a, 100 * (1 - a)])


def _mean_correct(y: np.ndarray, s: np.ndarray) -> float:
    return float(np.mean((s > 0.5) == y))


@pytest.mark.parametrize("stratified", [False, True])
def test_matches_direct_numpy_bootstrap(stratified: bool) -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(60) < 0.3).astype(int)
    s = rng.random(60)
    strat = y if stratified else None
    got = bootstrap_ci(_mean_correct, y, s, n_boot=300, seed=7, stratify=strat, ci=0.9)
    lo, hi = _direct(_mean_correct, y, s, 300, 7, strat, ci=0.9)
    assert got.low == pytest.approx(lo, abs=1e-12) and got.high == pytest.approx(hi, abs=1e-12)
    assert got.n_valid == 300 and got.n_skipped == 0


def test_seeded_and_seed_sensitive() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 80)
    s = rng.random(80)
    a = bootstrap_ci(_mean_correct, y, s, n_boot=200, seed=3, stratify=y)
    b = bootstrap_ci(_mean_correct, y, s, n_boot=200, seed=3, stratify=y)
    c = bootstrap_ci(_mean_correct, y, s, n_boot=200, seed=4, stratify=y)
    assert a == b
    assert (a.low, a.high) != (c.low, c.high)


def test_stratified_resamples_keep_class_counts() -> None:
    y = np.array([0] * 5 + [1] * 20 + [2] * 3)
    for idx in resample_indices(len(y), 50, seed=0, stratify=y):
        assert np.bincount(y[idx], minlength=3).tolist() == [5, 20, 3]


def test_undefined_resamples_are_skipped_and_counted() -> None:
    y = np.array([0] * 3 + [1] * 3)
    s = np.linspace(0, 1, 6)

    def needs_both(yb: np.ndarray, sb: np.ndarray) -> float:
        if len(np.unique(yb)) < 2:
            raise ValueError("one class")
        return float(sb[yb == 1].mean() - sb[yb == 0].mean())

    res = bootstrap_ci(needs_both, y, s, n_boot=400, seed=0)  # unstratified: some resamples lack a class
    assert res.n_skipped > 0 and res.n_valid + res.n_skipped == 400
    assert res.low is not None and res.low <= res.high
    always_nan = bootstrap_ci(lambda a, b: float("nan"), y, s, n_boot=50, seed=0)
    assert always_nan.low is None and always_nan.n_skipped == 50


def test_several_metrics_share_resamples() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 40)
    s = rng.random(40)
    both = bootstrap_cis({"a": _mean_correct, "b": lambda yy, ss: float(ss.mean())}, y, s, n_boot=100, seed=1, stratify=y)
    alone = bootstrap_ci(lambda yy, ss: float(ss.mean()), y, s, n_boot=100, seed=1, stratify=y)
    assert (both["b"].low, both["b"].high) == (alone.low, alone.high)


def test_no_ci_without_resamples_and_bad_arguments() -> None:
    y = np.array([0, 1, 0, 1])
    s = np.array([0.2, 0.7, 0.4, 0.9])
    assert bootstrap_ci(_mean_correct, y, s, n_boot=0).low is None
    with pytest.raises(ConfigError, match="ci must be"):
        bootstrap_ci(_mean_correct, y, s, ci=1.5)
    with pytest.raises(InputError, match="no samples"):
        bootstrap_ci(_mean_correct, y[:0], s[:0])
    with pytest.raises(InputError, match="score rows"):
        bootstrap_ci(_mean_correct, y, s[:3])
