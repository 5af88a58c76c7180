"""calibrate(): fits on val only, reports before/after and conformal abstention on test."""

from __future__ import annotations

import numpy as np
import pytest

from medfm.errors import ConfigError, InputError
from medfm.metrics.calibration import HIGHER_IS_BETTER
from medfm.tasks.trust.calibrate import METRIC_NAMES, CalibrationConfig, calibrate, summary_row


def _overconfident(n: int, seed: int, c: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, size=(n, c))
    pt = np.exp(z / 2.5) / np.exp(z / 2.5).sum(axis=1, keepdims=True)
    y = (rng.random(n)[:, None] > np.cumsum(pt, axis=1)).sum(axis=1)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return y, p


def test_calibrate_improves_ece_and_covers() -> None:
    vy, vp = _overconfident(600, 0)
    ty, tp = _overconfident(3000, 1)
    res = calibrate(vy, vp, ty, tp, CalibrationConfig(alpha=0.1, n_boot=50))
    assert res.temperature > 1.5
    assert res.after["ece"] < res.before["ece"]
    assert res.after["nll"] < res.before["nll"]
    assert abs(res.coverage_gap) < 0.03
    assert set(res.metrics) == set(METRIC_NAMES)
    assert set(METRIC_NAMES) <= set(HIGHER_IS_BETTER)
    m = res.metrics["brier_after"]  # (ECE is biased upwards under resampling: its CI may sit above it)
    assert m.ci_low <= m.value <= m.ci_high
    assert res.metrics["ece_after"].value == pytest.approx(res.after["ece"])
    assert res.risk_coverage["scaled"]["coverage"][-1] == 1.0
    row = summary_row(res)
    assert row["target_coverage"] == pytest.approx(0.9)
    # the test split never influences what is fitted
    res2 = calibrate(vy, vp, ty[::-1], tp[::-1], CalibrationConfig(alpha=0.1, n_boot=0))
    assert res2.temperature == res.temperature and res2.conformal_q == res.conformal_q


def test_calibrate_bad_inputs() -> None:
    vy, vp = _overconfident(5, 0)
    ty, tp = _overconfident(50, 1)
    with pytest.raises(InputError, match="need at least 9"):
        calibrate(vy, vp, ty, tp, CalibrationConfig(alpha=0.1, n_boot=0))
    _, tp3 = _overconfident(50, 1, c=3)
    with pytest.raises(InputError, match="differ in classes"):
        calibrate(*_overconfident(50, 0), ty, tp3)
    with pytest.raises(ConfigError):
        CalibrationConfig(alpha=1.5)


def test_temperature_never_raises_val_ece() -> None:
    """The NLL-optimal T is dropped (T = 1) when it would raise the validation ECE."""
    kept = 0
    for seed in range(12):
        vy, vp = _overconfident(40, seed)
        ty, tp = _overconfident(40, seed + 100)
        res = calibrate(vy, vp, ty, tp, CalibrationConfig(n_boot=0))
        assert res.val_after["ece"] <= res.val_before["ece"] + 1e-12
        kept += res.extra["kept_t1_on_val_ece"]
        off = calibrate(vy, vp, ty, tp, CalibrationConfig(n_boot=0, keep_if_val_ece_rises=False))
        assert off.temperature == pytest.approx(res.extra["nll_temperature"])
    assert kept < 12  # mostly the fitted temperature is kept


def test_calibrate_smoothed_sets_and_their_law() -> None:
    """conformal='smoothed' fits nothing new (same T and q), reports the smoothed law (mean
    exactly 1 - alpha) and covers near the target on multiclass scores; a bad name is refused."""
    vy, vp = _overconfident(300, 0, c=3)
    ty, tp = _overconfident(3000, 1, c=3)
    lac = calibrate(vy, vp, ty, tp, CalibrationConfig(alpha=0.1, n_boot=0))
    sm = calibrate(vy, vp, ty, tp, CalibrationConfig(alpha=0.1, n_boot=0, conformal="smoothed"))
    assert sm.temperature == lac.temperature and sm.conformal_q == lac.conformal_q
    assert sm.conformal["coverage_expected"] == pytest.approx(0.9)
    assert lac.conformal["coverage_expected"] > 0.9
    assert abs(sm.coverage_gap) < 0.04 and sm.conformal["set_size"] <= lac.conformal["set_size"] + 1e-9
    with pytest.raises(ConfigError, match="conformal must be one of lac, smoothed"):
        CalibrationConfig(conformal="aps")
