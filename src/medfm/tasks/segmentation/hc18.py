"""HC18 head circumference: ellipse fitted to a head mask -> perimeter in mm vs the manual value.

The shared HC18 masks are filled ellipses drawn about 1.4 px beyond the ellipse whose perimeter
is the CSV's head circumference, so a model trained on them learns the same outward offset.
``estimate_mask_offset`` measures that offset on TRAINING masks (the semi-axis shrink that makes
the fitted ellipse's perimeter equal the CSV value, median over cases) and
``head_circumference_mm(mask, pixel_mm, offset_px)`` removes it from every prediction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from medfm.metrics.segmentation import binary_metrics, ellipse_perimeter, head_circumference_mm, mask_ellipse


def _mask2d(sample: Any) -> np.ndarray:
    m = np.asarray(sample.mask.array)
    return (m.max(axis=0) if m.ndim == 3 else m) > 0


def case_offset_px(mask: np.ndarray, pixel_mm: float, hc_mm: float) -> float:
    """Semi-axis shrink d (px) with perimeter(a - d, b - d) * pixel_mm == hc_mm for this mask."""
    from scipy.optimize import brentq

    _, _, a, b, _ = mask_ellipse(mask)
    target = hc_mm / pixel_mm

    def f(d: float) -> float:
        return ellipse_perimeter(a - d, b - d) - target

    lo, hi = -0.5 * b, 0.99 * b
    if f(lo) * f(hi) > 0:
        return math.nan
    return float(brentq(f, lo, hi))


def estimate_mask_offset(samples: Sequence[Any]) -> dict[str, float]:
    """Median (and spread) of the per-case offset over training samples with ``meta`` holding
    ``pixel_mm`` and ``hc_mm``: {"offset_px", "std_px", "n"}."""
    offs = []
    for s in samples:
        d = case_offset_px(_mask2d(s), float(s.meta["pixel_mm"]), float(s.meta["hc_mm"]))
        if np.isfinite(d):
            offs.append(d)
    if not offs:
        return {"offset_px": 0.0, "std_px": math.nan, "n": 0}
    return {"offset_px": float(np.median(offs)), "std_px": float(np.std(offs)), "n": len(offs)}


def hc_rows(predictions: Sequence[np.ndarray], samples: Sequence[Any], offset_px: float) -> list[dict[str, Any]]:
    """Per case: predicted HC (mm, offset-corrected), manual HC, absolute and signed difference.
    An empty prediction has no ellipse: its HC is NaN (counted as undefined)."""
    rows = []
    for pred, s in zip(predictions, samples):
        px, ref = float(s.meta["pixel_mm"]), float(s.meta["hc_mm"])
        p2 = np.asarray(pred)
        p2 = (p2.max(axis=0) if p2.ndim == 3 else p2) > 0
        try:
            hc = head_circumference_mm(p2, px, offset_px)
        except ValueError:
            hc = math.nan
        rows.append({"case": s.id, "hc_pred_mm": hc, "hc_ref_mm": ref, "hc_diff_mm": hc - ref, "hc_abs_diff_mm": abs(hc - ref)})
    return rows


def ellipse_mask(shape: tuple[int, int], xc: float, yc: float, a: float, b: float, theta: float) -> np.ndarray:
    """(H, W) bool: pixels whose centres (x = column, y = row) lie inside the ellipse."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    x, y = xx - xc, yy - yc
    c, s = math.cos(theta), math.sin(theta)
    u, v = x * c + y * s, -x * s + y * c
    return (u / max(a, 1e-6)) ** 2 + (v / max(b, 1e-6)) ** 2 <= 1


def ellipse_dice_rows(predictions: Sequence[np.ndarray], samples: Sequence[Any]) -> list[dict[str, Any]]:
    """Dice of the ellipse fitted to each prediction (drawn filled, as the HC18 references are)
    against the reference mask; an empty prediction scores 0 against a non-empty reference."""
    rows = []
    for pred, s in zip(predictions, samples):
        p2 = np.asarray(pred)
        p2 = (p2.max(axis=0) if p2.ndim == 3 else p2) > 0
        gt = _mask2d(s)
        try:
            fit = ellipse_mask(gt.shape, *mask_ellipse(p2))
        except ValueError:
            fit = np.zeros_like(gt)
        m = binary_metrics(fit, gt, s.mask.spacing)
        rows.append({"case": s.id, "dice": m["dice"], "hd95_mm": m["hd95_mm"]})
    return rows
