"""Cache-the-trunk / train-the-tail helper on a tiny random 3D ResNet (MONAI), in seconds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medfm.errors import ConfigError
from medfm.tasks.classification.cached_tail import (
    TailClassifier,
    TailConfig,
    auroc_from_logits,
    cache_activations,
    predict,
    train_tail,
)


def _tiny_resnet() -> nn.Module:
    from monai.networks.nets import ResNet

    torch.manual_seed(0)
    return ResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=[4, 8, 8, 16], spatial_dims=3,
                  n_input_channels=1, feed_forward=False).eval()


class _Layer4GAP(nn.Module):
    def __init__(self, layer4: nn.Module) -> None:
        super().__init__()
        self.layer4 = layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(x).mean(dim=(2, 3, 4))


def _trunk(net: nn.Module):
    def run(x: torch.Tensor) -> torch.Tensor:
        x = net.maxpool(net.act(net.bn1(net.conv1(x))))
        return net.layer3(net.layer2(net.layer1(x)))
    return run


def _volumes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class 1 = a bright cube in the corner; class 0 = noise only."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.1, (n, 1, 16, 16, 16)).astype(np.float32)
    y = np.arange(n) % 2
    x[y == 1, :, :8, :8, :8] += 1.0
    return x, y


def test_cache_reproduces_the_full_model_and_resumes(tmp_path):
    net = _tiny_resnet()
    x, _ = _volumes(10)
    calls = []

    def pre(b):
        calls.append(len(b))
        return torch.from_numpy(np.asarray(b))

    acts = cache_activations(_trunk(net), x, pre, tmp_path / "c", chunk=4, batch_size=3)
    assert acts.shape[0] == 10 and sum(calls) == 10
    with torch.no_grad():
        full = net(torch.from_numpy(x)).numpy()  # MONAI ResNet: GAP(layer4(...)) without fc
        tail = _Layer4GAP(net.layer4)(torch.from_numpy(acts)).numpy()
    np.testing.assert_allclose(tail, full, rtol=1e-5, atol=1e-6)
    # a finished cache is read back, not recomputed; a lost "all" file is rebuilt from scratch chunks
    again = cache_activations(_trunk(net), x, pre, tmp_path / "c", chunk=4, batch_size=3)
    assert sum(calls) == 10 and np.array_equal(again, acts)
    (tmp_path / "c" / "all.npy").unlink()
    np.save(tmp_path / "c" / "chunk-00000.npy", acts[:4])  # one chunk survives: only the others are redone
    cache_activations(_trunk(net), x, pre, tmp_path / "c", chunk=4, batch_size=3)
    assert sum(calls) == 16


def test_train_tail_learns_and_restores_best(tmp_path):
    net = _tiny_resnet()
    x, y = _volumes(40)
    xv, yv = _volumes(20, seed=1)
    pre = lambda b: torch.from_numpy(np.asarray(b))
    a = cache_activations(_trunk(net), x, pre, tmp_path / "tr", chunk=16)
    av = cache_activations(_trunk(net), xv, pre, tmp_path / "va", chunk=16)
    frozen = {k: v.clone() for k, v in net.layer4.state_dict().items()}
    model = TailClassifier(_Layer4GAP(net.layer4), 16, 2)
    out = train_tail(model, a, y, av, yv, TailConfig(lr=1e-2, head_lr=1e-2, epochs=15, patience=15, batch_size=8))
    assert out["val_auroc"] > 0.9
    assert 1 <= out["best_epoch"] <= out["epochs_run"] <= 15
    # the restored weights are the best epoch's: their val AUROC is the one reported
    from sklearn.metrics import roc_auc_score

    z = predict(model, av)
    assert roc_auc_score(yv, z[:, 1] - z[:, 0]) == pytest.approx(out["val_auroc"])
    # layer4 was trained (partial fine-tuning), but BatchNorm running statistics were kept
    sd = net.layer4.state_dict()
    assert any(not torch.equal(sd[k], frozen[k]) for k in sd if k.endswith("conv1.weight"))
    assert all(torch.equal(sd[k], frozen[k]) for k in sd if k.endswith(("running_mean", "running_var")))


def test_auroc_from_logits_survives_huge_logits():
    y = np.array([0, 1, 0, 1])
    z = np.array([[0, 1e30], [0, 3e30], [0, 2e30], [0, 4e30]], dtype=np.float32)  # softmax: all ties
    assert auroc_from_logits(y, z) == 1.0
    z3 = np.array([[5, 0, 0], [0, 5, 0], [0, 0, 5], [4, 1, 0]], dtype=np.float32)
    assert auroc_from_logits(np.array([0, 1, 2, 0]), z3) == 1.0


def test_train_tail_few_shot_steps_and_bad_input():
    torch.manual_seed(0)
    model = TailClassifier(nn.Flatten(), 4, 2)
    x = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    out = train_tail(model, x, np.array([0, 1]), x, np.array([0, 1]),
                     TailConfig(epochs=2, patience=2, min_steps=5, head_lr=0.1))
    assert out["trainable"] == 10 and out["epochs_run"] == 2
    with pytest.raises(ConfigError):
        train_tail(model, x, np.array([0]), x, np.array([0, 1]), TailConfig())
