"""Augmented views for self-supervised learning, built from MONAI transforms.

Medical-image choices: a random affine (rotation, zoom, shift: one resampling that also plays
the part of a random resized crop), flips, an occasional elastic deformation (2D), intensity
scaling / shift / gamma and Gaussian noise; no colour jitter (hue/saturation) on grayscale
images. Inputs are float tensors in [0, 1], (C, H, W) or (C, D, H, W).
"""

from __future__ import annotations

from typing import Any


def build_view_transform(ndim: int, size: int, zoom: float = 0.3, elastic: bool = True) -> Any:
    """A MONAI ``Compose`` producing one random view per call (same size as its input)."""
    from monai import transforms as T

    shift = max(1, size // 7)
    steps: list[Any] = [
        T.RandAffine(
            prob=1.0, rotate_range=(0.26,) if ndim == 2 else (0.26,) * 3, scale_range=(zoom,) * ndim,
            translate_range=(shift,) * ndim, padding_mode="zeros",
        ),
        T.RandFlip(prob=0.5, spatial_axis=ndim - 1),
    ]
    if ndim == 3:
        steps.append(T.RandFlip(prob=0.5, spatial_axis=0))
    if elastic and ndim == 2:
        steps.append(T.Rand2DElastic(prob=0.1, spacing=(max(4, size // 4),) * 2, magnitude_range=(0.5, 1.5), padding_mode="zeros"))
    steps += [
        T.RandScaleIntensity(factors=0.2, prob=0.5),
        T.RandShiftIntensity(offsets=0.1, prob=0.5),
        T.RandAdjustContrast(prob=0.5, gamma=(0.7, 1.5)),
        T.RandGaussianNoise(prob=0.3, std=0.03),
    ]
    return T.Compose(steps)
