"""ResNet-18 from scratch: learns a synthetic signal, restores the best-val epoch, BreastMNIST beats chance."""

from __future__ import annotations

import numpy as np
import pytest

from medfm.errors import ConfigError
from medfm.metrics.classification import compute_metrics, point_metric
from medfm.tasks.classification import PROTOCOLS, ImageSplits
from medfm.tasks.classification.scratch import ScratchConfig, build_resnet18


def test_learns_bright_square_and_restores_best_epoch(make_images) -> None:
    data = make_images(n=(32, 16, 16), size=8)
    cfg = ScratchConfig(epochs=3, batch_size=16, augment="flip_shift")
    pred = PROTOCOLS.get("scratch").run(data, cfg, seed=0)
    info = pred.info
    assert info["trained"] is True and info["epochs"] == 3 and len(info["history"]) == 3
    assert info["best_epoch"] == 1 + int(np.argmax([h["val_auroc"] for h in info["history"]]))
    # the returned val scores come from the restored best-validation weights
    assert point_metric("auroc", data.val_y, pred.val_scores, "binary") == pytest.approx(info["best_val_auroc"], abs=1e-9)
    assert point_metric("auroc", data.test_y, pred.test_scores, "binary") > 0.8


@pytest.mark.slow
def test_three_d_volumes_and_k_shot(make_images) -> None:
    data = make_images(n=(8, 4, 4), size=8, depth=8)
    pred = PROTOCOLS.get("scratch").run(data, ScratchConfig(epochs=1, batch_size=4), seed=0, shots=2)
    assert pred.test_scores.shape == (4, 2) and pred.info["n_train"] == 4
    with pytest.raises(ConfigError, match="5-shot needs 5"):
        PROTOCOLS.get("scratch").run(data, ScratchConfig(epochs=1), seed=0, shots=5)


def test_architecture_follows_medmnist() -> None:
    import torch

    small = build_resnet18(1, 2, 2, 28)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, torch.nn.Identity)
    big = build_resnet18(3, 5, 2, 224)
    assert big.conv1.kernel_size == (7, 7) and big.fc.out_features == 5
    with pytest.raises(ConfigError, match="input_size"):
        ScratchConfig(input_size="large")


def test_k_shot_errors_before_training(make_images) -> None:
    data = make_images(n=(6, 2, 2), size=8)
    with pytest.raises(ConfigError, match="4-shot needs 4 .* class 0 has 3"):
        PROTOCOLS.get("scratch").run(data, ScratchConfig(epochs=1), seed=0, shots=4)


@pytest.mark.slow
def test_breastmnist_short_run_beats_chance(breastmnist_images: ImageSplits) -> None:
    pred = PROTOCOLS.get("scratch").run(breastmnist_images, ScratchConfig(epochs=4), seed=0)
    m = compute_metrics(pred.test_y, pred.test_scores, "binary", n_boot=200)
    assert m["auroc"].value > 0.6 and m["auroc"].ci_low > 0.5
