"""The prognosis protocol: stratified splits, nested tuning on training rows only, Records;
and scikit-survival's user-guide numbers reproduced through medfm's pipeline on GBSG2."""

from __future__ import annotations

import numpy as np
import pytest

from medfm.data.survival import Covariate, SurvivalSchema, SurvivalTable, load_survival_dataset
from medfm.errors import ConfigError
from medfm.metrics.survival import harrell_c, integrated_brier
from medfm.results import Record
from medfm.tasks.survival import cv as cv_mod
from medfm.tasks.survival.cv import PrognosisConfig, event_stratified_splits, run_prognosis, tune_params
from medfm.tasks.survival.fusion import FusionConfig, SurvivalPipeline
from medfm.tasks.survival.models import MODELS


def test_splits_are_event_stratified_and_partition_the_rows() -> None:
    event = np.r_[np.ones(30, bool), np.zeros(70, bool)]
    splits = event_stratified_splits(event, 5, seed=0)
    assert sorted(np.concatenate([te for _, te in splits]).tolist()) == list(range(100))
    assert all(event[te].sum() == 6 for _, te in splits)
    assert splits[0][1].tolist() == event_stratified_splits(event, 5, seed=0)[0][1].tolist()
    ((tr, te),) = event_stratified_splits(event, 0, seed=0, test_size=0.25)
    assert len(te) == 25 and event[te].sum() in (7, 8) and not set(tr) & set(te)


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'coxph'"):
        PrognosisConfig(models=("coxhp",))
    with pytest.raises(ConfigError, match="--cv"):
        PrognosisConfig(cv=1)
    with pytest.raises(ConfigError, match="not run"):
        PrognosisConfig(models=("coxph",), params={"rsf": {}})


def test_records_carry_metrics_cis_km_groups_and_provenance() -> None:
    table = load_survival_dataset("veterans")
    recs = run_prognosis(table, PrognosisConfig(models=("coxph",), cv=3, n_boot=20, seed=1), progress=False)
    (r,) = recs
    assert isinstance(r, Record)
    assert (r.dataset, r.split, r.model, r.protocol, r.seed, r.n) == ("veterans", "cv3", "coxph", "survival", 1, 137)
    assert set(r.metrics) >= {"c_harrell", "c_uno", "td_auc_mean", "ibs", "calibration_error@q50"}
    assert r.metrics["c_harrell"].ci_low is not None
    assert r.provenance["data_checksum"] == table.checksum() and r.provenance["config"]["n_boot"] == 20
    km = r.extra["km_groups"]
    assert km["n_low"] + km["n_high"] == 137 and 0.0 <= km["logrank_p"] < 0.05
    assert len(r.extra["fold_metrics"]) == 3


def test_repeated_cv_averages_every_fold_of_every_repeat() -> None:
    table = load_survival_dataset("veterans")
    one = run_prognosis(table, PrognosisConfig(models=("coxph",), cv=3, n_boot=0, seed=1), progress=False)[0]
    cfg = PrognosisConfig(models=("coxph",), cv=3, n_boot=20, seed=1, repeats=2)
    (r,) = run_prognosis(table, cfg, progress=False)
    assert (r.split, r.n, r.extra["repeats"]) == ("cv3x2", 137, 2)
    per_fold = [f["c_harrell"] for f in r.extra["fold_metrics"]]
    assert len(per_fold) == 6 and per_fold[:3] == [f["c_harrell"] for f in one.extra["fold_metrics"]]
    assert r.metrics["c_harrell"].value == pytest.approx(np.mean(per_fold))
    assert r.metrics["c_harrell"].ci_low < r.metrics["c_harrell"].value < r.metrics["c_harrell"].ci_high
    # the second repeat draws other folds (seed + 1); risk groups count each row once
    splits = cv_mod.outer_splits(table.event, cfg)
    assert len(splits) == 6 and splits[3][1].tolist() != splits[0][1].tolist()
    assert r.extra["km_groups"]["n_low"] + r.extra["km_groups"]["n_high"] == 137
    with pytest.raises(ConfigError, match="--repeats"):
        PrognosisConfig(repeats=0)


