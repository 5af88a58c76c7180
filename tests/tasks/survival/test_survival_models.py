"""Survival models: each learns a known signal; survival curves are valid; Cox loss is right."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfm.errors import ConfigError
from medfm.metrics.survival import harrell_c
from medfm.tasks.survival.models import (
    MODELS,
    cox_partial_nll,
    create_model,
    ensemble_members,
    list_models,
    rank_average,
    split_preprocess,
    step_at,
)


def _synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """4 standardised covariates; the log-hazard is 1.0 * x0 - 0.7 * x1 (x2, x3 are noise)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    t_ev = rng.exponential(np.exp(-(1.0 * X[:, 0] - 0.7 * X[:, 1])))
    t_c = rng.exponential(2.0, n)
    y = np.empty(n, dtype=[("event", "?"), ("time", "<f8")])
    y["event"], y["time"] = t_ev <= t_c, np.minimum(t_ev, t_c)
    return X, y


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y = _synthetic(260, 0)
    return X[:200], y[:200], X[200:], y[200:]


SMALL = {  # keep the unit tests fast
    "coxph": {},
    "coxnet": {"l1_ratio": 0.5, "alpha": 0.01},
    "rsf": {"n_estimators": 30, "min_samples_leaf": 10},
    "gbsa": {"n_estimators": 50, "max_depth": 1},
    "cgb": {"n_estimators": 100},
    "deepsurv": {"hidden": (8,), "lr": 0.01, "epochs": 200},
    "ensemble": {"rsf": {"n_estimators": 30, "min_samples_leaf": 10}, "gbsa": {"n_estimators": 50, "max_depth": 1}},
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_model_learns_signal_and_gives_valid_survival(name: str, data) -> None:
    Xtr, ytr, Xte, yte = data
    m = create_model(name, SMALL[name], seed=0).fit(Xtr, ytr)
    risk = m.predict_risk(Xte)
    assert risk.shape == (60,) and np.isfinite(risk).all()
    assert harrell_c(yte["event"], yte["time"], risk) > 0.65
    times = np.quantile(ytr["time"], [0.1, 0.3, 0.5, 0.7])
    surv = m.predict_survival(Xte, times)
    assert surv.shape == (60, 4)
    assert ((surv >= 0) & (surv <= 1)).all()
    assert (np.diff(surv, axis=1) <= 1e-12).all()  # non-increasing in time
    # higher risk -> lower survival at the median time (rank agreement)
    assert np.corrcoef(risk, surv[:, 2])[0, 1] < 0


def test_model_names_and_parameter_checks() -> None:
    assert list_models() == ["cgb", "coxnet", "coxph", "deepsurv", "ensemble", "gbsa", "kssvm", "rsf", "ssvm"]
    with pytest.raises(ConfigError, match="Did you mean 'rsf'"):
        create_model("rfs")
    with pytest.raises(ConfigError, match="n_trees"):
        create_model("rsf", {"n_trees": 10})
    with pytest.raises(ConfigError, match="hiden"):
        create_model("deepsurv", {"hiden": (4,)})


def _nll_reference(risk: np.ndarray, event: np.ndarray, time: np.ndarray) -> float:
    """Breslow partial likelihood written as its definition: risk set = {j : t_j >= t_i}."""
    total = 0.0
    for i in np.flatnonzero(event):
        at_risk = time >= time[i]
        total += risk[i] - np.log(np.exp(risk[at_risk]).sum())
    return -total / event.sum()


def test_cox_partial_nll_matches_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    time = rng.integers(1, 8, 50).astype(float)  # many ties
    event = rng.random(50) < 0.6
    risk = rng.normal(size=50)
    got = cox_partial_nll(torch.tensor(risk), torch.tensor(event, dtype=torch.float64), torch.tensor(time))
    assert float(got) == pytest.approx(_nll_reference(risk, event, time), rel=1e-10)


def test_deepsurv_linear_matches_coxph_ordering(data) -> None:
    """A DeepSurv net without hidden layers is a Cox model: its risks rank like sksurv CoxPH's."""
    Xtr, ytr, Xte, _ = data
    deep = create_model(
        "deepsurv", {"hidden": (), "lr": 0.05, "weight_decay": 0.0, "epochs": 400, "patience": 400, "val_fraction": 0.1}
    ).fit(Xtr, ytr)
    cox = create_model("coxph").fit(Xtr, ytr)
    from scipy.stats import spearmanr

    assert spearmanr(deep.predict_risk(Xte), cox.predict_risk(Xte))[0] > 0.95


def test_step_at_and_rank_average() -> None:
    ut = np.array([1.0, 2.0, 4.0])
    vals = np.array([[0.9, 0.8, 0.5]])
    np.testing.assert_array_equal(step_at(ut, vals, np.array([0.5, 1.0, 3.0, 9.0])), [[1.0, 0.9, 0.8, 0.5]])
    np.testing.assert_allclose(rank_average([np.array([1.0, 2.0, 3.0]), np.array([30.0, 20.0, 10.0])]), [0.5, 0.5, 0.5])


def test_ensemble_members_are_configurable(data) -> None:
    Xtr, ytr, Xte, yte = data
    m = create_model("ensemble", {"members": ["deepsurv", "coxnet"], "deepsurv": {"epochs": 50}})
    assert [x.name for x in m.fit(Xtr, ytr).members] == ["deepsurv", "coxnet"]
    assert harrell_c(yte["event"], yte["time"], m.predict_risk(Xte)) > 0.65
    with pytest.raises(ConfigError, match="members"):
        create_model("ensemble", {"members": ["coxph"]})
    with pytest.raises(ConfigError, match="members"):
        create_model("ensemble", {"members": ["rsf"], "gbsa": {}})


def test_preprocessing_keys_are_split_from_model_parameters() -> None:
    assert split_preprocess({"alpha": 1.0, "splines": 4, "log_skewed": True}) == (
        {"splines": 4, "log_skewed": True},
        {"alpha": 1.0},
    )
    members, per = ensemble_members({"members": ["coxnet", "rsf"], "coxnet": {"splines": 4}, "log_skewed": True})
    assert members == ("coxnet", "rsf") and per == {"coxnet": {"splines": 4}, "rsf": {}}
    # every grid point builds: preprocessing keys go to the pipeline, the rest to the estimator
    for name in ("coxph", "coxnet", "rsf", "gbsa", "cgb", "deepsurv", "ssvm", "kssvm"):
        grid = MODELS.get(name).grid
        assert len(grid) >= 3
        for params in grid:
            create_model(name, split_preprocess(params)[1])
    assert {(p["log_skewed"], p["splines"]) for p in MODELS.get("coxnet").grid} == {
        (False, 0),
        (False, 4),
        (True, 0),
        (True, 4),
    }
    assert split_preprocess({"interactions": True, "alpha": 0.3}) == ({"interactions": True}, {"alpha": 0.3})


SVMS = {  # (model, params) -> a survival SVM on the real WHAS500 table
    "ssvm": {"alpha": 2.0**-4},
    "kssvm-clinical": {"kernel": "clinical", "alpha": 2.0**-6},
    "kssvm-rbf": {"kernel": "rbf", "gamma": 0.05, "alpha": 2.0**-4, "max_iter": 10},
    "ssvm-regression": {"alpha": 2.0**-4, "rank_ratio": 0.5},  # predicts survival time: risk is its negative
}


@pytest.fixture(scope="module")
def whas_small():
    """250 WHAS500 rows through medfm's encoder/scaler: 180 training, 70 test rows."""
    from medfm.data.survival import load_survival_dataset
    from medfm.tasks.survival.fusion import SurvivalPipeline

    table = load_survival_dataset("whas500").subset(np.arange(250))
    pipe = SurvivalPipeline(table.schema, "coxph")
    Xtr = pipe._features(table.X.iloc[:180], fit=True)
    return Xtr, table.y[:180], pipe._features(table.X.iloc[180:], fit=False), table.y[180:]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("key", sorted(SVMS))
def test_survival_svms_rank_real_patients_and_give_no_survival_function(key: str, whas_small) -> None:
    from sksurv.metrics import concordance_index_censored

    Xtr, ytr, Xte, yte = whas_small
    m = create_model(key.split("-")[0], SVMS[key], seed=0).fit(Xtr, ytr)
    risk = m.predict_risk(Xte)
    assert risk.shape == (70,) and np.isfinite(risk).all()
    c = harrell_c(yte["event"], yte["time"], risk)
    assert c == concordance_index_censored(yte["event"], yte["time"], risk)[0]
    assert c > 0.65  # WHAS500 covariates (age, heart failure, ...) rank mortality well
    assert m.predict_survival(Xte, np.array([100.0, 500.0])) is None
    if m.params["rank_ratio"] < 1:  # sksurv's prediction is a survival time: higher = later event
        assert np.array_equal(risk, -m.estimator.predict(Xte))


def test_clinical_kernel_uses_training_ranges(whas_small) -> None:
    """The clinical kernel between a row and itself is 1; ranges come from the training rows only."""
    Xtr, ytr, Xte, _ = whas_small
    m = create_model("kssvm", {"alpha": 2.0**-6}).fit(Xtr, ytr)
    K = m._kernel(Xtr[:5])
    np.testing.assert_allclose(np.diag(K[:, :5]), 1.0)
    assert K.shape == (5, 180) and (K[:, :180] <= 1.0 + 1e-12).all()
    np.testing.assert_allclose(m._clinical._numeric_ranges, np.ptp(Xtr, axis=0))
    with pytest.raises(ConfigError, match="kernal"):
        create_model("kssvm", {"kernal": "rbf"})


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_kernel_svm_in_the_primal_ranks_like_sksurv_fast_kernel_survival_svm(whas_small) -> None:
    """Same objective, solved on the exact kernel feature map: the risks rank like sksurv's dual fit."""
    import pandas as pd
    from scipy.stats import spearmanr
    from sksurv.kernels import ClinicalKernelTransform
    from sksurv.svm import FastKernelSurvivalSVM

    Xtr, ytr, Xte, _ = whas_small
    ours = create_model("kssvm", {"alpha": 2.0**-8}).fit(Xtr, ytr).predict_risk(Xte)
    ck = ClinicalKernelTransform().fit(pd.DataFrame(Xtr))
    ref = FastKernelSurvivalSVM(kernel="precomputed", alpha=2.0**-8, max_iter=100, random_state=0)
    ref.fit(ck.transform(pd.DataFrame(Xtr)), ytr)
    assert spearmanr(ours, ref.predict(ck.transform(pd.DataFrame(Xte))))[0] > 0.99
