"""Card-derived preprocessing: scaling, channels, geometry, refusal of wrong inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from medfm.errors import InputError
from medfm.models.card import Preprocess
from medfm.models.transforms import geometry, prepare_batch, prepare_one

PLAIN = Preprocess(size=(8, 8), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def test_uint8_scaled_by_255_and_gray_replicated() -> None:
    img = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    x = prepare_one(img, PLAIN)
    assert x.shape == (3, 8, 8)
    np.testing.assert_allclose(x[0].numpy(), img / 255.0, rtol=1e-6)
    assert torch.equal(x[0], x[2])


def test_mean_std_applied_per_channel() -> None:
    pp = Preprocess(size=(4, 4), mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    x = prepare_one(np.full((3, 4, 4), 255, dtype=np.uint8), pp)
    np.testing.assert_allclose(x[:, 0, 0].numpy(), [1.0, 3.0, 1.0], rtol=1e-6)


def test_non_uint8_minmax_and_window() -> None:
    img = np.linspace(-1000, 3000, 64, dtype=np.float32).reshape(8, 8)
    x = prepare_one(img, PLAIN)
    assert float(x.min()) == 0.0 and float(x.max()) == pytest.approx(1.0)
    ct = Preprocess(size=(8, 8), channels=1, mean=(0.0,), std=(1.0,), window=(40.0, 400.0))
    y = prepare_one(img, ct)[0].numpy()
    expected = np.clip((img - (40 - 200)) / 400.0, 0, 1)
    np.testing.assert_allclose(y, expected, atol=1e-6)


def test_resize_matches_torchvision() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((3, 20, 30), dtype=np.float32)
    pp = Preprocess(size=(16, 16), mean=(0.0,) * 3, std=(1.0,) * 3, scale="minmax")
    ours = prepare_one(img, pp)
    t = torch.from_numpy(img)
    t = (t - t.min()) / (t.max() - t.min())
    ref = TF.resize(t, [16, 16], interpolation=TF.InterpolationMode.BICUBIC, antialias=True).clamp(0, 1)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_shortest_crop_and_longest_pad_geometry() -> None:
    crop = Preprocess(size=(32, 32), resize="shortest_crop", crop_size=(28, 28))
    assert prepare_one(np.zeros((40, 80), np.uint8), crop).shape == (3, 28, 28)
    pad = Preprocess(size=(64, 64), resize="longest_pad", interpolation="bilinear")
    x = prepare_one(np.full((32, 16), 255, np.uint8), pad)
    assert x.shape == (3, 64, 64)
    geo = geometry((32, 16), pad)
    assert geo.valid_hw == (64, 32) and geo.scale_yx == (2.0, 2.0)
    assert torch.all(x[:, :, 32:] == 0)  # padding after normalisation is zero, as in SAM
    assert torch.all(x[:, :, :32] != 0)


def test_pad_square_keeps_aspect() -> None:
    pp = Preprocess(size=(8, 8), mean=(0.0,) * 3, std=(1.0,) * 3, pad_square=True)
    x = prepare_one(np.full((4, 8), 255, np.uint8), pp)
    assert torch.all(x[:, 4:] == 0) and torch.all(x[:, :4] > 0.99)


def test_channel_conversions() -> None:
    rgba = np.full((4, 8, 8), 255, np.uint8)
    assert prepare_one(rgba, PLAIN).shape == (3, 8, 8)
    gray = Preprocess(size=(8, 8), channels=1, mean=(0.0,), std=(1.0,))
    rgb = np.stack([np.full((8, 8), v, np.uint8) for v in (255, 0, 0)])
    assert prepare_one(rgb, gray)[0, 0, 0].item() == pytest.approx(0.299, abs=1e-6)


@pytest.mark.parametrize(
    "shape, why",
    [((2, 8, 8), "2 channel"), ((10, 8, 8), "3D volume"), ((8, 8, 3), "channel-last"), ((1, 1, 8, 8), "4D")],
)
def test_wrong_inputs_raise_input_error(shape: tuple[int, ...], why: str) -> None:
    with pytest.raises(InputError) as err:
        prepare_one(np.zeros(shape, np.uint8), PLAIN)
    assert "image" in str(err.value)


def test_batch_of_volumes_refused() -> None:
    with pytest.raises(InputError, match="3D volumes"):
        prepare_batch(np.zeros((2, 1, 4, 8, 8), np.uint8), PLAIN)
    with pytest.raises(InputError, match="3D volume"):
        prepare_batch(np.zeros((2, 16, 8, 8), np.uint8), PLAIN)


def test_deterministic_and_empty() -> None:
    img = np.random.default_rng(1).integers(0, 255, (3, 13, 17), dtype=np.uint8)
    pp = Preprocess(size=(16, 16))
    assert torch.equal(prepare_one(img, pp), prepare_one(img, pp))
    assert prepare_batch([], pp).shape == (0, 3, 16, 16)
