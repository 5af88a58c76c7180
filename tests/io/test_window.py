"""The one window convention (center +- width / 2 -> [0, 1], clipped) on numpy and torch; presets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import ScaleIntensityRange
from pydicom.dataset import Dataset
from pydicom.pixels import apply_windowing

from medfm.io import WINDOW_PRESETS, apply_window
from medfm.io.window import display_uint8, percentile_range, scale_range, window_range

HU = np.linspace(-1500, 2500, 4001)


@pytest.mark.parametrize("name", sorted(WINDOW_PRESETS))
def test_matches_monai_scale_intensity_range(name: str) -> None:
    """The convention of MONAI, MedSAM's pre_CT_MR.py and Merlin: [c - w/2, c + w/2] -> [0, 1]."""
    center, width = WINDOW_PRESETS[name]
    ref = ScaleIntensityRange(a_min=center - width / 2, a_max=center + width / 2, b_min=0.0, b_max=1.0, clip=True)
    out = apply_window(HU, center, width)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_allclose(out, np.asarray(ref(HU)), atol=1e-6)


@pytest.mark.parametrize("name", sorted(WINDOW_PRESETS))
def test_within_half_a_unit_of_dicom_linear(name: str) -> None:
    """DICOM's LINEAR VOI function (pydicom) shifts by half a stored value: at most 1 / (width - 1)."""
    center, width = WINDOW_PRESETS[name]
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored, ds.PixelRepresentation = 16, 0
    ds.WindowCenter, ds.WindowWidth = center, width
    ds.VOILUTFunction = "LINEAR"
    ref = apply_windowing(HU.copy(), ds) / (2**16 - 1)
    np.testing.assert_allclose(apply_window(HU, center, width), ref, atol=1.0 / (width - 1) + 1e-6)


def test_numpy_and_torch_agree_and_types_are_kept() -> None:
    x = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0])
    out_np = apply_window(x, 40, 400)
    out_t = apply_window(torch.from_numpy(x), 40, 400)
    assert isinstance(out_t, torch.Tensor) and out_np.dtype == np.float32
    np.testing.assert_allclose(out_t.numpy(), out_np, atol=1e-6)
    np.testing.assert_allclose(out_np, [0.0, 0.0, 0.5, 1.0, 1.0])
    assert window_range(40, 400) == (-160.0, 240.0)


def test_constant_range_is_a_step_and_display_helpers() -> None:
    np.testing.assert_array_equal(scale_range(np.array([0.0, 1.0, 2.0]), 1.0, 1.0), [0.0, 0.0, 1.0])
    a = np.arange(101, dtype=np.float32)
    assert percentile_range(a) == pytest.approx((1.0, 99.0))
    assert percentile_range(np.zeros(0)) == (0.0, 1.0)
    np.testing.assert_array_equal(display_uint8(np.array([0.0, 50.0, 100.0]), 0.0, 100.0), [0, 128, 255])


def test_presets_are_the_usual_reading_windows() -> None:
    assert {"lung", "mediastinum", "soft_tissue", "bone", "brain"} <= set(WINDOW_PRESETS)
    assert WINDOW_PRESETS["lung"][0] < 0 < WINDOW_PRESETS["bone"][0]
    assert WINDOW_PRESETS["brain"][1] < WINDOW_PRESETS["soft_tissue"][1] < WINDOW_PRESETS["lung"][1]


def test_bad_width() -> None:
    with pytest.raises(ValueError, match="width"):
        apply_window(np.zeros(3), 0, 0)
