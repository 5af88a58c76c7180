"""Intensity windows: the one place medfm maps a value range onto [0, 1].

One convention everywhere (models, data transforms, the viewer, segmentation overlays): a
window (center, width) covers ``[center - width / 2, center + width / 2]``, mapped linearly
onto [0, 1] and clipped (as MONAI's ``ScaleIntensityRange``, MedSAM's ``pre_CT_MR.py`` and
Merlin's CT preprocessing do). Display windows from percentiles use the same mapping.
Works on numpy arrays and torch tensors alike (only ``-``, ``/`` and ``.clip`` are used).
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

A = TypeVar("A")

# (center, width) in Hounsfield units; the usual radiology reading windows.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft_tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}

#: the percentiles of a display window computed from the data (robust to a few outliers)
DISPLAY_PERCENTILES = (1.0, 99.0)


def window_range(center: float, width: float) -> tuple[float, float]:
    """(low, high) intensities of the window (center, width); ``width`` must be > 0."""
    if not width > 0:
        raise ValueError(f"window width must be > 0, got {width}")
    return float(center) - float(width) / 2.0, float(center) + float(width) / 2.0


def scale_range(array: A, low: float, high: float) -> A:
    """``array`` mapped linearly from [low, high] onto [0, 1] and clipped.

    numpy input gives float32; a torch tensor stays a tensor. ``high <= low`` gives a step
    at ``low`` (0 below or at it, 1 above) rather than a division by zero.
    """
    if isinstance(array, np.ndarray) or not hasattr(array, "clip"):
        x: Any = np.asarray(array, dtype=np.float32)
    else:
        x = array.float() if hasattr(array, "float") else array
    if high <= low:
        return (x > low) * 1.0 if not isinstance(x, np.ndarray) else (x > low).astype(np.float32)
    return ((x - low) / (high - low)).clip(0.0, 1.0)


def apply_window(array: A, center: float, width: float) -> A:
    """Values through the window (center, width) -> [0, 1] (float32 for numpy input).

    >>> [round(float(v), 3) for v in apply_window(np.array([-1000.0, 40.0, 1000.0]), 40, 400)]
    [0.0, 0.5, 1.0]
    """
    return scale_range(array, *window_range(center, width))


def percentile_range(array: Any, lower: float = DISPLAY_PERCENTILES[0],
                     upper: float = DISPLAY_PERCENTILES[1]) -> tuple[float, float]:
    """(low, high) at the ``lower`` / ``upper`` percentiles of ``array``; (0, 1) when it is empty."""
    arr = np.asarray(array)
    if arr.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(arr, [lower, upper])
    return float(lo), float(hi)


def display_uint8(array: Any, low: float, high: float) -> np.ndarray:
    """``array`` through the window [low, high] as uint8 0..255 (rounded), for PNGs and overlays."""
    return np.round(scale_range(np.asarray(array, dtype=np.float32), low, high) * 255.0).astype(np.uint8)
