"""Intensity windows: named CT presets and the DICOM linear window function."""

from __future__ import annotations

import numpy as np

# (center, width) in Hounsfield units; the usual radiology reading windows.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft_tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}


def apply_window(array: np.ndarray, center: float, width: float) -> np.ndarray:
    """Map values through a linear window to float32 in [0, 1].

    Uses the DICOM "LINEAR" VOI function (PS3.3 C.11.2.1.2.1) with output range [0, 1]:
    values at or below ``center - 0.5 - (width - 1) / 2`` become 0, values above
    ``center - 0.5 + (width - 1) / 2`` become 1, linear in between. ``width`` must be >= 1.

    >>> [round(float(v), 3) for v in apply_window(np.array([-1000.0, 40.0, 1000.0]), 40, 400)]
    [0.0, 0.501, 1.0]
    """
    if not width >= 1:
        raise ValueError(f"window width must be >= 1, got {width}")
    x = np.asarray(array, dtype=np.float64)
    out = (x - (center - 0.5)) / (width - 1) + 0.5 if width > 1 else (x > center - 0.5).astype(np.float64)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
