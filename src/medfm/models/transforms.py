"""Model input preparation derived from a card's ``Preprocess``; never retyped in configs.

Order (deterministic torch ops, the same on every machine):

1. shape: (H, W) -> (1, H, W); (C, H, W) with C in {1, 3, 4}; anything else is refused
   (a (Z, Y, X) volume into a 2D model is an ``InputError``: pass slices instead).
2. intensity, per image (``Preprocess.intensity``; windows from ``medfm.io.window``): CT
   inputs (``modality="CT"``) go through ``ct_window`` first when the card has one; then
   "unit": uint8 / 255, bool 0/1, floats already in [0, 1] as they are, other values per-image
   min-max; "dtype_range": integers / their dtype's range (uint16 / 65535), floats as "unit";
   "window": the card's (center, width); "minmax": left as is here, min-max after step 4
   (MedSAM resizes first). A constant image maps to 0.
3. channels: 1 -> 3 by replication, 4 (RGBA) -> 3 by dropping alpha, 3 -> 1 by ITU-R 601
   luma for 1-channel models; other counts are an ``InputError``.
4. geometry: optional zero-pad to a square, centred (``pad_square``, MedSigLIP), then
   ``resize``: "resize" straight to ``size``; "shortest_crop" short side to ``min(size)``
   (long side floored, as torchvision and the HF processors do) then centre crop to
   ``crop_size``; "longest_pad" longest side to ``max(size)`` (aspect kept, rounded as SAM
   does), padded bottom/right after normalisation (SAM). Interpolation antialiased.
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

    Model pixel = input pixel * (sy, sx) - offset (the crop offset for "shortest_crop"; minus the
    scaled top/left padding for ``pad_square``); ``valid_hw`` is the (H, W) extent of the image
    content on the model grid (the rest is padding).
    """

    in_hw: tuple[int, int]
    scale_yx: tuple[float, float]
    valid_hw: tuple[int, int]
    offset_yx: tuple[float, float] = (0, 0)


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


def _is_int(arr: np.ndarray) -> bool:
    return np.issubdtype(arr.dtype, np.integer)


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Per-image min-max to [0, 1]; a constant image maps to 0."""
    import torch

    lo, hi = x.min(), x.max()
    if float(hi - lo) <= 0:
        return torch.zeros_like(x)
    return (x - lo) / (hi - lo)


def _unit_or_minmax(x: torch.Tensor) -> torch.Tensor:
    """Values already in [0, 1] are kept (a float image there is not stretched); others min-max."""
    if x.numel() and float(x.min()) >= 0.0 and float(x.max()) <= 1.0:
        return x
    return minmax(x)


def to_unit(image: np.ndarray, pp: Preprocess, modality: str | None = None) -> torch.Tensor:
    """(C, H, W) array of any dtype -> float32 tensor following the card's intensity rule.

    In [0, 1] for every rule but "minmax" (raw values; ``prepare_one`` scales after the resize).
    """
    import torch

    from medfm.io.window import apply_window, scale_range

    arr = np.asarray(image)
    if arr.dtype == np.bool_:
        return torch.from_numpy(arr.astype(np.float32))
    x = torch.from_numpy(np.ascontiguousarray(arr).astype(np.float32, copy=False))
    if pp.ct_window is not None and (modality or "").upper() == "CT":
        return apply_window(x, *pp.ct_window)
    rule = pp.intensity
    if rule == "window":
        assert pp.window is not None
        return apply_window(x, *pp.window)
    if rule == "minmax":
        return x
    if arr.dtype == np.uint8 and rule in ("unit", "dtype_range"):
        return x / 255.0
    if rule == "dtype_range" and _is_int(arr):
        info = np.iinfo(arr.dtype)
        return scale_range(x, float(info.min), float(info.max))
    return _unit_or_minmax(x)


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


def _resize(x: torch.Tensor, hw: tuple[int, int], mode: str, clamp: bool = True) -> torch.Tensor:
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    if mode == "nearest":
        return F.interpolate(x[None], size=hw, mode="nearest")[0]
    out = F.interpolate(x[None], size=hw, mode=mode, align_corners=False, antialias=True)[0]
    return out.clamp_(0.0, 1.0) if clamp else out


def shortest_side_size(hw: tuple[int, int], short: int) -> tuple[int, int]:
    """(H, W) after resizing the short side to ``short``: the long side is floored, as
    torchvision's ``Resize(int)`` and the HF processors' ``shortest_edge`` compute it."""
    h, w = hw
    if h <= w:
        return short, int(short * w / h)
    return int(short * h / w), short


def square_padding(hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zeros that make (H, W) square, centred as MedSigLIP's serving
    code does (the odd pixel goes bottom/right)."""
    h, w = hw
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    return top, side - h - top, left, side - w - left


