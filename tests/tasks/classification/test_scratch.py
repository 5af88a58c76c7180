"""ResNet-18 from scratch: learns a synthetic signal, restores the best-val epoch, BreastMNIST beats chance;
the cheap extras (flip TTA, weight EMA, label smoothing) behave and serialise."""

from __future__ import annotations

import numpy as np
import pytest

from medfm._config import from_dict, to_dict
from medfm.errors import ConfigError
from medfm.metrics.classification import compute_metrics, point_metric
from medfm.tasks.classification import PROTOCOLS, ImageSplits
from medfm.tasks.classification._train import WeightEma, predict_proba
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
    small3d = build_resnet18(1, 2, 3, 28)
    assert small3d.conv1.kernel_size == (3, 3, 3) and small3d.conv1.stride == (1, 1, 1) and small3d.no_max_pool
    big3d = build_resnet18(1, 2, 3, 64)  # the ImageNet stem strides 2, then max-pools: 64^3 -> 16^3 into layer1
    assert big3d.conv1.kernel_size == (7, 7, 7) and big3d.conv1.stride == (2, 2, 2)
    with torch.no_grad():
        assert big3d.layer1(big3d.maxpool(big3d.conv1(torch.zeros(1, 1, 64, 64, 64)))).shape[2:] == (16, 16, 16)
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


def _to_tensor(x: np.ndarray):
    import torch

    return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)


def test_tta_is_a_no_op_for_flip_invariant_models_and_averages_otherwise() -> None:
    import torch

    torch.manual_seed(0)
    x = np.random.default_rng(0).random((5, 1, 6, 6)).astype(np.float32)
    pooled = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(1, 3))
    plain = predict_proba(pooled, _to_tensor, x, "multiclass", 2, "cpu", None)
    np.testing.assert_allclose(predict_proba(pooled, _to_tensor, x, "multiclass", 2, "cpu", None, tta=True), plain, atol=1e-6)
    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3))
    a = predict_proba(linear, _to_tensor, x, "multiclass", 2, "cpu", None)
    b = predict_proba(linear, _to_tensor, x[..., ::-1], "multiclass", 2, "cpu", None)
    tta = predict_proba(linear, _to_tensor, x, "multiclass", 2, "cpu", None, tta=True)
    assert not np.allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(tta, (a + b) / 2, atol=1e-6)


def test_eval_batches_are_capped_by_input_size(monkeypatch) -> None:
    import torch

    from medfm.tasks.classification import _train

    monkeypatch.setattr(_train, "EVAL_BATCH_ELEMENTS", 2 * 4 * 4 * 4)  # two 4^3 volumes per batch
    seen: list[int] = []
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))

    def forward(t):
        seen.append(int(t.shape[0]))
        return net(t)

    x = np.random.default_rng(0).random((5, 1, 4, 4, 4)).astype(np.float32)
    capped = predict_proba(forward, _to_tensor, x, "binary", 256, "cpu", None)
    assert seen == [2, 2, 1]
    with torch.no_grad():
        np.testing.assert_allclose(capped, torch.softmax(net(_to_tensor(x)), 1).numpy(), atol=1e-6)


def test_weight_ema_tracks_a_lagged_average_and_swaps_back() -> None:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    keep = set(net.state_dict())
    ema = WeightEma(net, 0.5, keep)
    w0 = net[0].weight.detach().clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(3):
        loss = net(torch.randn(8, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update()
    raw = net[0].weight.detach().clone()
    shadow = ema.shadow["0.weight"]
    assert not torch.allclose(shadow, raw) and not torch.allclose(shadow, w0)
    assert ema.shadow["1.num_batches_tracked"] == net[1].num_batches_tracked == 3
    with ema.swapped():
        assert torch.equal(net[0].weight, shadow)
    assert torch.equal(net[0].weight, raw)


def test_ema_and_tta_run_keeps_the_validated_weights(make_images) -> None:
    data = make_images(n=(32, 16, 16), size=8)
    cfg = ScratchConfig(epochs=2, batch_size=16, tta=True, ema_decay=0.9, label_smoothing=0.1)
    pred = PROTOCOLS.get("scratch").run(data, cfg, seed=0)
    assert pred.info["tta"] is True and pred.info["ema_decay"] == 0.9
    # the val scores come from the kept EMA weights, with TTA, exactly as validated during training
    assert point_metric("auroc", data.val_y, pred.val_scores, "binary") == pytest.approx(pred.info["best_val_auroc"], abs=1e-9)


def test_extras_serialise_and_are_checked() -> None:
    cfg = ScratchConfig(tta=True, ema_decay=0.95, label_smoothing=0.1)
    assert from_dict(ScratchConfig, to_dict(cfg)) == cfg
    assert from_dict(ScratchConfig, {"ema_decay": None}).ema_decay is None
    with pytest.raises(ConfigError, match="ema_decay"):
        ScratchConfig(ema_decay=1.0)
    with pytest.raises(ConfigError, match="label_smoothing"):
        ScratchConfig(label_smoothing=1.0)


def test_non_finite_loss_stops_training_with_the_step_named() -> None:
    """A loss that turns NaN (e.g. bf16 overflow) is an error, never a silently untrained model."""
    import torch

    from medfm.errors import TrainingDivergedError
    from medfm.tasks.classification._train import fit

    net = torch.nn.Linear(4, 2)
    calls = {"n": 0}

    def forward(x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        out = net(x)
        return out * float("nan") if calls["n"] >= 3 else out

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)).astype(np.float32), np.arange(16) % 2
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(TrainingDivergedError, match=r"epoch 1, batch 3"):
        fit(net, forward, torch.as_tensor, (x, y), (x, y), "binary", opt, lambda e: 1.0, epochs=2,
            batch_size=4, seed=0, device="cpu", amp_dtype=None)
