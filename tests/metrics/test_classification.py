"""Classification metrics against scikit-learn / torchmetrics on the same predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from medfm.errors import ConfigError, InputError
from medfm.metrics import classification as C
from medfm.results import MetricValue


def _binary(seed: int, n: int = 120, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(int)
    p = np.clip(0.25 * y + rng.random(n) * 0.75, 0, 1)
    if ties:
        p = np.round(p, 1)
    return y, p


def _multiclass(seed: int, n: int = 150, c: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, p


def _multilabel(seed: int, n: int = 100, c: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.4).astype(int)
    p = np.clip(0.3 * y + 0.7 * rng.random((n, c)), 0, 1)
    return y, p


def _ece_torchmetrics_multiclass(y: np.ndarray, p: np.ndarray) -> float:
    import torch
    from torchmetrics.functional.classification import multiclass_calibration_error

    return float(multiclass_calibration_error(torch.tensor(p, dtype=torch.float64), torch.tensor(y),
                                              num_classes=p.shape[1], n_bins=15, norm="l1"))


@pytest.mark.parametrize("ties", [False, True])
def test_binary_values_equal_sklearn(ties: bool) -> None:
    y, p = _binary(0, ties=ties)
    m = C.compute_metrics(y, p, "binary", n_boot=0)
    pred = (p > 0.5).astype(int)
    assert m["auroc"].value == skm.roc_auc_score(y, p)
    assert m["accuracy"].value == skm.accuracy_score(y, pred)
    assert m["balanced_accuracy"].value == skm.balanced_accuracy_score(y, pred)
    assert m["f1"].value == skm.f1_score(y, pred, average="macro")
    p2 = np.stack([1 - p, p], 1)
    assert m["ece"].value == pytest.approx(_ece_torchmetrics_multiclass(y, p2), abs=1e-6)  # torchmetrics bins in float32
    assert m["auroc"].ci_low is None  # n_boot=0: no interval
    # (N, 2) input gives the same numbers as (N,)
    assert C.compute_metrics(y, p2, "binary", n_boot=0) == m


def test_multiclass_and_ordinal_equal_sklearn() -> None:
    y, p = _multiclass(1)
    m = C.compute_metrics(y, p, "ordinal", n_boot=0)
    pred = p.argmax(1)
    assert m["auroc"].value == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-12)
    assert m["accuracy"].value == skm.accuracy_score(y, pred)
    assert m["balanced_accuracy"].value == skm.balanced_accuracy_score(y, pred)
    assert m["f1"].value == skm.f1_score(y, pred, average="macro")
    assert m["qwk"].value == pytest.approx(skm.cohen_kappa_score(y, pred, weights="quadratic"), abs=1e-12)
    assert m["ece"].value == pytest.approx(_ece_torchmetrics_multiclass(y, p), abs=1e-6)  # torchmetrics bins in float32
    assert "qwk" not in C.compute_metrics(y, p, "multiclass", n_boot=0)


def test_multilabel_equals_sklearn_and_torchmetrics() -> None:
    import torch
    from torchmetrics.functional.classification import binary_calibration_error

    y, p = _multilabel(2)
    m = C.compute_metrics(y, p, "multilabel", n_boot=0)
    pred = (p > 0.5).astype(int)
    assert m["auroc"].value == skm.roc_auc_score(y, p, average="macro")
    assert m["accuracy"].value == pytest.approx(1 - skm.hamming_loss(y, pred), abs=1e-12)
    assert m["f1"].value == skm.f1_score(y, pred, average="macro")
    bal = np.mean([skm.balanced_accuracy_score(y[:, j], pred[:, j]) for j in range(y.shape[1])])
    assert m["balanced_accuracy"].value == pytest.approx(bal, abs=1e-12)
    tm = binary_calibration_error(torch.tensor(p.ravel()), torch.tensor(y.ravel()), n_bins=15, norm="l1")
    assert m["ece"].value == pytest.approx(float(tm), abs=1e-6)  # torchmetrics bins in float32


@pytest.mark.parametrize("seed", range(6))
def test_fast_bootstrap_functions_equal_reference(seed: int) -> None:
    """The numpy functions used on resamples give the sklearn values, ties and all."""
    cases = [("binary", *_binary(seed, n=40, ties=True)), ("ordinal", *_multiclass(seed, n=50, c=5)),
             ("multilabel", *_multilabel(seed, n=30, c=4))]
    for task, y, p in cases:
        yy, ss = C.prepare(y, p, task)
        ref = C._reference_values(yy, ss, task)
        for name, fn in C.fast_metric_fns(task).items():
            assert fn(yy, ss) == pytest.approx(ref[name], abs=1e-12), (task, name)


def test_class_absent_from_test_labels() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50)  # class 3 of 4 never occurs
    p = rng.dirichlet(np.ones(4), 50)
    yy, ss = C.prepare(y, p, "ordinal")
    ref = C._reference_values(yy, ss, "ordinal")
    assert math.isnan(ref["auroc"])
    for name, fn in C.fast_metric_fns("ordinal").items():
        assert fn(yy, ss) == pytest.approx(ref[name], abs=1e-12, nan_ok=True), name
    assert C.compute_metrics(y, p, "ordinal", n_boot=20)["auroc"].ci_low is None


def test_ci_equals_direct_bootstrap_of_sklearn_auroc() -> None:
    y, p = _binary(3, n=60)
    m = C.compute_metrics(y, p, "binary", n_boot=200, seed=11)
    rng = np.random.default_rng(11)
    groups = [np.flatnonzero(y == v) for v in np.unique(y)]
    vals = []
    for _ in range(200):
        idx = np.concatenate([g[rng.integers(0, len(g), size=len(g))] for g in groups])
        vals.append(skm.roc_auc_score(y[idx], p[idx]))
    lo, hi = np.percentile(vals, [2.5, 97.5])
    assert m["auroc"].ci_low == pytest.approx(lo, abs=1e-12)
    assert m["auroc"].ci_high == pytest.approx(hi, abs=1e-12)


def test_cis_contain_value_and_are_deterministic() -> None:
    y, p = _multiclass(4, n=200)
    a = C.compute_metrics(y, p, "ordinal", n_boot=200, seed=0)
    assert a == C.compute_metrics(y, p, "ordinal", n_boot=200, seed=0)
    assert a != C.compute_metrics(y, p, "ordinal", n_boot=200, seed=1)
    for name, v in a.items():
        assert isinstance(v, MetricValue)
        assert v.ci_low <= v.value <= v.ci_high, name
    assert set(a) <= set(C.HIGHER_IS_BETTER)
    assert C.HIGHER_IS_BETTER["ece"] is False and C.HIGHER_IS_BETTER["auroc"] is True


def test_undefined_auroc_is_nan_without_ci_and_skips_are_counted() -> None:
    y = np.zeros(10, dtype=int)
    m = C.compute_metrics(y, np.linspace(0.1, 0.9, 10), "binary", n_boot=50)
    assert math.isnan(m["auroc"].value) and m["auroc"].ci_low is None
    assert m["accuracy"].ci_low is not None
    # a rare label: many unstratified multilabel resamples have no positive for it
    y, p = _multilabel(5, n=40, c=2)
    y[:, 1] = 0
    y[0, 1] = 1
    _, skipped = C.compute_metrics_detailed(y, p, "multilabel", n_boot=100, seed=0)
    assert skipped["auroc"] > 0 and skipped["accuracy"] == 0


def test_bad_inputs_are_refused_clearly() -> None:
    y, p = _binary(0, n=20)
    with pytest.raises(ConfigError, match="unknown classification task"):
        C.compute_metrics(y, p, "regression")
    with pytest.raises(InputError, match="labels but"):
        C.compute_metrics(y[:10], p, "binary")
    with pytest.raises(InputError, match="probabilities"):
        C.compute_metrics(y, p * 3, "binary")
    with pytest.raises(InputError, match="sum to 1"):
        C.compute_metrics(y, np.stack([p, p], 1), "binary")
    with pytest.raises(InputError, match="no samples"):
        C.compute_metrics(y[:0], p[:0], "binary")
    with pytest.raises(InputError, match=r"labels must be in \[0, 2\)"):
        C.compute_metrics(y + 1, p, "binary")
    with pytest.raises(InputError, match="NaN"):
        C.compute_metrics(y, np.where(y > 0, np.nan, p), "binary")
    with pytest.raises(InputError, match=r"\(N, C\)"):
        C.compute_metrics(y, p, "multilabel")


def test_roc_points_and_reliability_bins() -> None:
    y, p = _binary(6, n=500)
    roc = C.roc_points(y, p, label_names=("benign", "malignant"), max_points=50)
    (curve,) = roc["curves"]
    assert curve["name"] == "malignant" and len(curve["fpr"]) <= 50
    assert (curve["fpr"][0], curve["tpr"][0], curve["fpr"][-1], curve["tpr"][-1]) == (0.0, 0.0, 1.0, 1.0)
    assert curve["auroc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert np.all(np.diff(curve["fpr"]) >= 0)
    rel = C.reliability_bins(y, p)
    assert sum(rel["count"]) == 500 and len(rel["bin_edges"]) == 16
    assert rel["ece"] == pytest.approx(C.compute_metrics(y, p, "binary", n_boot=0)["ece"].value)
    ym, pm = _multiclass(7, c=3)
    assert len(C.roc_points(ym, pm)["curves"]) == 3
    assert C.reliability_bins(ym, pm)["task"] == "multiclass"


def test_point_metric_for_model_selection() -> None:
    y, p = _binary(8)
    assert C.point_metric("auroc", y, p, "binary") == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    with pytest.raises(ConfigError, match="unknown metric"):
        C.point_metric("qwk", y, p, "binary")
    assert C.metric_names("ordinal")[-1] == "qwk"
