"""knn, linear_probe and prototype on separable synthetic embeddings and on BreastMNIST pixels."""

from __future__ import annotations

import numpy as np
import pytest

from medfm.errors import ConfigError, InputError
from medfm.metrics.classification import compute_metrics, point_metric
from medfm.tasks.classification import PROTOCOLS, FeatureSplits
from medfm.tasks.classification.knn import KNNConfig, knn_scores
from medfm.tasks.classification.linear_probe import LinearProbeConfig
from medfm.tasks.classification.prototype import PrototypeConfig

FEATURE_PROTOCOLS = ("knn", "linear_probe", "prototype")


@pytest.mark.parametrize("name", FEATURE_PROTOCOLS)
@pytest.mark.parametrize("shots", [None, 2])
def test_separable_data_is_learned(name: str, shots: int | None, features: FeatureSplits) -> None:
    proto = PROTOCOLS.get(name)
    pred = proto.run(features, proto.make_config(), seed=0, shots=shots)
    assert pred.test_scores.shape == (60, 3) and pred.val_scores.shape == (40, 3)
    np.testing.assert_allclose(pred.test_scores.sum(1), 1.0, atol=1e-9)
    assert pred.info["trained"] is True
    assert pred.info["n_train"] == (120 if shots is None else 6)
    assert point_metric("auroc", pred.test_y, pred.test_scores, "multiclass") > 0.95
    again = proto.run(features, proto.make_config(), seed=0, shots=shots)
    np.testing.assert_array_equal(pred.test_scores, again.test_scores)


@pytest.mark.parametrize("name", FEATURE_PROTOCOLS)
def test_multilabel(name: str, make_features) -> None:
    data = make_features(seed=1, task="multilabel", n_classes=3)
    proto = PROTOCOLS.get(name)
    pred = proto.run(data, proto.make_config(), seed=0)
    assert pred.test_scores.shape == (60, 3)
    assert compute_metrics(pred.test_y, pred.test_scores, "multilabel", n_boot=0)["auroc"].value > 0.9
    with pytest.raises(ConfigError, match="multilabel"):
        proto.run(data, proto.make_config(), seed=0, shots=4)


def test_knn_votes_match_a_direct_computation() -> None:
    rng = np.random.default_rng(0)
    tr = rng.normal(size=(30, 5))
    tr /= np.linalg.norm(tr, axis=1, keepdims=True)
    y = rng.integers(0, 3, 30)
    q = tr[:4] + 0.01
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    got = knn_scores(tr, y, q, k=5, n_classes=3, task="multiclass", vote="majority")
    for i in range(4):
        nbr = np.argsort(-(tr @ q[i]))[:5]
        np.testing.assert_allclose(got[i], np.bincount(y[nbr], minlength=3) / 5)


def test_knn_picks_k_on_validation(features: FeatureSplits) -> None:
    pred = PROTOCOLS.get("knn").run(features, KNNConfig(k_grid=(1, 5, 500)), seed=0)
    assert pred.info["k"] in (1, 5, 120)  # 500 is capped at the training-set size
    assert set(pred.info["val_auroc_by_k"]) == {"1", "5", "120"}
    fixed = PROTOCOLS.get("knn").run(features, KNNConfig(k=7, k_grid=()), seed=0)
    assert fixed.info["k"] == 7


def test_linear_probe_chooses_c_on_validation_and_equals_sklearn(features: FeatureSplits) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    cfg = LinearProbeConfig(c_grid=(0.01, 1.0))
    pred = PROTOCOLS.get("linear_probe").run(features, cfg, seed=0)
    c = pred.info["C"]
    assert c in (0.01, 1.0) and set(pred.info["val_auroc_by_C"]) == {"0.01", "1.0"}
    x_tr, x_te = features.train_x.astype(np.float64), features.test_x.astype(np.float64)
    scaler = StandardScaler().fit(x_tr)
    ref = LogisticRegression(C=c, max_iter=2000, random_state=0).fit(scaler.transform(x_tr), features.train_y)
    np.testing.assert_allclose(pred.test_scores, ref.predict_proba(scaler.transform(x_te)), atol=1e-10)


def test_prototype_temperature_changes_calibration_not_ranking(features: FeatureSplits) -> None:
    a = PROTOCOLS.get("prototype").run(features, PrototypeConfig(temperature=0.05, temperature_grid=()), seed=0)
    b = PROTOCOLS.get("prototype").run(features, PrototypeConfig(temperature=1.0, temperature_grid=()), seed=0)
    np.testing.assert_array_equal(a.test_scores.argmax(1), b.test_scores.argmax(1))
    assert a.test_scores.max(1).mean() > b.test_scores.max(1).mean()
    chosen = PROTOCOLS.get("prototype").run(features, PrototypeConfig(), seed=0)
    by_t = chosen.info["val_nll_by_temperature"]
    assert by_t[repr(chosen.info["temperature"])] == min(by_t.values())


def test_k_shot_errors(features: FeatureSplits) -> None:
    with pytest.raises(ConfigError, match="64-shot needs 64"):
        PROTOCOLS.get("linear_probe").run(features, LinearProbeConfig(), seed=0, shots=64)


@pytest.mark.parametrize("name", FEATURE_PROTOCOLS)
def test_class_missing_from_training_split(name: str, features: FeatureSplits) -> None:
    keep = features.train_y != 2
    data = FeatureSplits(features.train_x[keep], features.train_y[keep], features.val_x, features.val_y,
                         features.test_x, features.test_y, features.label_names, features.task)
    with pytest.raises(InputError, match=r"class\(es\) \[2\] have no training examples"):
        PROTOCOLS.get(name).run(data, PROTOCOLS.get(name).make_config(), seed=0)
    with pytest.raises(ConfigError, match=r"class\(es\) \[2\] have no training examples"):
        PROTOCOLS.get(name).run(data, PROTOCOLS.get(name).make_config(), seed=0, shots=1)


def test_linear_probe_on_breastmnist_pixels(breastmnist_npz: dict) -> None:
    d = breastmnist_npz

    def flat(k: str) -> np.ndarray:
        return d[f"{k}_images"].reshape(len(d[f"{k}_images"]), -1).astype(np.float32) / 255.0

    data = FeatureSplits(flat("train"), d["train_labels"], flat("val"), d["val_labels"], flat("test"), d["test_labels"],
                         ("malignant", "normal or benign"), "binary")
    pred = PROTOCOLS.get("linear_probe").run(data, LinearProbeConfig(c_grid=(1e-3, 1e-2, 1e-1)), seed=0)
    m = compute_metrics(pred.test_y, pred.test_scores, "binary", n_boot=200)
    assert m["auroc"].value > 0.75
    assert m["auroc"].ci_low < m["auroc"].value < m["auroc"].ci_high
