"""The saved linear head reproduces sklearn's fitted probe and refuses folders that are not one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medfm.errors import InputError
from medfm.tasks.classification.head import LinearHead, head_from_sklearn


def _data(task: str, n: int = 120, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * np.arange(1, d + 1) + 3.0
    if task == "binary":
        y = (x[:, 0] + rng.normal(size=n) > 3).astype(int)
    elif task == "multiclass":
        y = np.digitize(x[:, 1] + rng.normal(size=n), [4.0, 7.0])
    else:
        y = np.stack([(x[:, 0] > 3), (x[:, 2] > 3), (x[:, 0] + x[:, 3] > 6)], axis=1).astype(int)
    return x, y


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_head_matches_sklearn_predict_proba(task: str, tmp_path) -> None:
    from sklearn.preprocessing import StandardScaler

    from medfm.tasks.classification.linear_probe import LinearProbeConfig, _fit

    x, y = _data(task)
    scaler = StandardScaler().fit(x)
    clf = _fit(scaler.transform(x), y, 0.5, LinearProbeConfig(), task, 0)
    names = tuple(f"c{i}" for i in range(2 if task == "binary" else 3))
    head = head_from_sklearn(clf, scaler, x.shape[1], task, names)
    xt, _ = _data(task, n=30, seed=1)
    want = clf.predict_proba(scaler.transform(xt))
    np.testing.assert_allclose(head.predict_proba(xt), want, atol=1e-10)
    head.save(tmp_path, {"encoder": {"id": "x"}})
    back = LinearHead.load(tmp_path)
    assert back.kind == head.kind and back.class_names == names
    np.testing.assert_allclose(back.predict_proba(xt), want, atol=1e-10)
    with pytest.raises(InputError, match="do not fit"):
        back.predict_proba(xt[:, :-1])


def test_load_refuses_what_is_not_a_head(tmp_path) -> None:
    with pytest.raises(InputError, match="not found"):
        LinearHead.load(tmp_path / "missing")
    with pytest.raises(InputError, match="not a trained classifier"):
        LinearHead.load(tmp_path)
    (tmp_path / "head.safetensors").write_bytes(b"junk")
    (tmp_path / "classifier.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InputError, match="not a medfm classifier"):
        LinearHead.load(tmp_path)
    (tmp_path / "classifier.json").write_text("{not json")
    with pytest.raises(InputError, match="not readable JSON"):
        LinearHead.load(tmp_path)