def test_nested_tuning_never_sees_the_outer_test_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    table = load_survival_dataset("veterans")
    seen: list[set[str]] = []
    real = cv_mod.tune_params

    def spy(train: SurvivalTable, model: str, cfg: PrognosisConfig, cache=None):
        seen.append(set(train.ids))
        return real(train, model, cfg, cache)

    monkeypatch.setattr(cv_mod, "tune_params", spy)
    cfg = PrognosisConfig(models=("coxph",), cv=3, n_boot=0, tune=True)
    (r,) = run_prognosis(table, cfg, progress=False)
    splits = event_stratified_splits(table.event, 3, 0)
    assert len(seen) == 3
    for ids, (_, te) in zip(seen, splits, strict=True):
        assert not ids & set(table.ids[te])
    assert r.model == "coxph+tuned"
    grid = list(MODELS.get("coxph").grid)
    assert all(p in grid for p in r.provenance["chosen_params"])
    assert len(r.extra["inner_c"]) == 3 and all(0.5 < c < 1 for c in r.extra["inner_c"])


def test_tune_params_scores_every_grid_point() -> None:
    table = load_survival_dataset("veterans")
    best, scored = tune_params(table, "coxph", PrognosisConfig(models=("coxph",), inner_cv=3))
    assert len(scored) == len(MODELS.get("coxph").grid) == 28 and best == max(scored, key=lambda s: s[1])[0]


class _SmallGrids:
    """MODELS with tiny grids (fast tests); everything else as registered."""

    GRIDS = {
        "coxnet": ({"alpha": 0.1, "splines": 4}, {"alpha": 0.03, "log_skewed": True}),
        "rsf": ({"n_estimators": 20, "min_samples_leaf": 10}, {"n_estimators": 20, "min_samples_leaf": 20}),
    }

    def get(self, name: str):
        from dataclasses import replace

        entry = MODELS.get(name)
        return replace(entry, grid=self.GRIDS[name]) if name in self.GRIDS else entry


