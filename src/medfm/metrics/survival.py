"""Survival metrics: pure functions wrapping scikit-survival, plus fold-aware bootstrap CIs.

Conventions: ``event`` (N,) bool (True = event observed), ``time`` (N,) float >= 0, ``risk`` (N,)
float where higher = earlier event expected, ``surv`` (N, T) predicted survival probabilities
S(t | x) at the increasing ``times`` (T,). Metrics that weight by the inverse probability of
censoring (Uno's C, time-dependent AUC, Brier) estimate the censoring distribution from the
reference rows passed as ``train_event``/``train_time``, as scikit-survival does;
``survival_metrics`` passes a fold's training and test outcomes together (see ``_fold_metrics``).

Bootstrap (``survival_metrics``): every resample draws, within each fold and within each event
status, as many test rows as there are (``medfm.metrics.bootstrap.resample_indices`` with strata
fold x event), recomputes every metric per fold and averages over folds. In repeated CV a row is
a test row once per repeat, so the resample is drawn over the dataset's rows instead (within each
event status), and every fold scores its test rows as often as they were drawn: the repeats of a
row move together, as they do in the data. Resamples where a metric
is undefined (e.g. a horizon beyond the resampled follow-up) are skipped; a CI needs at least
half of the resamples to be valid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from medfm._optional import optional_import
from medfm.errors import InputError
from medfm.metrics.bootstrap import MIN_VALID_SHARE, resample_indices
from medfm.results import MetricValue

# metric name -> True when higher is better
HIGHER_IS_BETTER: dict[str, bool] = {
    "c_harrell": True,
    "c_uno": True,
    "td_auc_mean": True,
    "td_auc@q25": True,
    "td_auc@q50": True,
    "td_auc@q75": True,
    "ibs": False,
    "calibration_error@q50": False,
}
HORIZON_QUANTILES = (0.25, 0.5, 0.75)  # time-dependent AUC horizons: quantiles of training times
GRID_QUANTILES = (0.1, 0.8)  # integrated Brier score range: quantiles of training times
GRID_SIZE = 15


def _y(event: np.ndarray, time: np.ndarray) -> np.ndarray:
    y = np.empty(len(time), dtype=[("event", "?"), ("time", "<f8")])
    y["event"] = np.asarray(event, dtype=bool)
    y["time"] = np.asarray(time, dtype=np.float64)
    return y


def harrell_c(event: np.ndarray, time: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's concordance index (ties in risk count 1/2); ``sksurv.metrics.concordance_index_censored``."""
    m = optional_import("sksurv.metrics")
    return float(
        m.concordance_index_censored(np.asarray(event, bool), np.asarray(time, float), np.asarray(risk, float))[0]
    )


def uno_c(
    train_event: np.ndarray, train_time: np.ndarray, event: np.ndarray, time: np.ndarray, risk: np.ndarray, tau: float
) -> float:
    """Uno's IPCW concordance truncated at ``tau``; ``sksurv.metrics.concordance_index_ipcw``."""
    m = optional_import("sksurv.metrics")
    return float(
        m.concordance_index_ipcw(_y(train_event, train_time), _y(event, time), np.asarray(risk, float), tau=tau)[0]
    )


def td_auc(
    train_event: np.ndarray,
    train_time: np.ndarray,
    event: np.ndarray,
    time: np.ndarray,
    risk: np.ndarray,
    times: np.ndarray,
) -> tuple[np.ndarray, float]:
    """Cumulative/dynamic AUC at ``times`` and its mean weighted by the KM estimate;
    ``sksurv.metrics.cumulative_dynamic_auc`` (``risk`` (N,) or (N, T))."""
    m = optional_import("sksurv.metrics")
    auc, mean_auc = m.cumulative_dynamic_auc(
        _y(train_event, train_time), _y(event, time), np.asarray(risk, float), np.asarray(times, float)
    )
    return np.asarray(auc, dtype=float), float(mean_auc)


