"""Early and late fusion end to end: tabular + omics (breast_cancer), tabular + image embeddings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medfm.data.survival import Covariate, SurvivalSchema, SurvivalTable, load_survival_dataset
from medfm.errors import ConfigError
from medfm.tasks.survival.cv import PrognosisConfig, event_stratified_splits, run_prognosis
from medfm.tasks.survival.fusion import BlockTransformer, FusionConfig, SurvivalPipeline


def _table_with_images(n: int = 240, seed: int = 0) -> SurvivalTable:
    """Two weak tabular covariates; a 16-d 'image embedding' whose first axes carry most signal."""
    rng = np.random.default_rng(seed)
    age = rng.normal(0, 1, n)
    stage = rng.choice(["I", "II"], n)
    latent = rng.normal(size=n)
    lp = 0.3 * age + 0.3 * (stage == "II") + 1.2 * latent
    t_ev = rng.exponential(np.exp(-lp))
    t_c = rng.exponential(2.0, n)
    X = pd.DataFrame({"age": age, "stage": stage})
    schema = SurvivalSchema("t", "e", (Covariate("age"), Covariate("stage", "binary")))
    table = SurvivalTable(X, np.minimum(t_ev, t_c), t_ev <= t_c, schema, "synthetic")
    emb = rng.normal(size=(n, 16))
    emb[:, 0] = latent + 0.3 * rng.normal(size=n)
    emb[:, 1] = -latent + 0.3 * rng.normal(size=n)
    return table.with_block("image", emb, prefix="img")


def _cv_c(table: SurvivalTable, model: str, fusion: FusionConfig, params: dict | None = None) -> float:
    cfg = PrognosisConfig(models=(model,), cv=3, n_boot=0, fusion=fusion, params={model: params or {}})
    return run_prognosis(table, cfg, progress=False)[0].metrics["c_harrell"].value


def test_block_transformer_standardises_each_block_and_pca_on_wide_blocks() -> None:
    rng = np.random.default_rng(0)
    X = np.hstack([rng.normal(5, 3, (50, 2)), rng.normal(0, 10, (50, 60)), np.ones((50, 1))])
    blocks = ["ehr", "ehr"] + ["omics"] * 60 + ["ehr"]
    bt = BlockTransformer(blocks, FusionConfig(pca_components=5, pca_min_width=50)).fit(X)
    Z = bt.transform(X)
    assert Z.shape == (50, 2 + 5)  # constant column dropped, omics reduced to 5 components
    assert bt.out_blocks == ["ehr", "ehr"] + ["omics"] * 5
    np.testing.assert_allclose(Z[:, :2].mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(Z[:, :2].std(0), 1, atol=1e-12)


def test_log_skewed_transforms_only_skewed_nonnegative_columns_chosen_on_training_rows() -> None:
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.lognormal(0, 1.5, 200), rng.normal(size=200), rng.integers(0, 2, 200)])
    bt = BlockTransformer(["ehr"] * 3, FusionConfig(log_skewed=True)).fit(X)
    assert bt._steps[0][2].tolist() == [True, False, False]
    Z = bt.transform(np.array([[np.e - 1, 0.0, 1.0]]))
    raw = np.log1p(X[:, 0])
    assert Z[0, 0] == pytest.approx((1.0 - raw.mean()) / raw.std())
    pipe = SurvivalPipeline(SurvivalSchema("t", "e", (Covariate("x"),)), "coxph", {"log_skewed": True, "alpha": 0.1})
    assert pipe.fusion.log_skewed and pipe.params == {"alpha": 0.1}


def test_splines_expand_continuous_columns_with_knots_from_training_rows() -> None:
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=200), rng.integers(0, 2, 200), rng.integers(0, 4, 200)])
    bt = BlockTransformer(["ehr"] * 3, FusionConfig(splines=4, standardize=False)).fit(X)
    # continuous column -> 4 knots + degree 3 - 1 B-splines, less the intercept = 5 columns; others pass through
    assert bt.out_blocks == ["ehr"] * 7
    Z = bt.transform(X)
    np.testing.assert_array_equal(Z[:, 5:], X[:, 1:])
    spl = bt._steps[0][3]
    knots = spl._cols[0][1].bsplines_[0].t
    assert knots[3] == pytest.approx(X[:, 0].min()) and knots[-4] == pytest.approx(X[:, 0].max())
    # beyond the training range the basis continues linearly (finite, no blow-up of a cubic)
    far = bt.transform(np.array([[10.0, 0, 0], [20.0, 0, 0], [30.0, 0, 0]]))[:, :5]
    np.testing.assert_allclose(far[2] - far[1], far[1] - far[0], rtol=1e-8, atol=1e-10)
    # many ties (counts like GBSG2 pnodes) still give a valid basis
    counts = np.r_[np.ones(120), rng.integers(2, 30, 80)]
    Zc = BlockTransformer(["ehr"], FusionConfig(splines=4)).fit(counts[:, None]).transform(counts[:, None])
    assert Zc.shape[1] >= 3 and np.isfinite(Zc).all()
    # wide blocks (omics) are not expanded
    wide = BlockTransformer(["omics"] * 60, FusionConfig(splines=4, pca_min_width=50)).fit(rng.normal(size=(80, 60)))
    assert len(wide.out_blocks) == 60
    with pytest.raises(ConfigError, match="splines"):
        FusionConfig(splines=2)


def test_splines_capture_a_nonlinear_effect_in_a_cox_model() -> None:
    rng = np.random.default_rng(1)
    n = 400
    x = rng.uniform(-2, 2, n)
    t_ev = rng.exponential(np.exp(-1.5 * x**2))  # U-shaped hazard: invisible to a linear Cox model
    t_c = rng.exponential(2.0, n)
    table = SurvivalTable(
        pd.DataFrame({"x": x}), np.minimum(t_ev, t_c), t_ev <= t_c, SurvivalSchema("t", "e", (Covariate("x"),)), "u"
    )
    linear = _cv_c(table, "coxph", FusionConfig())
    spline = _cv_c(table, "coxph", FusionConfig(), {"splines": 4, "alpha": 0.1})
    assert linear < 0.6 < spline


def test_ensemble_pipeline_keeps_each_members_preprocessing() -> None:
    table = load_survival_dataset("veterans")
    params = {
        "members": ["coxnet", "rsf"],
        "coxnet": {"alpha": 0.05, "splines": 4, "log_skewed": True},
        "rsf": {"n_estimators": 20, "min_samples_leaf": 10},
    }
    pipe = SurvivalPipeline(table.schema, "ensemble", params).fit(table.X, table.y)
    cox, rsf = pipe.members
    assert (cox.fusion.splines, cox.fusion.log_skewed, rsf.fusion.splines, rsf.fusion.log_skewed) == (4, True, 0, False)
    assert cox.params == {"alpha": 0.05} and len(cox.transformer.out_blocks) > len(rsf.transformer.out_blocks)
    risk = pipe.predict_risk(table.X)
    assert risk.shape == (137,) and 0.0 <= risk.min() and risk.max() <= 1.0
    assert pipe.predict_survival(table.X, np.array([10.0, 100.0])).shape == (137, 2)


def test_image_embeddings_add_signal_early_and_late_fusion() -> None:
    table = _table_with_images()
    tab_only = SurvivalTable(
        table.X[["age", "stage"]], table.time, table.event, SurvivalSchema("t", "e", table.schema.covariates[:2]), "tab"
    )
    coxnet = {"l1_ratio": 0.5, "alpha": 0.02}
    c_tab = _cv_c(tab_only, "coxnet", FusionConfig(), coxnet)
    c_early = _cv_c(table, "coxnet", FusionConfig(mode="early"), coxnet)
    c_rank = _cv_c(table, "coxnet", FusionConfig(mode="late", combine="rank"), coxnet)
    c_stack = _cv_c(table, "coxnet", FusionConfig(mode="late", combine="stack"), coxnet)
    assert c_early > c_tab + 0.05
    assert c_stack > c_tab + 0.05
    assert c_rank > c_tab  # rank average gives the weak block equal weight: smaller gain


def test_late_fusion_fits_one_model_per_block_and_stacks_out_of_fold() -> None:
    table = _table_with_images(160)
    pipe = SurvivalPipeline(table.schema, "coxph", {}, 0, FusionConfig(mode="late", combine="stack")).fit(
        table.X, table.y
    )
    assert sorted(pipe.models) == ["ehr", "image"]
    assert pipe.stacker is not None
    coef = pipe.stacker.estimator.coef_
    assert coef[1] > coef[0] > -0.5  # the image block gets the larger weight
    surv = pipe.predict_survival(table.X.iloc[:5], np.quantile(table.time, [0.2, 0.5]))
    assert surv.shape == (5, 2)


def test_breast_cancer_tabular_plus_omics_fusion() -> None:
    """Clinical (ehr) + 76-gene expression (omics) blocks: early fusion with PCA and late stacking run
    end to end and rank patients better than chance."""
    table = load_survival_dataset("breast_cancer")
    splits = event_stratified_splits(table.event, 3, 0)
    tr, te = splits[0]
    for fusion in (FusionConfig(mode="early", pca_components=10), FusionConfig(mode="late", combine="stack")):
        pipe = SurvivalPipeline(table.schema, "coxnet", {"l1_ratio": 0.5, "alpha": 0.05}, 0, fusion)
        pipe.fit(table.X.iloc[tr], table.y[tr])
        if fusion.mode == "early":
            assert pipe.transformer.out_blocks.count("omics") == 10
        else:
            assert sorted(pipe.models) == ["ehr", "omics"]
        from medfm.metrics.survival import harrell_c

        c = harrell_c(table.event[te], table.time[te], pipe.predict_risk(table.X.iloc[te]))
        assert c > 0.55


def test_fusion_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="mode"):
        FusionConfig(mode="middle")
    with pytest.raises(ConfigError, match="combine"):
        FusionConfig(mode="late", combine="vote")
    assert FusionConfig(mode="late", combine="stack").label() == "/late-stack"


def test_interactions_append_standardised_products_fitted_on_training_rows() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 200).astype(float)
    X = np.column_stack([rng.normal(5, 2, 200), rng.lognormal(0, 1, 200), a, 1.0 - a])  # a * (1 - a) == 0
    bt = BlockTransformer(["ehr"] * 4, FusionConfig(interactions=True)).fit(X)
    Z = bt.transform(X)
    # 4 columns + 6 pairs, less the product of the mutually exclusive indicators (constant)
    assert Z.shape == (200, 4 + 5) and bt.out_blocks == ["ehr"] * 9
    np.testing.assert_allclose(Z.mean(0), 0, atol=1e-10)
    np.testing.assert_allclose(Z.std(0), 1, atol=1e-10)
    s = (X - X.mean(0)) / X.std(0)
    prod = s[:, 0] * s[:, 1]
    np.testing.assert_allclose(Z[:, 4], (prod - prod.mean()) / prod.std(), atol=1e-10)
    # new rows are transformed with the training rows' statistics, not their own
    new = np.array([[5.0, 1.0, 1.0, 0.0], [9.0, 3.0, 0.0, 1.0]])
    s_new = (new - X.mean(0)) / X.std(0)
    np.testing.assert_allclose(bt.transform(new)[:, 4], (s_new[:, 0] * s_new[:, 1] - prod.mean()) / prod.std())
    pipe = SurvivalPipeline(SurvivalSchema("t", "e", (Covariate("x"),)), "coxnet", {"interactions": True, "alpha": 0.1})
    assert pipe.fusion.interactions and pipe.params == {"alpha": 0.1}


def test_interactions_capture_effect_modification_in_a_penalised_cox_model() -> None:
    rng = np.random.default_rng(2)
    n = 400
    x0, x1 = rng.normal(size=n), rng.normal(size=n)
    t_ev = rng.exponential(np.exp(-1.2 * x0 * x1))  # pure interaction: no main effect to find
    t_c = rng.exponential(2.0, n)
    schema = SurvivalSchema("t", "e", (Covariate("x0"), Covariate("x1")))
    table = SurvivalTable(pd.DataFrame({"x0": x0, "x1": x1}), np.minimum(t_ev, t_c), t_ev <= t_c, schema, "ia")
    main = _cv_c(table, "coxnet", FusionConfig(), {"alpha": 0.01, "l1_ratio": 0.5})
    inter = _cv_c(table, "coxnet", FusionConfig(), {"alpha": 0.01, "l1_ratio": 0.5, "interactions": True})
    assert main < 0.6 < inter


def test_interactions_of_two_exclusive_indicators_add_no_column() -> None:
    a = np.r_[np.ones(30), np.zeros(70)]
    bt = BlockTransformer(["ehr"] * 2, FusionConfig(interactions=True)).fit(np.column_stack([a, 1 - a]))
    assert bt.out_blocks == ["ehr"] * 2