def test_tuned_ensemble_selection_fits_and_scores_only_outer_training_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fit and every inner-CV prediction made while tuning (members and subset) uses rows of
    the outer training fold only; the outer test rows are touched only by the final prediction."""
    base = load_survival_dataset("veterans")
    X = base.X.assign(uid=np.arange(len(base), dtype=float))  # a traceable row id (a harmless covariate)
    schema = SurvivalSchema(base.schema.time, base.schema.event, (*base.schema.covariates, Covariate("uid")))
    table = SurvivalTable(X, base.time, base.event, schema, "veterans")
    monkeypatch.setattr(cv_mod, "MODELS", _SmallGrids())
    monkeypatch.setattr(cv_mod, "ENSEMBLE_CANDIDATES", ("coxnet", "rsf"))
    phase: dict[str, object] = {"tuning": False}
    touched: list[tuple[bool, set[float]]] = []
    real_tune, Real = cv_mod.tune_params, cv_mod.SurvivalPipeline

    def tune_spy(train, model, cfg, cache=None):
        phase["tuning"] = True
        try:
            return real_tune(train, model, cfg, cache)
        finally:
            phase["tuning"] = False

    class Spy(Real):
        def fit(self, X_raw, y):
            touched.append((bool(phase["tuning"]), set(X_raw["uid"])))
            return super().fit(X_raw, y)

        def predict_risk(self, X_raw):
            touched.append((bool(phase["tuning"]), set(X_raw["uid"])))
            return super().predict_risk(X_raw)

    monkeypatch.setattr(cv_mod, "tune_params", tune_spy)
    monkeypatch.setattr(cv_mod, "SurvivalPipeline", Spy)
    cfg = PrognosisConfig(models=("ensemble",), cv=3, inner_cv=3, n_boot=0, tune=True)
    (r,) = run_prognosis(table, cfg, progress=False)
    splits = event_stratified_splits(table.event, 3, 0)
    tuning = [uids for t, uids in touched if t]
    assert len(tuning) == 3 * (2 + 2) * 3 * 2  # outer folds x grid points x inner folds x (fit, predict)
    for k, (tr, te) in enumerate(splits):  # the calls of outer fold k come in order
        for uids in tuning[k * 24 : (k + 1) * 24]:
            assert uids <= set(tr.astype(float)) and not uids & set(te.astype(float))
    for params in r.provenance["chosen_params"]:
        assert params["members"] == ["coxnet", "rsf"]
        assert params["coxnet"] in _SmallGrids.GRIDS["coxnet"] and params["rsf"] in _SmallGrids.GRIDS["rsf"]
    assert r.metrics["c_harrell"].value > 0.6 and len(r.extra["inner_c"]) == 3


# --- scikit-survival user guide, GBSG2 -------------------------------------------------------

RSF_GUIDE_SCHEMA = SurvivalSchema(  # the guide's column order: one-hot horTh/menostat, ordinal tgrade last
    time="time",
    event="cens",
    covariates=(
        Covariate("age"),
        Covariate("estrec"),
        Covariate("horTh", "binary", ("no", "yes")),
        Covariate("menostat", "binary", ("Pre", "Post")),
        Covariate("pnodes"),
        Covariate("progrec"),
        Covariate("tsize"),
        Covariate("tgrade", "ordinal", ("I", "II", "III")),
    ),
)


def _guide_table(schema: SurvivalSchema | None = None) -> SurvivalTable:
    table = load_survival_dataset("gbsg2")
    if schema is None:
        return table
    return SurvivalTable(table.X[schema.names], table.time, table.event, schema, "gbsg2")


@pytest.mark.slow
def test_reproduces_random_survival_forest_guide() -> None:
    """'Using Random Survival Forests': 1000 trees, split 75/25 with random_state=20 -> C = 0.6745."""
    from sklearn.model_selection import train_test_split

    table = _guide_table(RSF_GUIDE_SCHEMA)
    tr, te = train_test_split(np.arange(len(table)), test_size=0.25, random_state=20)
    params = {"n_estimators": 1000, "min_samples_split": 10, "min_samples_leaf": 15, "max_features": "sqrt"}
    pipe = SurvivalPipeline(table.schema, "rsf", params, seed=20, fusion=FusionConfig(standardize=False))
    pipe.fit(table.X.iloc[tr], table.y[tr])
    c = harrell_c(table.event[te], table.time[te], pipe.predict_risk(table.X.iloc[te]))
    assert c == pytest.approx(0.6745, abs=5e-4)


def test_reproduces_evaluating_survival_models_guide() -> None:
    """'Evaluating Survival Models' (Brier score section): RSF(max_depth=2) / Coxnet(l1_ratio=0.99)
    C = 0.692 / 0.688 and IBS = 0.192 / 0.189 on the stratified split with random_state=1."""
    from sklearn.model_selection import train_test_split

    table = _guide_table()
    tr, te = train_test_split(np.arange(len(table)), stratify=table.event, random_state=1)
    lower, upper = np.percentile(table.time, [10, 90])
    times = np.arange(lower, upper + 1)
    got = {}
    for name, params, seed in (("rsf", {"max_depth": 2}, 1), ("coxnet", {"l1_ratio": 0.99}, 0)):
        pipe = SurvivalPipeline(table.schema, name, params, seed=seed, fusion=FusionConfig(standardize=False))
        pipe.fit(table.X.iloc[tr], table.y[tr])
        c = harrell_c(table.event[te], table.time[te], pipe.predict_risk(table.X.iloc[te]))
        surv = pipe.predict_survival(table.X.iloc[te], times)
        ibs = integrated_brier(table.event, table.time, table.event[te], table.time[te], surv, times)
        got[name] = (round(c, 3), round(ibs, 3))
    assert got == {"rsf": (0.692, 0.192), "coxnet": (0.688, 0.189)}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the diverging Newton steps overflow, as expected
def test_a_model_that_cannot_be_fitted_is_recorded_as_failed_and_others_still_run() -> None:
    """Unpenalised Cox on 82 covariates (76 genes) and ~130 training rows diverges in scikit-survival."""
    table = load_survival_dataset("breast_cancer")
    cfg = PrognosisConfig(models=("coxph", "coxnet"), cv=3, n_boot=0, params={"coxnet": {"alpha": 0.1}})
    failed, ok = run_prognosis(table, cfg, progress=False)
    assert failed.metrics == {} and "coxph: fitting failed" in failed.extra["error"]
    assert ok.metrics["c_harrell"].value > 0.55


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_risk_only_models_report_c_and_td_auc_and_say_why_ibs_is_missing() -> None:
    table = load_survival_dataset("veterans")
    params = {"ensemble": {"members": ["ssvm", "coxnet"]}}
    cfg = PrognosisConfig(models=("ssvm", "ensemble"), cv=3, n_boot=0, params=params)
    svm, ens = run_prognosis(table, cfg, progress=False)
    for r in (svm, ens):
        assert r.metrics["c_harrell"].value > 0.6 and r.metrics["td_auc_mean"].value > 0.6
        assert "ibs" not in r.metrics and "calibration_error@q50" not in r.metrics
        assert "risk scores only" in r.extra["unavailable"]["ibs"]
    assert "ssvm" in ens.extra["unavailable"]["ibs"]
    (cox,) = run_prognosis(table, PrognosisConfig(models=("coxph",), cv=3, n_boot=0), progress=False)
    assert "ibs" in cox.metrics and "unavailable" not in cox.extra
