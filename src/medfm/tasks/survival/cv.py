"""The prognosis protocol: event-stratified K-fold CV (or one held-out test split), optionally
repeated with new fold seeds (``repeats``: the estimate then averages every fold of every repeat,
which removes most of the split-to-split spread of one K-fold run), optional
hyper-parameter choice by inner CV on each outer training fold (nested CV), metrics with bootstrap
CIs, and Kaplan-Meier curves of the predicted low/high-risk groups -> one Record per model.

Hyper-parameters are chosen on inner folds of the outer *training* rows by mean Harrell's C
(inner folds event-stratified with the same fixed seed);
the outer test rows are used only for the reported metrics. The low/high split of test rows uses
the median predicted risk of the *training* rows of the same fold.
"""

from __future__ import annotations

import math
import sys
import time as _time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medfm._optional import optional_import
from medfm._progress import track
from medfm.data.survival import SurvivalTable
from medfm.errors import ConfigError, InputError
from medfm.metrics.survival import FoldPredictions, evaluation_times, fold_metrics, harrell_c, survival_metrics
from medfm.results import Record, make_provenance
from medfm.tasks.survival.fusion import FusionConfig, SurvivalPipeline
from medfm.tasks.survival.models import ENSEMBLE_CANDIDATES, MODELS, RISK_ONLY_MODELS

KM_POINTS = 200  # Kaplan-Meier curves stored in Record.extra are sampled at this many times


@dataclass
class PrognosisConfig:
    """``models`` CLI names; ``cv`` outer folds (0: one stratified test split of ``test_size``);
    ``tune``: choose each model's hyper-parameters (and preprocessing) from its grid
    (``MODELS[name].grid``) by ``inner_cv``-fold event-stratified CV on the outer training rows;
    ``params`` fixed parameters per model (used when not tuning); ``repeats``: the outer CV (or test
    split) is drawn ``repeats`` times, with seeds ``seed``, ``seed + 1``, ...; metrics average all
    folds, and their CIs resample rows (see ``medfm.metrics.survival``)."""

    models: tuple[str, ...] = ("coxph", "coxnet", "rsf", "gbsa", "deepsurv")
    cv: int = 5
    seed: int = 0
    n_boot: int = 1000
    tune: bool = False
    inner_cv: int = 5
    test_size: float = 0.25
    fusion: FusionConfig = field(default_factory=FusionConfig)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    repeats: int = 1

    def __post_init__(self) -> None:
        for m in self.models:
            MODELS.get(m)  # did-you-mean error for a typo
        if self.cv == 1 or self.cv < 0:
            raise ConfigError(f"--cv must be 0 (one test split) or >= 2 folds, got {self.cv}")
        if self.repeats < 1:
            raise ConfigError(f"--repeats must be >= 1, got {self.repeats}")
        if not 0.05 <= self.test_size <= 0.5:
            raise ConfigError(f"test_size must be in [0.05, 0.5], got {self.test_size}")
        unknown = sorted(set(self.params) - set(self.models))
        if unknown:
            raise ConfigError(f"params given for model(s) {unknown} that are not run ({list(self.models)})")


