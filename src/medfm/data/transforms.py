"""Image transforms built from ``monai.transforms`` (none hand-written).

All work on channel-first arrays, (C, Y, X) or (C, Z, Y, X), numpy or torch, as MONAI does.
``resample_to_spacing`` works on ``Image`` because it must update the geometry.

>>> from medfm.data import transforms as T                                 # doctest: +SKIP
>>> ct = T.ct_window("soft_tissue")(volume)    # HU -> [0, 1]               doctest: +SKIP
>>> aug = T.augmentation(ndim=3, seed=0); x = aug(x)                        # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medfm.errors import ConfigError
from medfm.io.image import Image

def window(center: float, width: float, out_min: float = 0.0, out_max: float = 1.0) -> Any:
    """Intensity window: [center - width/2, center + width/2] -> [out_min, out_max], clipped.

    A ``monai.transforms.ScaleIntensityRange``; e.g. ``window(40, 400)`` is the CT soft-tissue window.
    """
    if width <= 0:
        raise ConfigError(f"window width must be > 0, got {width}")
    from monai.transforms import ScaleIntensityRange

    from medfm.io.window import window_range

    low, high = window_range(center, width)  # medfm's one window convention
    return ScaleIntensityRange(a_min=low, a_max=high, b_min=out_min, b_max=out_max, clip=True)


def ct_window(name: str, out_min: float = 0.0, out_max: float = 1.0) -> Any:
    """A named CT window from ``medfm.io.window.WINDOW_PRESETS`` (HU in, [out_min, out_max] out)."""
    from medfm._registry import suggest
    from medfm.io.window import WINDOW_PRESETS

    if name not in WINDOW_PRESETS:
        known = ", ".join(WINDOW_PRESETS)
        raise ConfigError(f"unknown CT window '{name}'.{suggest(name, list(WINDOW_PRESETS))} Known: {known}")
    center, width = WINDOW_PRESETS[name]
    return window(center, width, out_min, out_max)


def scale_intensity(out_min: float = 0.0, out_max: float = 1.0) -> Any:
    """Min-max scale each image to [out_min, out_max] (``monai.transforms.ScaleIntensity``)."""
    from monai.transforms import ScaleIntensity

    return ScaleIntensity(minv=out_min, maxv=out_max)


def scale_percentiles(lower: float = 0.5, upper: float = 99.5, out_min: float = 0.0, out_max: float = 1.0) -> Any:
    """Robust scaling for MRI / ultrasound: the [lower, upper] percentiles -> [out_min, out_max], clipped."""
    from monai.transforms import ScaleIntensityRangePercentiles

    return ScaleIntensityRangePercentiles(lower=lower, upper=upper, b_min=out_min, b_max=out_max, clip=True)


def normalize_intensity(nonzero: bool = False) -> Any:
    """Zero mean, unit variance per channel (``NormalizeIntensity``); ``nonzero`` ignores background 0s."""
    from monai.transforms import NormalizeIntensity

    return NormalizeIntensity(nonzero=nonzero, channel_wise=True)


def crop_or_pad(size: Sequence[int], mode: str = "constant") -> Any:
    """Centre crop and/or pad every spatial axis to ``size`` ((Y, X) or (Z, Y, X))."""
    from monai.transforms import ResizeWithPadOrCrop

    return ResizeWithPadOrCrop(spatial_size=tuple(int(s) for s in size), mode=mode)


def resample_to_spacing(image: Image, spacing: Sequence[float], mode: str = "bilinear") -> Image:
    """Resample ``image`` to ``spacing`` (mm, same axis order as ``image.spacing``).

    Uses ``monai.transforms.Spacing`` in the array's index frame: direction and origin (the
    position of voxel 0) are unchanged; the shape becomes about (n - 1) * old / new + 1.
    ``mode``: "bilinear" for images, "nearest" for label masks (labels and dtype are kept).
    """
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Spacing

    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != image.ndim or any(s <= 0 for s in spacing):
        raise ConfigError(f"spacing {spacing} does not fit a {image.ndim}D image (positive mm per axis)")
    affine = np.eye(image.ndim + 1)
    affine[: image.ndim, : image.ndim] = np.diag(image.spacing)
    src = np.asarray(image.array)
    data = torch.as_tensor(src if np.issubdtype(src.dtype, np.floating) else src.astype(np.float32))
    out = Spacing(pixdim=spacing, mode=mode, align_corners=True)(MetaTensor(data, affine=torch.as_tensor(affine)))
    arr = out.detach().cpu().numpy()
    if mode == "nearest" and not np.issubdtype(src.dtype, np.floating):
        arr = np.rint(arr).astype(src.dtype)
    new_spacing = tuple(float(v) for v in np.sqrt((out.affine.numpy()[: image.ndim, : image.ndim] ** 2).sum(0)))
    return image.with_array(arr, spacing=new_spacing)


def augmentation(ndim: int, seed: int = 0, prob: float = 0.5) -> Any:
    """Training augmentation for one channel-first image array (classification).

    Random flips on every spatial axis, a small affine (rotation up to ~10 degrees, scale
    +-10%), intensity scale/shift +-10% and light Gaussian noise. Seeded: the same seed gives
    the same sequence of random draws.
    """
    from monai.transforms import Compose, RandAffine, RandFlip, RandGaussianNoise, RandScaleIntensity, RandShiftIntensity

    _check_ndim(ndim)
    flips = [RandFlip(prob=prob, spatial_axis=axis) for axis in range(ndim)]
    rotate = (0.17,) if ndim == 2 else (0.17, 0.17, 0.17)
    aug = Compose([
        *flips,
        RandAffine(prob=prob, rotate_range=rotate, scale_range=(0.1,) * ndim, padding_mode="border"),
        RandScaleIntensity(factors=0.1, prob=prob),
        RandShiftIntensity(offsets=0.1, prob=prob),
        RandGaussianNoise(prob=prob / 2, std=0.01),
    ])
    aug.set_random_state(seed=seed)
    return aug


def augmentation_dict(ndim: int, image_key: str = "image", mask_key: str | None = "mask", seed: int = 0, prob: float = 0.5) -> Any:
    """Segmentation augmentation on a dict {image_key: image, mask_key: mask}.

    The same random flips and affine move image and mask together (mask resampled with
    nearest neighbour); intensity changes touch the image only.
    """
    from monai.transforms import (
        Compose, RandAffined, RandFlipd, RandGaussianNoised, RandScaleIntensityd, RandShiftIntensityd,
    )

    _check_ndim(ndim)
    keys = [image_key] + ([mask_key] if mask_key else [])
    modes = ["bilinear"] + (["nearest"] if mask_key else [])
    rotate = (0.17,) if ndim == 2 else (0.17, 0.17, 0.17)
    aug = Compose([
        *[RandFlipd(keys=keys, prob=prob, spatial_axis=axis) for axis in range(ndim)],
        RandAffined(keys=keys, prob=prob, rotate_range=rotate, scale_range=(0.1,) * ndim, mode=modes,
                    padding_mode="border"),
        RandScaleIntensityd(keys=image_key, factors=0.1, prob=prob),
        RandShiftIntensityd(keys=image_key, offsets=0.1, prob=prob),
        RandGaussianNoised(keys=image_key, prob=prob / 2, std=0.01),
    ])
    aug.set_random_state(seed=seed)
    return aug


def _check_ndim(ndim: int) -> None:
    if ndim not in (2, 3):
        raise ConfigError(f"augmentation needs ndim 2 or 3, got {ndim}")
