"""Split containers refuse bad input; k-shot subsampling is exact, seeded and nested."""

from __future__ import annotations

import numpy as np
import pytest

from medfm._config import from_dict, to_dict
from medfm.errors import ConfigError, InputError
from medfm.tasks.classification import FEW_SHOT_K, PROTOCOLS, FeatureSplits, ImageSplits, subsample_shots
from medfm.tasks.classification.base import Protocol


def _feature_args(n_val: int = 4) -> dict:
    rng = np.random.default_rng(0)
    return dict(
        train_x=rng.normal(size=(6, 3)), train_y=np.array([0, 1, 0, 1, 0, 1]),
        val_x=rng.normal(size=(n_val, 3)), val_y=np.arange(n_val) % 2,
        test_x=rng.normal(size=(4, 3)), test_y=np.array([[0], [1], [0], [1]]),
        label_names=("a", "b"), task="binary",
    )


def test_feature_splits_normalise_and_validate() -> None:
    fs = FeatureSplits(**_feature_args())
    assert fs.test_y.shape == (4,) and fs.n_classes == 2
    with pytest.raises(InputError, match="the val split is empty"):
        FeatureSplits(**_feature_args(n_val=0))
    args = _feature_args()
    args["train_y"] = np.array([0, 1, 2, 0, 1, 0])
    with pytest.raises(InputError, match=r"integers in \[0, 2\)"):
        FeatureSplits(**args)
    args = _feature_args()
    args["test_x"] = np.ones((4, 5))
    with pytest.raises(InputError, match="widths differ"):
        FeatureSplits(**args)
    args = _feature_args()
    args["task"] = "regression"
    with pytest.raises(ConfigError, match="unknown task"):
        FeatureSplits(**args)
    args = _feature_args()
    args["val_x"] = np.full((4, 3), np.nan)
    with pytest.raises(InputError, match="NaN"):
        FeatureSplits(**args)


def test_image_splits_need_a_channel_axis() -> None:
    x = np.zeros((4, 8, 8), dtype=np.uint8)
    y = np.array([0, 1, 0, 1])
    with pytest.raises(InputError, match="add a channel axis"):
        ImageSplits(x, y, x, y, x, y, ("a", "b"), "binary")
    ok = ImageSplits(x[:, None], y, x[:, None], y, x[:, None], y, ("a", "b"), "binary")
    assert ok.spatial_dims == 2
    vol = np.zeros((4, 1, 4, 8, 8), dtype=np.float32)
    assert ImageSplits(vol, y, vol, y, vol, y, ("a", "b"), "binary").spatial_dims == 3


def test_subsample_shots_counts_seed_and_nesting() -> None:
    y = np.repeat([0, 1, 2], [10, 7, 40])
    for k in (1, 4, 7):
        idx = subsample_shots(y, k, seed=3)
        assert np.bincount(y[idx]).tolist() == [k, k, k]
        assert np.all(np.diff(idx) > 0)
    assert np.array_equal(subsample_shots(y, 4, seed=3), subsample_shots(y, 4, seed=3))
    assert not np.array_equal(subsample_shots(y, 4, seed=3), subsample_shots(y, 4, seed=4))
    assert set(subsample_shots(y, 2, seed=5)) <= set(subsample_shots(y, 4, seed=5))
    assert np.array_equal(subsample_shots(y, None, seed=0), np.arange(len(y)))
    assert FEW_SHOT_K == (1, 2, 4, 8, 16, 32, None)


def test_subsample_shots_errors_name_the_class() -> None:
    y = np.repeat([0, 1, 2], [10, 3, 40])
    with pytest.raises(ConfigError, match="8-shot needs 8 .* class 1 has 3"):
        subsample_shots(y, 8, seed=0)
    with pytest.raises(ConfigError, match=r"class\(es\) \[3\] have no training examples"):
        subsample_shots(y, 1, seed=0, n_classes=4)
    with pytest.raises(ConfigError, match="positive integer"):
        subsample_shots(y, 0, seed=0)
    with pytest.raises(ConfigError, match="multilabel"):
        subsample_shots(np.zeros((5, 3)), 1, seed=0)


def test_registry_and_configs_round_trip() -> None:
    assert PROTOCOLS.names() == ["finetune", "knn", "linear_probe", "prototype", "scratch", "zero_shot"]
    needs = {name: PROTOCOLS.get(name).needs for name in PROTOCOLS.names()}
    assert needs == {"finetune": "model+images", "knn": "features", "linear_probe": "features",
                     "prototype": "features", "scratch": "images", "zero_shot": "model+text"}
    for name, proto in PROTOCOLS.items():
        assert isinstance(proto, Protocol)
        cfg = proto.make_config()
        assert from_dict(proto.config_cls, to_dict(cfg)) == cfg, name
    with pytest.raises(ConfigError, match="unknown key"):
        PROTOCOLS.get("knn").make_config({"kk": 3})
    with pytest.raises(ConfigError, match="Did you mean 'linear_probe'"):
        PROTOCOLS.get("linear_prob")
    with pytest.raises(ConfigError, match="vote must be"):
        PROTOCOLS.get("knn").make_config({"vote": "max"})
    assert PROTOCOLS.get("scratch").make_config({"input_size": 224, "epochs": 2}).input_size == 224
