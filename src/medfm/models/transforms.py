"""Model input preparation derived from a card's ``Preprocess``; never retyped in configs.

Order (deterministic torch ops, the same on every machine):

1. shape: (H, W) -> (1, H, W); (C, H, W) with C in {1, 3, 4}; anything else is refused
   (a (Z, Y, X) volume into a 2D model is an ``InputError``: pass slices instead).
2. intensity to [0, 1] in float32, per image: ``window`` (center, width) clips HU first;
   else ``scale="unit"``: uint8 / 255, bool as 0/1, other dtypes per-image min-max;
   ``scale="minmax"``: per-image min-max whatever the dtype (MedSAM). A constant image maps to 0.
3. channels: 1 -> 3 by replication, 4 (RGBA) -> 3 by dropping alpha, 3 -> 1 by ITU-R 601
   luma for 1-channel models; other counts are an ``InputError``.
4. geometry: optional zero-pad to square (``pad_square``), then ``resize``:
   "resize" straight to ``size``; "shortest_crop" short side to ``min(size)`` then centre
   crop to ``crop_size``; "longest_pad" longest side to ``max(size)`` (aspect kept), padded
   bottom/right after normalisation (SAM). Interpolation antialiased, values clamped to [0, 1].
5. ``(x - mean) / std`` per channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from medfm.errors import InputError
from medfm.models.card import Preprocess

if TYPE_CHECKING:
    import torch

_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Geometry:
    """How one input image maps onto the model grid (used to map SAM prompts and masks back).

    Model pixel = input pixel * (sy, sx) (+ crop offset for "shortest_crop"); ``valid`` is the
    (H, W) region of the model grid holding image content (the rest is padding).
    """

    in_hw: tuple[int, int]
    scale_yx: tuple[float, float]
    valid_hw: tuple[int, int]
    offset_yx: tuple[int, int] = (0, 0)


def _as_chw(image: np.ndarray, where: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4):
        return arr
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4:
        raise InputError(
            f"{where}: shape {arr.shape} looks channel-last (H, W, C); give (C, H, W) (e.g. arr.transpose(2, 0, 1))"
        )
    if arr.ndim == 3:
        raise InputError(
            f"{where}: shape {arr.shape} has {arr.shape[0]} channels; a 2D model takes (H, W) or (C, H, W) with C in "
            "1/3/4. If this is a 3D volume (Z, Y, X), pass its 2D slices instead"
        )
    raise InputError(f"{where}: expected a 2D image (H, W) or (C, H, W), got shape {arr.shape} ({arr.ndim}D)")


def to_unit(image: np.ndarray, pp: Preprocess) -> torch.Tensor:
    """(C, H, W) array of any dtype -> float32 tensor in [0, 1] following the card's rule."""
    import torch

    arr = np.asarray(image)
    if arr.dtype == np.bool_:
        return torch.from_numpy(arr.astype(np.float32))
    x = torch.from_numpy(np.ascontiguousarray(arr).astype(np.float32, copy=False))
    if pp.window is not None:
        center, width = pp.window
        lo, hi = center - width / 2.0, center + width / 2.0
        return ((x - lo) / max(hi - lo, 1e-6)).clamp_(0.0, 1.0)
    if pp.scale == "unit" and arr.dtype == np.uint8:
        return x / 255.0
    if pp.scale not in ("unit", "minmax"):
        raise InputError(f"preprocess scale must be 'unit' or 'minmax', got {pp.scale!r}")
    lo, hi = x.min(), x.max()
    if float(hi - lo) <= 0:
        return torch.zeros_like(x)
    return (x - lo) / (hi - lo)


def _channels(x: torch.Tensor, want: int, where: str) -> torch.Tensor:
    have = x.shape[0]
    if have == want:
        return x
    if have == 4 and want == 3:
        return x[:3]
    if have == 1 and want == 3:
        return x.expand(3, -1, -1)
    if have in (3, 4) and want == 1:
        w = x.new_tensor(_LUMA).view(3, 1, 1)
        return (x[:3] * w).sum(0, keepdim=True)
    raise InputError(f"{where}: {have} channel(s) given, the model takes {want}")