def geometry(in_hw: tuple[int, int], pp: Preprocess) -> Geometry:
    """Where an (H, W) input lands on the model grid (see ``Geometry``)."""
    h, w = in_hw
    if pp.pad_square:
        top, _, left, _ = square_padding((h, w))
        side = max(h, w)
        th, tw = pp.size if pp.resize == "resize" else (side, side)
        sy, sx = th / side, tw / side
        return Geometry((h, w), (sy, sx), (round(h * sy), round(w * sx)), (-top * sy, -left * sx))
    if pp.resize == "resize":
        oh, ow = pp.size
        return Geometry((h, w), (oh / h, ow / w), (oh, ow))
    if pp.resize == "longest_pad":
        target = max(pp.size)
        s = target / max(h, w)
        nh, nw = int(h * s + 0.5), int(w * s + 0.5)  # SAM's get_preprocess_shape rounds
        return Geometry((h, w), (nh / h, nw / w), (nh, nw))
    if pp.resize == "shortest_crop":
        nh, nw = shortest_side_size((h, w), min(pp.size))
        ch, cw = pp.output_size
        return Geometry((h, w), (nh / h, nw / w), (ch, cw), ((nh - ch) // 2, (nw - cw) // 2))
    raise InputError(f"preprocess resize must be resize/shortest_crop/longest_pad, got {pp.resize!r}")


def _geometry_step(x: torch.Tensor, pp: Preprocess, clamp: bool) -> torch.Tensor:
    """Step 4: centred square padding, then the card's resize (and crop)."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    if pp.pad_square and h != w:
        top, bottom, left, right = square_padding((h, w))
        x = F.pad(x, (left, right, top, bottom))
        h, w = x.shape[-2:]
    mode = pp.interpolation
    if pp.resize == "resize":
        return _resize(x, tuple(pp.size), mode, clamp)
    if pp.resize == "shortest_crop":
        nh, nw = shortest_side_size((h, w), min(pp.size))
        x = _resize(x, (nh, nw), mode, clamp)
        ch, cw = pp.output_size
        oy, ox = (nh - ch) // 2, (nw - cw) // 2
        return x[:, oy : oy + ch, ox : ox + cw]
    if pp.resize == "longest_pad":
        geo = geometry((h, w), pp)
        return _resize(x, geo.valid_hw, mode, clamp)
    raise InputError(f"preprocess resize must be resize/shortest_crop/longest_pad, got {pp.resize!r}")


def _per_channel(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    return values[:channels] if len(values) >= channels else values * channels


def prepare_one(image: np.ndarray, pp: Preprocess, where: str = "image", modality: str | None = None) -> torch.Tensor:
    """One array (H, W) or (C, H, W) -> model-ready (C, H', W') float32 (steps 1-5 above).

    ``modality`` ("CT", "MR", ...; None when unknown) selects the card's ``ct_window``.
    """
    import torch
    import torch.nn.functional as F

    chw = _as_chw(image, where)
    x = _channels(to_unit(chw, pp, modality), pp.channels, where)
    minmax_after = pp.intensity == "minmax"
    x = _geometry_step(x, pp, clamp=not minmax_after)
    if minmax_after:
        x = minmax(x)
    mean = torch.tensor(_per_channel(pp.mean, pp.channels))
    std = torch.tensor(_per_channel(pp.std, pp.channels))
    x = (x - mean.view(-1, 1, 1)) / std.view(-1, 1, 1)
    if pp.resize == "longest_pad":
        th, tw = pp.size
        x = F.pad(x, (0, tw - x.shape[-1], 0, th - x.shape[-2]))
    return x.contiguous()


def prepare_batch(
    images: np.ndarray | Sequence[np.ndarray], pp: Preprocess, modality: str | None = None
) -> torch.Tensor:
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
    return torch.stack([prepare_one(img, pp, where=f"image {i}", modality=modality) for i, img in enumerate(items)])