def integrated_brier(
    train_event: np.ndarray,
    train_time: np.ndarray,
    event: np.ndarray,
    time: np.ndarray,
    surv: np.ndarray,
    times: np.ndarray,
) -> float:
    """Integrated Brier score over ``times`` (trapezoid / range); ``sksurv.metrics.integrated_brier_score``.

    ``surv`` (N, T): predicted S(t | x) at ``times``. Lower is better (0.25 = uninformative at S=0.5).
    """
    m = optional_import("sksurv.metrics")
    return float(
        m.integrated_brier_score(
            _y(train_event, train_time), _y(event, time), np.asarray(surv, float), np.asarray(times, float)
        )
    )


def km_at(event: np.ndarray, time: np.ndarray, horizon: float) -> float:
    """Kaplan-Meier survival estimate at ``horizon`` (flat after the last observed time).

    Plain numpy (it runs inside the bootstrap loop); tested equal to
    ``sksurv.nonparametric.kaplan_meier_estimator``.
    """
    event = np.asarray(event, bool)
    time = np.asarray(time, float)
    t_ev = np.unique(time[event & (time <= horizon)])
    if len(t_ev) == 0:
        return 1.0
    st = np.sort(time)
    at_risk = len(time) - np.searchsorted(st, t_ev, side="left")
    deaths = np.searchsorted(np.sort(time[event]), t_ev, side="right") - np.searchsorted(
        np.sort(time[event]), t_ev, side="left"
    )
    return float(np.prod(1.0 - deaths / at_risk))


def calibration_table(
    event: np.ndarray, time: np.ndarray, event_prob: np.ndarray, horizon: float, n_bins: int = 10
) -> dict[str, np.ndarray]:
    """Predicted vs observed event probability by ``t <= horizon`` in bins of predicted risk.

    Rows are sorted by ``event_prob`` (predicted P(T <= horizon)) and cut into ``n_bins``
    near-equal groups (deciles by default); observed = 1 - Kaplan-Meier S(horizon) in each group.
    Returns ``predicted``, ``observed``, ``n`` arrays of length ``n_bins`` (fewer when N is small).
    """
    event_prob = np.asarray(event_prob, float)
    order = np.argsort(event_prob, kind="stable")
    groups = [g for g in np.array_split(order, min(n_bins, len(order))) if len(g)]
    pred = np.array([event_prob[g].mean() for g in groups])
    obs = np.array([1.0 - km_at(np.asarray(event)[g], np.asarray(time)[g], horizon) for g in groups])
    return {"predicted": pred, "observed": obs, "n": np.array([len(g) for g in groups])}


def calibration_error(
    event: np.ndarray, time: np.ndarray, event_prob: np.ndarray, horizon: float, n_bins: int = 10
) -> float:
    """Size-weighted mean |predicted - KM observed| event probability at ``horizon`` over risk bins."""
    tab = calibration_table(event, time, event_prob, horizon, n_bins)
    return float(np.sum(tab["n"] * np.abs(tab["predicted"] - tab["observed"])) / np.sum(tab["n"]))


def evaluation_times(train_time: np.ndarray) -> dict[str, np.ndarray | float]:
    """Times chosen from the training follow-up only: ``horizons`` (quantiles 25/50/75 %),
    ``tau`` for Uno's C and the integrated-Brier ``grid`` (15 points between quantiles 10-80 %;
    ``survival_metrics`` drops grid points outside a test fold's follow-up range),
    and ``times`` = sorted union of grid and horizons (where models predict S(t | x))."""
    train_time = np.asarray(train_time, float)
    horizons = np.quantile(train_time, HORIZON_QUANTILES)
    grid = np.quantile(train_time, np.linspace(GRID_QUANTILES[0], GRID_QUANTILES[1], GRID_SIZE))
    return {
        "horizons": horizons,
        "grid": grid,
        "tau": float(grid[-1]),
        "times": np.unique(np.concatenate([grid, horizons])),
    }