def _resize(x: torch.Tensor, hw: tuple[int, int], mode: str) -> torch.Tensor:
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    if mode == "nearest":
        return F.interpolate(x[None], size=hw, mode="nearest")[0]
    return F.interpolate(x[None], size=hw, mode=mode, align_corners=False, antialias=True)[0].clamp_(0.0, 1.0)


def geometry(in_hw: tuple[int, int], pp: Preprocess) -> Geometry:
    """Where an (H, W) input lands on the model grid (see ``Geometry``)."""
    h, w = in_hw
    side = max(h, w) if pp.pad_square else None
    h0, w0 = (side, side) if side else (h, w)
    if pp.resize == "resize":
        oh, ow = pp.size
        return Geometry((h, w), (oh / h0, ow / w0), (round(h * oh / h0), round(w * ow / w0)))
    if pp.resize == "longest_pad":
        target = max(pp.size)
        s = target / max(h0, w0)
        nh, nw = int(h0 * s + 0.5), int(w0 * s + 0.5)
        return Geometry((h, w), (nh / h0, nw / w0), (round(h * nh / h0), round(w * nw / w0)))
    if pp.resize == "shortest_crop":
        short = min(pp.size)
        s = short / min(h0, w0)
        nh, nw = max(short, int(h0 * s + 0.5)), max(short, int(w0 * s + 0.5))
        ch, cw = pp.output_size
        return Geometry((h, w), (nh / h0, nw / w0), (ch, cw), ((nh - ch) // 2, (nw - cw) // 2))
    raise InputError(f"preprocess resize must be resize/shortest_crop/longest_pad, got {pp.resize!r}")


def prepare_one(image: np.ndarray, pp: Preprocess, where: str = "image") -> torch.Tensor:
    """One array (H, W) or (C, H, W) -> model-ready (C, H', W') float32 (steps 1-5 above)."""
    import torch
    import torch.nn.functional as F

    chw = _as_chw(image, where)
    x = to_unit(chw, pp)
    x = _channels(x, pp.channels, where)
    h, w = x.shape[-2:]
    if pp.pad_square and h != w:
        side = max(h, w)
        x = F.pad(x, (0, side - w, 0, side - h))
    geo = geometry((h, w), pp)
    mode = pp.interpolation
    h0, w0 = x.shape[-2:]
    if pp.resize == "resize":
        x = _resize(x, tuple(pp.size), mode)
    elif pp.resize == "shortest_crop":
        nh, nw = round(h0 * geo.scale_yx[0]), round(w0 * geo.scale_yx[1])
        x = _resize(x, (nh, nw), mode)
        oy, ox = geo.offset_yx
        ch, cw = pp.output_size
        x = x[:, oy : oy + ch, ox : ox + cw]
    else:  # longest_pad
        nh, nw = round(h0 * geo.scale_yx[0]), round(w0 * geo.scale_yx[1])
        x = _resize(x, (nh, nw), mode)
    mean = torch.tensor(pp.mean[: pp.channels] if len(pp.mean) >= pp.channels else pp.mean * pp.channels)
    std = torch.tensor(pp.std[: pp.channels] if len(pp.std) >= pp.channels else pp.std * pp.channels)
    x = (x - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)
    if pp.resize == "longest_pad":
        th, tw = pp.size
        x = F.pad(x, (0, tw - x.shape[-1], 0, th - x.shape[-2]))
    return x.contiguous()


def prepare_batch(images: np.ndarray | Sequence[np.ndarray], pp: Preprocess) -> torch.Tensor:
    """A list of arrays (or one stacked (N, C, H, W) / (N, H, W) array) -> (N, C, H', W') float32.

    A stacked array of 2D volumes ``(N, Z, Y, X)`` is ambiguous with (N, C, H, W) only when
    Z is 1, 3 or 4; other Z are refused like any wrong channel count.
    """
    import torch

    if isinstance(images, np.ndarray):
        if images.ndim not in (3, 4):
            raise InputError(
                f"images: expected a stack (N, H, W) or (N, C, H, W), got shape {images.shape}"
                + (" (a batch of 3D volumes? a 2D model takes slices)" if images.ndim == 5 else "")
            )
        items: Sequence[np.ndarray] = list(images)
    else:
        items = images
    if len(items) == 0:
        c = pp.channels
        return torch.empty((0, c, *pp.output_size), dtype=torch.float32)
    return torch.stack([prepare_one(img, pp, where=f"image {i}") for i, img in enumerate(items)])
