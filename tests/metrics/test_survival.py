"""Survival metrics equal scikit-survival's on the same predictions; bootstrap CIs are seeded."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sksurv import metrics as skm
from sksurv.nonparametric import kaplan_meier_estimator
from sksurv.util import Surv

from medfm.errors import InputError
from medfm.metrics.survival import (
    FoldPredictions,
    calibration_error,
    calibration_table,
    evaluation_times,
    fold_metrics,
    harrell_c,
    integrated_brier,
    km_at,
    survival_metrics,
    td_auc,
    uno_c,
)


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exponential survival with a risk score carrying signal; survival curves from the truth."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t_event = rng.exponential(np.exp(-x))
    t_cens = rng.exponential(1.5, n)
    time = np.minimum(t_event, t_cens).round(3) + 1e-3
    event = t_event <= t_cens
    risk = x + rng.normal(scale=0.5, size=n)
    return event, time, risk, x


@pytest.fixture(scope="module")
def fold() -> FoldPredictions:
    ev_tr, t_tr, _, _ = _data(300, 1)
    ev, t, risk, _ = _data(120, 2)
    times = evaluation_times(t_tr)["times"]
    surv = np.exp(-np.exp(risk)[:, None] * times[None, :])
    return FoldPredictions(ev_tr, t_tr, ev, t, risk, surv, times)


def test_harrell_c_equals_sksurv(fold: FoldPredictions) -> None:
    ref = skm.concordance_index_censored(fold.event, fold.time, fold.risk)[0]
    assert harrell_c(fold.event, fold.time, fold.risk) == ref
    assert 0.6 < ref < 1.0


def test_uno_c_equals_sksurv(fold: FoldPredictions) -> None:
    tau = evaluation_times(fold.train_time)["tau"]
    y_tr, y_te = Surv.from_arrays(fold.train_event, fold.train_time), Surv.from_arrays(fold.event, fold.time)
    ref = skm.concordance_index_ipcw(y_tr, y_te, fold.risk, tau=tau)[0]
    assert uno_c(fold.train_event, fold.train_time, fold.event, fold.time, fold.risk, tau) == ref


def test_td_auc_equals_sksurv(fold: FoldPredictions) -> None:
    h = evaluation_times(fold.train_time)["horizons"]
    y_tr, y_te = Surv.from_arrays(fold.train_event, fold.train_time), Surv.from_arrays(fold.event, fold.time)
    ref_auc, ref_mean = skm.cumulative_dynamic_auc(y_tr, y_te, fold.risk, h)
    auc, mean_auc = td_auc(fold.train_event, fold.train_time, fold.event, fold.time, fold.risk, h)
    np.testing.assert_array_equal(auc, ref_auc)
    assert mean_auc == ref_mean


def test_integrated_brier_equals_sksurv(fold: FoldPredictions) -> None:
    ev = evaluation_times(fold.train_time)
    cols = np.searchsorted(fold.times, ev["grid"])
    y_tr, y_te = Surv.from_arrays(fold.train_event, fold.train_time), Surv.from_arrays(fold.event, fold.time)
    ref = skm.integrated_brier_score(y_tr, y_te, fold.surv[:, cols], ev["grid"])
    assert (
        integrated_brier(fold.train_event, fold.train_time, fold.event, fold.time, fold.surv[:, cols], ev["grid"])
        == ref
    )
    assert 0.0 < ref < 0.25


def test_km_at_equals_sksurv_kaplan_meier() -> None:
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(2, 40))
        t = rng.integers(0, 15, n).astype(float)
        e = rng.random(n) < 0.6
        e[0] = True
        h = float(rng.uniform(-1, 16))
        x, s = kaplan_meier_estimator(e, t)
        k = np.searchsorted(x, h, side="right") - 1
        assert km_at(e, t, h) == pytest.approx(1.0 if k < 0 else s[k], abs=1e-12)


def test_calibration_table_uses_km_per_risk_decile(fold: FoldPredictions) -> None:
    h = 0.5
    p = 1.0 - np.exp(-np.exp(fold.risk) * h)
    tab = calibration_table(fold.event, fold.time, p, h, n_bins=10)
    assert len(tab["n"]) == 10 and tab["n"].sum() == len(p)
    order = np.argsort(p, kind="stable")
    g = np.array_split(order, 10)[3]
    x, s = kaplan_meier_estimator(fold.event[g], fold.time[g])
    k = np.searchsorted(x, h, side="right") - 1
    assert tab["observed"][3] == pytest.approx(1.0 - (1.0 if k < 0 else s[k]))
    assert tab["predicted"][3] == pytest.approx(p[g].mean())
    err = calibration_error(fold.event, fold.time, p, h)
    assert err == pytest.approx(np.sum(tab["n"] * np.abs(tab["predicted"] - tab["observed"])) / len(p))
    # predicting an event for everybody by the horizon is clearly worse calibrated
    assert calibration_error(fold.event, fold.time, np.ones_like(p), h) > err


def test_fold_metrics_point_values_match_direct_calls(fold: FoldPredictions) -> None:
    m = fold_metrics(fold)
    assert m["c_harrell"] == harrell_c(fold.event, fold.time, fold.risk)
    assert set(m) >= {
        "c_harrell",
        "c_uno",
        "td_auc_mean",
        "td_auc@q25",
        "td_auc@q50",
        "td_auc@q75",
        "ibs",
        "calibration_error@q50",
    }
    assert all(math.isfinite(v) for v in m.values())


def test_bootstrap_cis_are_seeded_and_bracket_the_estimate(fold: FoldPredictions) -> None:
    a = survival_metrics([fold], n_boot=40, seed=3)
    b = survival_metrics([fold], n_boot=40, seed=3)
    c = survival_metrics([fold], n_boot=40, seed=4)
    assert a == b
    assert a["c_harrell"] != c["c_harrell"]
    for key in ("c_harrell", "c_uno", "td_auc_mean", "ibs"):
        v = a[key]
        assert v.ci_low is not None and v.ci_low <= v.value <= v.ci_high, key


def test_cv_metrics_average_the_folds(fold: FoldPredictions) -> None:
    ev_tr, t_tr, _, _ = _data(300, 5)
    ev, t, risk, _ = _data(100, 6)
    f2 = FoldPredictions(ev_tr, t_tr, ev, t, risk)
    out = survival_metrics([fold, f2], n_boot=0)
    assert out["c_harrell"].value == pytest.approx(
        (harrell_c(fold.event, fold.time, fold.risk) + harrell_c(ev, t, risk)) / 2
    )
    assert out["c_harrell"].ci_low is None  # no bootstrap asked
    assert "ibs" not in out  # the second fold has no survival functions


def test_repeated_cv_bootstrap_resamples_rows_not_folds(fold: FoldPredictions) -> None:
    """A row scored in two repeats is drawn for both at once: repeating the same fold must not
    narrow the CI, as independent per-fold resampling would."""
    rows = np.arange(len(fold.time))
    named = FoldPredictions(fold.train_event, fold.train_time, fold.event, fold.time, fold.risk, fold.surv, fold.times, rows)
    once = survival_metrics([named], n_boot=40, seed=3)
    twice = survival_metrics([named, named], n_boot=40, seed=3)
    for key in ("c_harrell", "c_uno", "ibs"):
        assert twice[key].value == pytest.approx(once[key].value)
        assert twice[key].ci_low == pytest.approx(once[key].ci_low) and twice[key].ci_high == pytest.approx(once[key].ci_high)
    # folds without row ids (or without shared rows) keep the per-fold resampling
    assert survival_metrics([fold], n_boot=40, seed=3) == once
    # the same row cannot be an event in one repeat and censored in another
    flipped = FoldPredictions(fold.train_event, fold.train_time, ~fold.event, fold.time, fold.risk, rows=rows)
    with pytest.raises(InputError, match="different event status"):
        survival_metrics([named, flipped], n_boot=5)
    with pytest.raises(InputError, match="rows must be"):
        FoldPredictions(fold.train_event, fold.train_time, fold.event, fold.time, fold.risk, rows=rows[:-1])


def test_random_risk_scores_about_one_half() -> None:
    ev_tr, t_tr, _, _ = _data(400, 7)
    ev, t, _, _ = _data(400, 8)
    rnd = np.random.default_rng(0).normal(size=400)
    out = survival_metrics([FoldPredictions(ev_tr, t_tr, ev, t, rnd)], n_boot=40, seed=0)
    assert out["c_harrell"].ci_low < 0.5 < out["c_harrell"].ci_high


def test_bad_predictions_are_refused(fold: FoldPredictions) -> None:
    with pytest.raises(InputError, match="NaN"):
        FoldPredictions(fold.train_event, fold.train_time, fold.event, fold.time, np.full(len(fold.time), np.nan))
    with pytest.raises(InputError, match="surv must be"):
        FoldPredictions(
            fold.train_event, fold.train_time, fold.event, fold.time, fold.risk, fold.surv[:, :2], fold.times
        )


def test_ibs_grid_is_clipped_to_the_test_follow_up(fold: FoldPredictions) -> None:
    """A small test fold whose earliest time lies after the grid start still gets an IBS."""
    ev = evaluation_times(fold.train_time)
    keep = fold.time > ev["grid"][2]
    f = FoldPredictions(
        fold.train_event,
        fold.train_time,
        fold.event[keep],
        fold.time[keep],
        fold.risk[keep],
        fold.surv[keep],
        fold.times,
    )
    grid = ev["grid"][(ev["grid"] >= f.time.min()) & (ev["grid"] < f.time.max())]
    ref_e = np.concatenate([f.train_event, f.event])
    ref_t = np.concatenate([f.train_time, f.time])
    expected = integrated_brier(ref_e, ref_t, f.event, f.time, f.surv[:, np.searchsorted(f.times, grid)], grid)
    assert fold_metrics(f)["ibs"] == expected
    assert len(grid) < len(ev["grid"])