@dataclass
class FoldPredictions:
    """One evaluation unit (a CV fold or a test split): training outcome (for IPCW weights),
    test outcome, predicted risk (N,), and optionally survival probabilities ``surv`` (N, T) at
    ``times`` (T,) (from ``evaluation_times(train_time)["times"]``). ``rows`` (N,): the dataset
    row of each test row, needed to bootstrap repeated CV (where folds share rows)."""

    train_event: np.ndarray
    train_time: np.ndarray
    event: np.ndarray
    time: np.ndarray
    risk: np.ndarray
    surv: np.ndarray | None = None
    times: np.ndarray | None = None
    rows: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.time)
        if self.rows is not None and (len(self.rows) != n or np.any(np.asarray(self.rows) < 0)):
            raise InputError(f"fold predictions: rows must be {n} non-negative row ids, got {len(self.rows)}")
        if len(self.event) != n or len(self.risk) != n:
            raise InputError(f"fold predictions: {n} times, {len(self.event)} events, {len(self.risk)} risks")
        if not np.all(np.isfinite(self.risk)):
            raise InputError("fold predictions: risk scores contain NaN or infinity (the model diverged)")
        if self.surv is not None and (self.times is None or self.surv.shape != (n, len(self.times))):
            raise InputError(
                f"fold predictions: surv must be (N, T) = ({n}, {0 if self.times is None else len(self.times)})"
            )


def _fold_metrics(f: FoldPredictions, idx: np.ndarray | None = None) -> dict[str, float]:
    """All metrics of one fold on rows ``idx`` (all rows when None); NaN where undefined.

    Horizons come from the training times; the censoring distribution for the IPCW weights is
    estimated from the fold's training and test outcomes together (as scikit-survival's user
    guide does), so test follow-up beyond the last training time keeps the metrics defined.
    """
    ev = evaluation_times(f.train_time)
    sel = slice(None) if idx is None else idx
    event, time, risk = f.event[sel], f.time[sel], f.risk[sel]
    ref_event = np.concatenate([np.asarray(f.train_event, bool), np.asarray(f.event, bool)])
    ref_time = np.concatenate([np.asarray(f.train_time, float), np.asarray(f.time, float)])
    out: dict[str, float] = {}

    def put(name: str, fn: Callable[[], float]) -> None:
        try:
            v = fn()
        except (ValueError, ZeroDivisionError, IndexError):
            v = math.nan
        out[name] = v if v is not None and math.isfinite(v) else math.nan

    put("c_harrell", lambda: harrell_c(event, time, risk))
    put("c_uno", lambda: uno_c(ref_event, ref_time, event, time, risk, ev["tau"]))
    try:
        aucs, mean_auc = td_auc(ref_event, ref_time, event, time, risk, ev["horizons"])
    except ValueError:
        aucs, mean_auc = np.full(len(HORIZON_QUANTILES), np.nan), math.nan
    out["td_auc_mean"] = mean_auc
    for q, a in zip(HORIZON_QUANTILES, aucs, strict=True):
        out[f"td_auc@q{int(round(q * 100))}"] = float(a)
    if f.surv is not None and f.times is not None:
        surv = f.surv[sel]
        # the Brier grid must lie inside this (resampled) test follow-up: clip, keep >= 2 points
        grid = ev["grid"][(ev["grid"] >= time.min()) & (ev["grid"] < time.max())]
        cols = np.searchsorted(f.times, grid)
        if len(grid) >= 2:
            put("ibs", lambda: integrated_brier(ref_event, ref_time, event, time, surv[:, cols], grid))
        else:
            out["ibs"] = math.nan
        h = float(ev["horizons"][1])
        col_h = int(np.searchsorted(f.times, h))
        put("calibration_error@q50", lambda: calibration_error(event, time, 1.0 - surv[:, col_h], h))
    return out


def fold_metrics(f: FoldPredictions) -> dict[str, float]:
    """Point estimates of every metric on one fold (NaN where undefined)."""
    return _fold_metrics(f)


