"""apply_window against pydicom's DICOM windowing; the CT presets."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_windowing

from medfm.io import WINDOW_PRESETS, apply_window


@pytest.mark.parametrize("name", sorted(WINDOW_PRESETS))
def test_matches_pydicom_linear_window(name: str) -> None:
    center, width = WINDOW_PRESETS[name]
    hu = np.linspace(-1500, 2500, 4001)
    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsStored, ds.PixelRepresentation = 16, 0
    ds.WindowCenter, ds.WindowWidth = center, width
    ds.VOILUTFunction = "LINEAR"
    # pydicom maps to [0, 2**16 - 1]; rescale its output to [0, 1].
    ref = apply_windowing(hu.copy(), ds) / (2**16 - 1)
    out = apply_window(hu, center, width)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_presets_are_the_usual_reading_windows() -> None:
    assert {"lung", "mediastinum", "soft_tissue", "bone", "brain"} <= set(WINDOW_PRESETS)
    assert WINDOW_PRESETS["lung"][0] < 0 < WINDOW_PRESETS["bone"][0]
    assert WINDOW_PRESETS["brain"][1] < WINDOW_PRESETS["soft_tissue"][1] < WINDOW_PRESETS["lung"][1]


def test_bad_width() -> None:
    with pytest.raises(ValueError, match="width"):
        apply_window(np.zeros(3), 0, 0)
