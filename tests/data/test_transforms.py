"""MONAI-built transforms: windows, scaling, crop/pad, resampling, augmentation presets."""

from __future__ import annotations

import numpy as np
import pytest

from medfm.data import transforms as T
from medfm.errors import ConfigError
from medfm.io.image import Image


def test_ct_window_maps_hu_to_unit_range() -> None:
    hu = np.array([[-1000.0, -160.0, 40.0, 240.0, 3000.0]], dtype=np.float32)
    out = np.asarray(T.ct_window("soft_tissue")(hu))
    np.testing.assert_allclose(out, [[0.0, 0.0, 0.5, 1.0, 1.0]], atol=1e-6)
    lung = np.asarray(T.window(-600, 1500, out_min=-1, out_max=1)(np.array([[-1350.0, -600.0, 150.0]])))
    np.testing.assert_allclose(lung, [[-1.0, 0.0, 1.0]], atol=1e-6)
    with pytest.raises(ConfigError, match="Did you mean 'lung'"):
        T.ct_window("lugn")
    with pytest.raises(ConfigError):
        T.window(0, 0)


def test_scaling_and_crop_pad() -> None:
    x = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    s = np.asarray(T.scale_intensity()(x))
    assert s.min() == 0.0 and s.max() == 1.0
    n = np.asarray(T.normalize_intensity()(x))
    np.testing.assert_allclose(n.mean(axis=(1, 2)), 0.0, atol=1e-5)
    p = np.asarray(T.scale_percentiles(0, 100)(x))
    assert p.min() == pytest.approx(0.0) and p.max() == pytest.approx(1.0)
    out = np.asarray(T.crop_or_pad((4, 8))(x))
    assert out.shape == (2, 4, 8)
    np.testing.assert_array_equal(out[:, :, 0], 0)  # padded column
    vol = np.zeros((1, 3, 10, 10), np.float32)
    assert np.asarray(T.crop_or_pad((5, 6, 6))(vol)).shape == (1, 5, 6, 6)


def test_resample_to_spacing_linear_ramp() -> None:
    z = np.arange(5, dtype=np.float32)  # value = z index, 2 mm apart
    vol = np.broadcast_to(z[:, None, None], (5, 4, 4))[None].copy()
    img = Image(vol, spacing=(2.0, 1.0, 1.0), origin=(10.0, 0.0, 0.0))
    out = T.resample_to_spacing(img, (1.0, 1.0, 1.0))
    assert out.spatial_shape == (9, 4, 4) and out.spacing == (1.0, 1.0, 1.0)
    assert out.origin == img.origin  # voxel 0 stays where it was
    np.testing.assert_allclose(out.array[0, :, 2, 2], np.arange(9) / 2.0, atol=1e-5)
    mask = Image((vol > 1.5).astype(np.uint8), spacing=(2.0, 1.0, 1.0))
    m = T.resample_to_spacing(mask, (1.0, 1.0, 1.0), mode="nearest")
    assert m.array.dtype == np.uint8 and set(np.unique(m.array).tolist()) == {0, 1}
    with pytest.raises(ConfigError):
        T.resample_to_spacing(img, (1.0, 1.0))


@pytest.mark.parametrize("ndim", [2, 3])
def test_augmentation_is_seeded(ndim: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((1, *([12] * ndim))).astype(np.float32)
    a = np.asarray(T.augmentation(ndim, seed=1, prob=1.0)(x))
    b = np.asarray(T.augmentation(ndim, seed=1, prob=1.0)(x))
    c = np.asarray(T.augmentation(ndim, seed=2, prob=1.0)(x))
    assert a.shape == x.shape
    np.testing.assert_allclose(a, b)
    assert not np.allclose(a, c)
    with pytest.raises(ConfigError):
        T.augmentation(4)


@pytest.mark.parametrize("ndim", [2, 3])
def test_dict_augmentation_moves_image_and_mask_together(ndim: int) -> None:
    shape = (16,) * ndim
    mask = np.zeros((1, *shape), np.float32)
    mask[(slice(None), *[slice(3, 9)] * ndim)] = 1.0
    image = mask * 100.0
    aug = T.augmentation_dict(ndim, seed=0, prob=1.0)
    out = aug({"image": image, "mask": mask})
    m = np.asarray(out["mask"])
    im = np.asarray(out["image"])
    assert set(np.unique(m).tolist()) <= {0.0, 1.0}  # nearest neighbour keeps labels
    assert not np.array_equal(m, mask)  # something moved
    inside = im[m > 0].mean() if (m > 0).any() else 0.0
    outside = im[m == 0].mean()
    assert inside > 50 > outside  # the image moved with its mask