def _shared_rows(folds: Sequence[FoldPredictions]) -> bool:
    """True when every fold names its rows and some row is a test row of several folds (repeated CV)."""
    if any(f.rows is None for f in folds):
        return False
    rows = np.concatenate([np.asarray(f.rows) for f in folds])
    return len(np.unique(rows)) < len(rows)


def _fold_bootstrap(folds: Sequence[FoldPredictions], n_boot: int, seed: int) -> Iterator[list[dict[str, float]]]:
    """Per resample, every fold's metrics on its test rows drawn with replacement (within fold x event)."""
    sizes = [len(f.time) for f in folds]
    fold_id = np.repeat(np.arange(len(folds)), sizes)
    events = np.concatenate([np.asarray(f.event, bool) for f in folds])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for idx in resample_indices(len(fold_id), n_boot, seed, stratify=fold_id * 2 + events):
        yield [_fold_metrics(f, idx[fold_id[idx] == k] - offsets[k]) for k, f in enumerate(folds)]


def _row_bootstrap(folds: Sequence[FoldPredictions], n_boot: int, seed: int) -> Iterator[list[dict[str, float]]]:
    """Per resample, every fold's metrics on its test rows, each taken as often as the row was drawn
    (rows drawn with replacement from the union of test rows, within each event status)."""
    rows = np.concatenate([np.asarray(f.rows) for f in folds]).astype(np.int64)
    events = np.concatenate([np.asarray(f.event, bool) for f in folds]).astype(np.int64)
    order = np.argsort(rows, kind="stable")
    starts = np.flatnonzero(np.r_[True, rows[order][1:] != rows[order][:-1]])
    if np.any(np.maximum.reduceat(events[order], starts) != np.minimum.reduceat(events[order], starts)):
        raise InputError("survival metrics: a row has a different event status in different folds")
    uniq, first = np.unique(rows, return_index=True)
    for draw in resample_indices(len(uniq), n_boot, seed, stratify=events[first]):
        counts = np.bincount(uniq[draw], minlength=int(uniq.max()) + 1)
        yield [_fold_metrics(f, np.repeat(np.arange(len(f.time)), counts[np.asarray(f.rows)])) for f in folds]


def survival_metrics(
    folds: Sequence[FoldPredictions], n_boot: int = 1000, seed: int = 0, ci: float = 0.95
) -> dict[str, MetricValue]:
    """Metrics averaged over ``folds`` with percentile bootstrap CIs (see module docstring).

    Keys: ``c_harrell``, ``c_uno``, ``td_auc_mean``, ``td_auc@q25/q50/q75`` and, when survival
    functions are given, ``ibs`` and ``calibration_error@q50``.
    """
    if not folds:
        raise InputError("survival metrics: no folds given")
    point = [_fold_metrics(f) for f in folds]
    names = [k for k in point[0] if all(k in p for p in point)]
    values = {k: float(np.mean([p[k] for p in point])) for k in names}  # NaN when any fold is undefined
    boots: dict[str, list[float]] = {k: [] for k in names}
    if n_boot > 0:
        resamples = _row_bootstrap(folds, n_boot, seed) if _shared_rows(folds) else _fold_bootstrap(folds, n_boot, seed)
        for per_fold in resamples:
            for k in names:
                vals = [p[k] for p in per_fold]
                if all(math.isfinite(v) for v in vals):
                    boots[k].append(float(np.mean(vals)))
    alpha = (1.0 - ci) / 2.0
    out: dict[str, MetricValue] = {}
    for k in names:
        vals = boots[k]
        if n_boot > 0 and len(vals) >= max(2, MIN_VALID_SHARE * n_boot):
            lo, hi = np.percentile(vals, [100 * alpha, 100 * (1 - alpha)])
            out[k] = MetricValue(values[k], float(lo), float(hi))
        else:
            out[k] = MetricValue(values[k])
    return out
