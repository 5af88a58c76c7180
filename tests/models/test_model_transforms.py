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


def test_unit_rule_minmaxes_out_of_range_values_and_window_rule() -> None:
    img = np.linspace(-1000, 3000, 64, dtype=np.float32).reshape(8, 8)
    x = prepare_one(img, PLAIN)
    assert float(x.min()) == 0.0 and float(x.max()) == pytest.approx(1.0)
    ct = Preprocess(size=(8, 8), channels=1, mean=(0.0,), std=(1.0,), intensity="window", window=(40.0, 400.0))
    y = prepare_one(img, ct)[0].numpy()
    expected = np.clip((img - (40 - 200)) / 400.0, 0, 1)
    np.testing.assert_allclose(y, expected, atol=1e-6)


def test_float_already_in_unit_range_is_not_stretched() -> None:
    img = np.linspace(0.2, 0.6, 64, dtype=np.float32).reshape(8, 8)
    for rule in ("unit", "dtype_range"):
        pp = Preprocess(size=(8, 8), channels=1, mean=(0.0,), std=(1.0,), intensity=rule)
        np.testing.assert_allclose(prepare_one(img, pp)[0].numpy(), img, atol=1e-6)


def test_dtype_range_divides_12_bit_uint16_by_the_dtype_range() -> None:
    img = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 64)  # 12-bit values 0..4032 stored in uint16
    pp = Preprocess(size=(8, 8), channels=1, mean=(0.0,), std=(1.0,), intensity="dtype_range")
    np.testing.assert_allclose(prepare_one(img, pp)[0].numpy(), img / 65535.0, rtol=1e-6)
    signed = np.array([[-32768, 0], [1, 32767]], dtype=np.int16)
    pp2 = Preprocess(size=(2, 2), channels=1, mean=(0.0,), std=(1.0,), intensity="dtype_range")
    np.testing.assert_allclose(prepare_one(signed, pp2)[0].numpy(), (signed + 32768.0) / 65535.0, rtol=1e-6)


def test_unknown_intensity_rule_and_window_without_rule_are_refused() -> None:
    with pytest.raises(ValueError, match="intensity"):
        Preprocess(intensity="percentile")
    with pytest.raises(ValueError, match="window"):
        Preprocess(window=(40.0, 400.0))


def test_minmax_rule_scales_after_the_resize_as_medsam_does() -> None:
    """MedSAM_Inference.py: resize to 1024 first, then (x - min) / (max - min)."""
    img = np.zeros((32, 32), np.float32)
    img[15:17, 15:17] = 500.0  # a small bright spot: antialiased downsampling lowers its peak
    img[0, 0] = -20.0
    pp = Preprocess(size=(8, 8), channels=1, mean=(0.0,), std=(1.0,), intensity="minmax")
    ours = prepare_one(img, pp)[0]
    t = TF.resize(torch.from_numpy(img)[None], [8, 8], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)[0]
    ref = (t - t.min()) / (t.max() - t.min())
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert float(ours.max()) == pytest.approx(1.0) and float(ours.min()) == 0.0


def test_ct_window_applies_to_ct_inputs_only() -> None:
    """MedSAM's pre_CT_MR.py: CT is clipped to level 40 / width 400 before anything else."""
    hu = np.full((8, 8), 40.0, np.float32)  # soft tissue at the window centre
    hu[0, 0], hu[7, 7] = -1000.0, 2000.0  # air and bone outside the window
    pp = Preprocess(size=(8, 8), channels=1, mean=(0.0,), std=(1.0,), intensity="minmax", ct_window=(40.0, 400.0))
    ct = prepare_one(hu, pp, modality="CT")[0].numpy()
    clipped = np.clip(hu, -160.0, 240.0)
    np.testing.assert_allclose(ct, (clipped - clipped.min()) / (clipped.max() - clipped.min()), atol=1e-6)
    assert ct[3, 3] == pytest.approx(0.5)
    other = prepare_one(hu, pp, modality="MR")[0].numpy()  # not CT: plain min-max
    assert other[3, 3] == pytest.approx(1040.0 / 3000.0)


def test_shortest_side_floors_the_long_side_like_torchvision_and_hf() -> None:
    from transformers.image_transforms import get_resize_output_image_size

    from medfm.models.transforms import shortest_side_size

    for hw in [(300, 451), (451, 300), (333, 500), (225, 226), (97, 1001)]:
        tv = tuple(TF.resize(torch.zeros(1, *hw), 256).shape[-2:])
        hf = tuple(get_resize_output_image_size(np.zeros((*hw, 3)), 256, default_to_square=False))
        assert shortest_side_size(hw, 256) == tv == hf, hw
    assert shortest_side_size((300, 451), 256) == (256, 384)  # int(x * s + 0.5) gave 385


def test_shortest_crop_matches_torchvision_resize_then_centre_crop() -> None:
    """DINOv2 / RAD-DINO / CLIP / PubMedCLIP / BiomedCLIP recipe: Resize(short) + CenterCrop."""
    img = np.random.default_rng(3).random((3, 30, 46), dtype=np.float32)  # 46 * 16 / 30 = 24.53 -> 24
    pp = Preprocess(size=(16, 16), resize="shortest_crop", crop_size=(12, 12), mean=(0.0,) * 3, std=(1.0,) * 3)
    t = TF.resize(torch.from_numpy(img), 16, interpolation=TF.InterpolationMode.BICUBIC, antialias=True).clamp(0, 1)
    assert tuple(t.shape[-2:]) == (16, 24)
    ref = TF.center_crop(t, [12, 12])
    torch.testing.assert_close(prepare_one(img, pp), ref, atol=1e-5, rtol=1e-5)


def test_resize_matches_torchvision() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((3, 20, 30), dtype=np.float32)
    img = (img - img.min()) / (img.max() - img.min())
    pp = Preprocess(size=(16, 16), mean=(0.0,) * 3, std=(1.0,) * 3)
    ours = prepare_one(img, pp)
    t = torch.from_numpy(img)
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


def test_pad_square_is_centred_as_medsiglip_serving_does() -> None:
    """Google-Health/medsiglip predictor.py ``_zero_pad_image_to_square``: half the padding
    before (floor), the rest after."""
    pp = Preprocess(size=(8, 8), mean=(0.0,) * 3, std=(1.0,) * 3, pad_square=True)
    x = prepare_one(np.full((4, 8), 255, np.uint8), pp)
    assert torch.all(x[:, :2] == 0) and torch.all(x[:, 6:] == 0) and torch.all(x[:, 2:6] > 0.99)
    ref = np.pad(np.full((3, 5), 1.0, np.float32), ((1, 1), (0, 0)))  # 3x5: 2 rows, 1 above, 1 below
    pp5 = Preprocess(size=(5, 5), channels=1, mean=(0.0,), std=(1.0,), pad_square=True)
    np.testing.assert_array_equal(prepare_one(np.full((3, 5), 255, np.uint8), pp5)[0].numpy(), ref)
    geo = geometry((4, 8), pp)
    assert geo.valid_hw == (4, 8) and geo.offset_yx == (-2.0, 0.0)


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
