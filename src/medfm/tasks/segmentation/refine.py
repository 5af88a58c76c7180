"""Two-stage (cascade) 2D segmentation: a second network refines a crop around the first's object.

A whole-frame network at reduced resolution finds the object; a refiner trained on crops around
the reference object (random margin and shift, so it learns to cope with an imperfect first
stage) segments that crop at its own, higher resolution. Made for one object per image whose
size varies a lot between images, such as a fetal head from the first to the third trimester:
small heads get more pixels and far-away look-alikes are out of the crop.

At inference the crop is refined in passes: each pass crops around the previous pass's object.
A pass after the first may tighten the boundary but not grow the object by more than
MAX_PASS_GROWTH in area: growth means it follows a leak into tissue beside the object (each
wider crop shows more of it), so the previous pass is kept and refinement stops.

``object_box`` gives the (margined, aspect-fixed) box around a mask's largest region;
``crop_array`` cuts it out, padding outside the image; ``crop_samples`` makes the refiner's
training crops. The model side (``TrainedSegmenter`` with a ``refine/`` sub-model) lives in
``medfm.tasks.segmentation.model``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from medfm.data.card import Sample
from medfm.errors import ConfigError
from medfm.metrics.segmentation import largest_region_filled

REFINE_DIR = "refine"
# Training crops: margin (box side / object side) drawn log-uniformly from this range, centre
# shifted by up to SHIFT of the object's size. Wide on purpose: when the first stage over-segments
# (a head plus the tissue around it), the refiner's crop holds a small object in a large box, and it
# must still find it; the next pass then crops tightly. Inference crops at INFER_MARGIN.
MARGIN_RANGE = (1.15, 3.0)
INFER_MARGIN = 1.375
SHIFT = 0.08
MAX_PASS_GROWTH = 1.15  # area ratio; a set rule, not tuned on data


def object_box(mask: np.ndarray, margin: float, aspect: float, shift: tuple[float, float] = (0.0, 0.0)) -> tuple[int, int, int, int] | None:
    """Box (y0, y1, x0, x1), end-exclusive and possibly outside the image, around the largest
    region of a 2D ``mask``: ``margin`` times the object's extent, widened to height/width =
    ``aspect``, centre moved by ``shift`` (fractions of the object's height, width). None if empty."""
    if mask.ndim != 2:
        raise ConfigError(f"crop refinement is 2D only, got a {mask.ndim}-D mask")
    if not np.any(mask):
        return None
    ys, xs = np.nonzero(largest_region_filled(mask))
    oh, ow = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    cy = (ys.max() + ys.min()) / 2 + shift[0] * oh
    cx = (xs.max() + xs.min()) / 2 + shift[1] * ow
    h = max(oh * margin, ow * margin * aspect, 8.0)
    w = h / aspect
    y0, x0 = int(round(cy - h / 2)), int(round(cx - w / 2))
    return y0, y0 + int(round(h)), x0, x0 + int(round(w))


def crop_array(array: np.ndarray, box: tuple[int, int, int, int], fill: float | None = None) -> np.ndarray:
    """(C, H, W) or (H, W) -> the box's content; parts outside the image take ``fill`` (default:
    the array's minimum, the background of ultrasound and most scans)."""
    y0, y1, x0, x1 = box
    out = np.full((*array.shape[:-2], y1 - y0, x1 - x0), array.min() if fill is None else fill, dtype=array.dtype)
    inside = _inside(box, array.shape[-2:])
    if inside is not None:
        img, crop = inside
        out[(..., *crop)] = array[(..., *img)]
    return out


def _inside(box: tuple[int, int, int, int], shape: tuple[int, ...]) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """The part of ``box`` inside an image of ``shape`` (H, W), as (image slices, crop slices); None if none."""
    y0, y1, x0, x1 = box
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, shape[0]), max(x0, 0), min(x1, shape[1])
    if sy0 >= sy1 or sx0 >= sx1:
        return None
    return (slice(sy0, sy1), slice(sx0, sx1)), (slice(sy0 - y0, sy1 - y0), slice(sx0 - x0, sx1 - x0))


def paste_probabilities(prob: np.ndarray, crop_prob: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Whole-frame (K+1, H, W) probabilities with the refined crop written into its box and
    background everywhere else (one object per image: what lies outside its box is not it)."""
    out = np.zeros_like(prob)
    out[0] = 1.0
    inside = _inside(box, prob.shape[-2:])
    if inside is not None:
        img, crop = inside
        out[(slice(None), *img)] = crop_prob[(slice(None), *crop)]
    return out


def crop_samples(samples: Sequence[Sample], aspect: float, per_sample: int, seed: int,
                 jitter: bool = True) -> list[Sample]:
    """Crops around each sample's reference object: ``per_sample`` random ones (margin in
    MARGIN_RANGE, shift up to SHIFT) for training, or one at INFER_MARGIN when ``jitter``
    is False (validation). Samples without foreground are skipped."""
    rng = np.random.default_rng(seed)
    out = []
    for s in samples:
        img, lab = np.asarray(s.image.array), np.asarray(s.mask.array)
        lab2 = lab[0] if lab.ndim == 3 else lab
        for k in range(per_sample if jitter else 1):
            if jitter:
                margin = float(np.exp(rng.uniform(*np.log(MARGIN_RANGE))))
                shift = (float(rng.uniform(-SHIFT, SHIFT)), float(rng.uniform(-SHIFT, SHIFT)))
            else:
                margin, shift = INFER_MARGIN, (0.0, 0.0)
            box = object_box(lab2 > 0, margin, aspect, shift)
            if box is None:
                break
            out.append(replace(
                s, id=f"{s.id}#crop{k}",
                image=s.image.with_array(crop_array(img, box)),
                mask=s.mask.with_array(crop_array(lab, box, fill=0)),
            ))
    return out