def event_stratified_splits(
    event: np.ndarray, cv: int, seed: int, test_size: float = 0.25
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Outer splits stratified by event status: K folds (``cv`` >= 2) or one test split (``cv`` = 0)."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    event = np.asarray(event, bool)
    n_ev, n_cens = int(event.sum()), int((~event).sum())
    k = cv if cv >= 2 else 2
    if min(n_ev, n_cens) < k and n_cens > 0:
        raise InputError(f"cannot stratify {k} folds: {n_ev} events and {n_cens} censored rows")
    strat = event if n_cens > 0 else None
    idx = np.arange(len(event))
    if cv == 0:
        tr, te = train_test_split(idx, test_size=test_size, stratify=strat, random_state=seed)
        return [(np.sort(tr), np.sort(te))]
    if strat is None:
        from sklearn.model_selection import KFold

        return list(KFold(cv, shuffle=True, random_state=seed).split(idx))
    return list(StratifiedKFold(cv, shuffle=True, random_state=seed).split(idx, event))


def outer_splits(event: np.ndarray, cfg: PrognosisConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """The outer splits of every repeat, in order: repeat r uses fold seed ``cfg.seed + r``."""
    return [
        split
        for r in range(cfg.repeats)
        for split in event_stratified_splits(event, cfg.cv, cfg.seed + r, cfg.test_size)
    ]


def _split_label(cfg: PrognosisConfig) -> str:
    """'cv5' / 'test', with 'x3' appended for 3 repeats."""
    base = f"cv{cfg.cv}" if cfg.cv >= 2 else "test"
    return base if cfg.repeats == 1 else f"{base}x{cfg.repeats}"


def _inner_score(
    table: SurvivalTable, model: str, params: dict[str, Any], cfg: PrognosisConfig
) -> tuple[float, list[np.ndarray]]:
    """Mean Harrell's C over the inner folds of ``table`` (training rows) and the inner-fold risks."""
    scores, risks = [], []
    for tr, te in event_stratified_splits(table.event, cfg.inner_cv, cfg.seed):
        pipe = SurvivalPipeline(table.schema, model, params, cfg.seed, cfg.fusion).fit(table.X.iloc[tr], table.y[tr])
        risk = pipe.predict_risk(table.X.iloc[te])
        if not np.all(np.isfinite(risk)):
            return -math.inf, []
        scores.append(harrell_c(table.event[te], table.time[te], risk))
        risks.append(risk)
    return float(np.mean(scores)), risks


TuneCache = dict[tuple[str, str], dict[str, Any]]


def tune_params(
    table: SurvivalTable, model: str, cfg: PrognosisConfig, cache: TuneCache | None = None
) -> tuple[dict[str, Any], list[tuple[dict[str, Any], float]]]:
    """Best parameters of ``model`` on ``table`` (training rows only) by inner-CV Harrell's C.

    The ensemble is chosen by ``_tune_ensemble``. ``cache`` maps (model, table checksum) to the best
    parameters, their inner C and inner-fold risks, so that a member tuned on the same training rows
    is not tuned twice. Returns (best params, [(params, inner C), ...]) (only the best when cached).
    """
    if model == "ensemble":
        return _tune_ensemble(table, cfg, cache)
    key = (model, table.checksum() + ",".join(table.ids))
    if cache is not None and key in cache:
        return dict(cache[key]["params"]), [(dict(cache[key]["params"]), cache[key]["score"])]
    grid = MODELS.get(model).grid or ({},)
    scored, risks = [], []
    for params in grid:
        try:
            s, r = _inner_score(table, model, dict(params), cfg)
        except (InputError, ValueError, ArithmeticError, np.linalg.LinAlgError):
            s, r = -math.inf, []
        scored.append((dict(params), s))
        risks.append(r)
    j = max(range(len(scored)), key=lambda i: scored[i][1])
    best = scored[j][0]
    if cache is not None:
        cache[key] = {"params": dict(best), "risks": risks[j], "score": scored[j][1]}
    return best, scored


def _tune_ensemble(
    table: SurvivalTable, cfg: PrognosisConfig, cache: TuneCache | None
) -> tuple[dict[str, Any], list[tuple[dict[str, Any], float]]]:
    """Ensemble selection by inner CV: tune each candidate member (parameters and preprocessing),
    then pick the member subset (>= 2 models) whose rank-averaged inner-fold risks have the best
    mean Harrell's C. Uses the training rows only (the same inner folds as the member tuning)."""
    from itertools import combinations

    from medfm.tasks.survival.models import rank_average

    cache = {} if cache is None else cache
    ids = table.checksum() + ",".join(table.ids)
    tuned, risks = {}, {}
    for m in ENSEMBLE_CANDIDATES:
        tuned[m] = tune_params(table, m, cfg, cache)[0]
        risks[m] = cache[(m, ids)]["risks"]
    ok = [m for m in ENSEMBLE_CANDIDATES if risks[m]]  # members whose every grid point failed are left out
    splits = event_stratified_splits(table.event, cfg.inner_cv, cfg.seed)
    scored: list[tuple[dict[str, Any], float]] = []
    for k in range(2, len(ok) + 1):
        for subset in combinations(ok, k):
            cs = [
                harrell_c(table.event[te], table.time[te], rank_average([risks[m][j] for m in subset]))
                for j, (_, te) in enumerate(splits)
            ]
            scored.append(({"members": list(subset), **{m: dict(tuned[m]) for m in subset}}, float(np.mean(cs))))
    if not scored:
        raise InputError(f"ensemble: fewer than two members could be fitted ({ok})")
    return max(scored, key=lambda ps: ps[1])[0], scored


def _km_curve(event: np.ndarray, time: np.ndarray, grid: np.ndarray) -> list[float]:
    npar = optional_import("sksurv.nonparametric")
    t, s = npar.kaplan_meier_estimator(event, time)
    k = np.searchsorted(t, grid, side="right") - 1
    return [1.0 if j < 0 else float(s[j]) for j in k]


def risk_groups(event: np.ndarray, time: np.ndarray, high: np.ndarray) -> dict[str, Any]:
    """KM curves (``KM_POINTS`` times) of low/high predicted-risk groups and the log-rank p-value."""
    compare = optional_import("sksurv.compare")
    grid = np.linspace(0.0, float(time.max()), KM_POINTS)
    out: dict[str, Any] = {"time": grid.tolist(), "n_low": int((~high).sum()), "n_high": int(high.sum())}
    out["low"] = _km_curve(event[~high], time[~high], grid) if (~high).any() else []
    out["high"] = _km_curve(event[high], time[high], grid) if high.any() else []
    p = math.nan
    if high.any() and (~high).any() and event.any():
        y = np.empty(len(time), dtype=[("event", "?"), ("time", "<f8")])
        y["event"], y["time"] = event, time
        try:
            p = float(compare.compare_survival(y, np.where(high, "high", "low"))[1])
        except ValueError:
            p = math.nan
    out["logrank_p"] = p
    return out


def _label(model: str, cfg: PrognosisConfig) -> str:
    return model + ("+tuned" if cfg.tune else "") + cfg.fusion.label()


def evaluate_model(
    table: SurvivalTable,
    model: str,
    cfg: PrognosisConfig,
    data_checksum: str | None = None,
    tune_cache: TuneCache | None = None,
) -> Record:
    """Run one model through the outer splits and return its Record (metrics with CIs); the
    Kaplan-Meier risk groups come from the first repeat, so that each row counts once."""
    start = _time.perf_counter()
    splits = outer_splits(table.event, cfg)
    folds: list[FoldPredictions] = []
    chosen: list[dict[str, Any]] = []
    inner_c: list[float] = []  # best inner-CV C per outer fold (training rows only)
    ev_all, t_all, high_all = [], [], []
    per_repeat = len(splits) // cfg.repeats
    for k, (tr, te) in enumerate(splits):
        train = table.subset(tr)
        if cfg.tune:
            params, scored = tune_params(train, model, cfg, tune_cache)
            inner_c.append(max((c for _, c in scored), default=math.nan))
        else:
            params = dict(cfg.params.get(model, {}))
        chosen.append(params)
        pipe = SurvivalPipeline(table.schema, model, params, cfg.seed, cfg.fusion).fit(train.X, train.y)
        test_X = table.X.iloc[te]
        risk = pipe.predict_risk(test_X)
        times = evaluation_times(table.time[tr])["times"]
        surv = pipe.predict_survival(test_X, times)
        folds.append(
            FoldPredictions(
                table.event[tr],
                table.time[tr],
                table.event[te],
                table.time[te],
                risk,
                surv,
                times if surv is not None else None,
                rows=te,
            )
        )
        if k < per_repeat:  # risk groups from the first repeat: each row once
            cut = float(np.median(pipe.predict_risk(train.X)))
            ev_all.append(table.event[te])
            t_all.append(table.time[te])
            high_all.append(risk > cut)
    metrics = survival_metrics(folds, n_boot=cfg.n_boot, seed=cfg.seed)
    groups = risk_groups(np.concatenate(ev_all), np.concatenate(t_all), np.concatenate(high_all))
    split = _split_label(cfg)
    n = len(table) if cfg.cv >= 2 else len(splits[0][1])
    return Record(
        dataset=table.name,
        split=split,
        model=_label(model, cfg),
        protocol="survival",
        metrics=metrics,
        seed=cfg.seed,
        n=n,
        seconds=round(_time.perf_counter() - start, 3),
        provenance=make_provenance(
            cfg, data_checksum=data_checksum or table.checksum(), model=model, chosen_params=chosen
        ),
        extra={
            "km_groups": groups,
            "fold_metrics": [fold_metrics(f) for f in folds],
            "n_events": int(table.event.sum()),
            "repeats": cfg.repeats,
            **({"inner_c": inner_c} if cfg.tune else {}),
            **({"unavailable": _no_survival_reason(model, chosen)} if any(f.surv is None for f in folds) else {}),
        },
    )


def _no_survival_reason(model: str, chosen: list[dict[str, Any]]) -> dict[str, str]:
    """Why the survival-function metrics are missing: the model (or an ensemble member) gives risk
    scores only (survival SVMs); Harrell/Uno C and td-AUC need only the risk and are reported."""
    why = f"{model} gives risk scores only, no survival function"
    if model == "ensemble":
        risk_only = sorted({m for p in chosen for m in p.get("members", []) if m in RISK_ONLY_MODELS})
        why = f"ensemble member(s) {', '.join(risk_only) or '?'} give risk scores only, no survival function"
    return {"ibs": why, "calibration_error@q50": why}


def run_prognosis(
    table: SurvivalTable,
    cfg: PrognosisConfig,
    data_checksum: str | None = None,
    progress: bool = True,
    on_record: Callable[[list[Record]], None] | None = None,
) -> list[Record]:
    """Every configured model on ``table``: one Record each (see ``evaluate_model``); a model that
    raises InputError gets a Record with ``extra['error']``; ``extra['imputed']`` counts the rows
    whose missing covariate values the encoder imputed.

    ``on_record(records_so_far)`` is called after each model (the CLI saves partial results).
    """
    models = list(cfg.models)
    it = track(models, desc=f"prognosis {table.name}", unit="model") if progress else iter(models)
    cache: TuneCache = {}
    records: list[Record] = []
    imputed = table.missing()  # covariate -> rows with a missing value (imputed per fold)
    for m in it:
        try:
            records.append(evaluate_model(table, m, cfg, data_checksum, cache))
        except InputError as exc:  # one model that cannot be fitted does not stop the others
            print(f"prognosis: {table.name}: {m} failed: {exc}", file=sys.stderr)
            records.append(_failed_record(table, m, cfg, data_checksum, str(exc)))
        if imputed:
            records[-1].extra["imputed"] = dict(imputed)
        if len(records) == 1:
            records[0].extra["hazard_ratios"] = _hazard_ratios_or_empty(table)
        if on_record is not None:
            on_record(records)
    return records


def _failed_record(table: SurvivalTable, model: str, cfg: PrognosisConfig, checksum: str | None, error: str) -> Record:
    """A Record without metrics saying why the model could not be evaluated (kept in results.json)."""
    return Record(
        dataset=table.name,
        split=_split_label(cfg),
        model=_label(model, cfg),
        protocol="survival",
        metrics={},
        seed=cfg.seed,
        n=len(table),
        provenance=make_provenance(cfg, data_checksum=checksum or table.checksum(), model=model),
        extra={"error": error, "n_events": int(table.event.sum())},
    )


def _hazard_ratios_or_empty(table: SurvivalTable) -> list[dict[str, Any]]:
    """Full-cohort Cox hazard ratios for the report; [] when lifelines cannot fit them."""
    from medfm.tasks.survival.explain import hazard_ratios

    try:
        return hazard_ratios(table)
    except (ValueError, ArithmeticError, np.linalg.LinAlgError):
        return []
