"""Segmentation metrics: overlap, surface distances in millimetres, volumes, ellipse measurement.

Pure functions (numpy / torch in, floats out). Overlap and distance metrics call MONAI's
implementations (``monai.metrics.compute_dice``, ``compute_iou``, ``compute_hausdorff_distance``,
``compute_average_surface_distance``, ``compute_surface_dice``) with the voxel spacing, so every
distance is in mm. This module adds only the conventions MONAI leaves open:

Empty masks (every case and slice is counted, none is dropped):
- prediction and reference both empty: Dice = IoU = NSD = 1, HD95 = ASSD = 0 mm (perfect agreement);
- exactly one empty: Dice = IoU = NSD = 0; HD95 and ASSD are undefined -> NaN, and
  :func:`summarize` reports how many cases were undefined (``n_undefined``) beside the mean of
  the defined ones.

Arrays are label maps in (Z, Y, X) or (Y, X) order with ``spacing`` in mm in the same order.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from medfm.results import MetricValue

# name -> True when higher is better, False when lower is better, None for descriptive values
METRICS: dict[str, bool | None] = {
    "dice": True,
    "iou": True,
    "hd95_mm": False,
    "assd_mm": False,
    "nsd": True,
    "volume_pred_ml": None,
    "volume_gt_ml": None,
    "volume_diff_ml": None,
    "abs_volume_diff_ml": False,
}
# the module's direction table: the per-case metrics above plus the HC18 summaries built from
# this module's ellipse measurement (mean absolute head-circumference error, Dice of the ellipse)
HIGHER_IS_BETTER: dict[str, bool | None] = {**METRICS, "hc_mad_mm": False, "hc_abs_diff_mm": False, "dice_ellipse_fit": True}


def _pair(pred: np.ndarray, gt: np.ndarray):  # -> tuple[torch.Tensor, torch.Tensor]
    import torch

    p = torch.as_tensor(np.asarray(pred, dtype=bool)[None, None], dtype=torch.float32)
    g = torch.as_tensor(np.asarray(gt, dtype=bool)[None, None], dtype=torch.float32)
    return p, g


def binary_metrics(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], tolerance_mm: float = 1.0
) -> dict[str, float]:
    """All metrics of one binary prediction against one binary reference.

    pred, gt: bool/0-1 arrays of equal shape, (Z, Y, X) or (Y, X); spacing: mm per axis, same order.
    Returns dice, iou, hd95_mm (95th percentile symmetric Hausdorff), assd_mm (average symmetric
    surface distance), nsd (normalised surface Dice at ``tolerance_mm``), the volumes
    ``volume_*_ml`` (mm^3 / 1000 in 3D; for 2D masks the area in cm^2, mm^2 / 100) and their
    signed difference (pred - gt).
    """
    from monai.metrics import (
        compute_average_surface_distance,
        compute_dice,
        compute_hausdorff_distance,
        compute_iou,
        compute_surface_dice,
    )

    pred = np.asarray(pred).astype(bool)
    gt = np.asarray(gt).astype(bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != reference shape {gt.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing {spacing} has {len(spacing)} values for a {pred.ndim}-D mask")
    p, g = _pair(pred, gt)
    unit = float(np.prod(spacing)) / (1000.0 if pred.ndim == 3 else 100.0)
    vp, vg = float(pred.sum()) * unit, float(gt.sum()) * unit
    out = {
        "volume_pred_ml": vp,
        "volume_gt_ml": vg,
        "volume_diff_ml": vp - vg,
        "abs_volume_diff_ml": abs(vp - vg),
    }
    pe, ge = not pred.any(), not gt.any()
    if pe and ge:
        out.update(dice=1.0, iou=1.0, nsd=1.0, hd95_mm=0.0, assd_mm=0.0)
        return out
    # ignore_empty=False: MONAI's own convention for an empty reference (0 unless both empty)
    out["dice"] = float(compute_dice(p, g, include_background=True, ignore_empty=False)[0, 0])
    out["iou"] = float(compute_iou(p, g, include_background=True, ignore_empty=False)[0, 0])
    if pe or ge:
        out.update(nsd=0.0, hd95_mm=math.nan, assd_mm=math.nan)
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["hd95_mm"] = float(
            compute_hausdorff_distance(p, g, include_background=True, percentile=95, spacing=spacing)[0, 0]
        )
        out["assd_mm"] = float(
            compute_average_surface_distance(p, g, include_background=True, symmetric=True, spacing=spacing)[0, 0]
        )
        out["nsd"] = float(
            compute_surface_dice(p, g, [float(tolerance_mm)], include_background=True, spacing=spacing)[0, 0]
        )
    return out


def label_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    labels: Sequence[int],
    spacing: Sequence[float],
    tolerance_mm: float = 1.0,
) -> dict[int, dict[str, float]]:
    """Per-label :func:`binary_metrics` of two label maps (same shape): {label: {metric: value}}."""
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    return {int(lab): binary_metrics(pred == lab, gt == lab, spacing, tolerance_mm) for lab in labels}


def summarize(values: Sequence[float], n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> MetricValue:
    """Mean over cases with its percentile bootstrap ``ci`` interval over cases
    (``medfm.metrics.bootstrap``, seeded) as a ``MetricValue`` with ``n`` (cases) and
    ``n_undefined``: NaN values (undefined distances) are counted there and left out of the mean.
    No finite value: ``value`` NaN; too few resamples for an interval: ``ci_*`` None."""
    from medfm.metrics.bootstrap import bootstrap_ci

    vals = np.asarray([float(x) for x in values], dtype=float)
    finite = vals[np.isfinite(vals)]
    n_undef = int(vals.size - finite.size)
    if finite.size == 0:
        return MetricValue(math.nan, None, None, n=int(vals.size), n_undefined=n_undef)
    interval = bootstrap_ci(lambda y, s: float(np.mean(y)), finite, finite, n_boot=n_boot, seed=seed, ci=ci)
    return MetricValue(float(finite.mean()), interval.low, interval.high, n=int(vals.size), n_undefined=n_undef)


# -- ellipse measurement (HC18 head circumference) ---------------------------------------------


def ellipse_perimeter(a: float, b: float) -> float:
    """Ramanujan's second approximation of the perimeter of an ellipse with semi-axes a, b."""
    if a + b == 0:
        return 0.0
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


def boundary_points(mask: np.ndarray) -> np.ndarray:
    """(N, 2) (x, y) pixel-centre coordinates of the outer boundary of a 2D mask (Y, X).

    A boundary pixel is a foreground pixel with a 4-neighbour in the background; its point is
    moved half a pixel towards that background so the points lie on the mask's edge.
    """
    m = np.pad(np.asarray(mask, dtype=bool), 1)
    pts = []
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        nb = np.roll(m, (dy, dx), axis=(0, 1))  # nb[y, x] = m[y - dy, x - dx]
        ys, xs = np.nonzero(m & ~nb)
        pts.append(np.stack([xs - 1 - 0.5 * dx, ys - 1 - 0.5 * dy], axis=1))
    return np.concatenate(pts).astype(float)


def fit_ellipse(points: np.ndarray) -> tuple[float, float, float, float, float]:
    """Least-squares ellipse through (N, 2) (x, y) points -> (xc, yc, a, b, theta).

    Uses ``skimage.measure.EllipseModel`` when scikit-image is installed; otherwise the direct
    least-squares fit of Fitzgibbon, Pilu & Fisher (1999), solved with numpy. a >= b are the
    semi-axes in the points' units, theta the angle of the a axis (radians).
    """
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 6:
        raise ValueError(f"need at least 6 (x, y) points to fit an ellipse, got shape {pts.shape}")
    try:
        from skimage.measure import EllipseModel  # type: ignore[import-not-found]
    except ImportError:
        EllipseModel = None  # noqa: N806
    if EllipseModel is not None:
        model = EllipseModel()
        if model.estimate(pts):
            xc, yc, a, b, theta = (float(v) for v in model.params)
            if b > a:
                a, b, theta = b, a, theta + math.pi / 2
            return xc, yc, a, b, theta
    return _fit_ellipse_direct(pts)


def _fit_ellipse_direct(pts: np.ndarray) -> tuple[float, float, float, float, float]:
    # centre and scale first for numerical conditioning
    mu = pts.mean(axis=0)
    s = float(np.sqrt(((pts - mu) ** 2).sum(axis=1).mean())) or 1.0
    x, y = ((pts - mu) / s).T
    d1 = np.stack([x * x, x * y, y * y], axis=1)
    d2 = np.stack([x, y, np.ones_like(x)], axis=1)
    s1, s2, s3 = d1.T @ d1, d1.T @ d2, d2.T @ d2
    t = -np.linalg.solve(s3, s2.T)
    m = s1 + s2 @ t
    m = np.array([m[2] / 2, -m[1], m[0] / 2])
    _, vecs = np.linalg.eig(m)
    vecs = np.real(vecs)
    cond = 4 * vecs[0] * vecs[2] - vecs[1] ** 2
    ok = np.nonzero(cond > 0)[0]
    if ok.size == 0:
        raise ValueError("points do not describe an ellipse")
    a1 = vecs[:, ok[0]]
    A, B, C = a1  # noqa: N806
    D, E, F = t @ a1  # noqa: N806
    # conic A x^2 + B xy + C y^2 + D x + E y + F = 0 -> centre, axes, angle
    den = B * B - 4 * A * C
    xc = (2 * C * D - B * E) / den
    yc = (2 * A * E - B * D) / den
    num = 2 * (A * E * E + C * D * D - B * D * E + den * F)
    root = math.sqrt((A - C) ** 2 + B * B)
    ax1 = -math.sqrt(abs(num * (A + C + root))) / den
    ax2 = -math.sqrt(abs(num * (A + C - root))) / den
    theta = 0.5 * math.atan2(-B, C - A)
    a, b = abs(ax1), abs(ax2)
    if b > a:
        a, b = b, a
        theta += math.pi / 2
    return float(xc * s + mu[0]), float(yc * s + mu[1]), float(a * s), float(b * s), float(theta)


def largest_region_filled(mask: np.ndarray) -> np.ndarray:
    """The largest connected region of a binary mask with its holes filled (one object, such as a
    fetal head); ValueError for an empty mask."""
    from scipy import ndimage

    m = np.asarray(mask, dtype=bool)
    lab, n = ndimage.label(m)
    if n == 0:
        raise ValueError("empty mask: no region")
    if n > 1:
        m = lab == int(np.argmax(np.bincount(lab.ravel())[1:])) + 1
    return ndimage.binary_fill_holes(m)


def mask_ellipse(mask: np.ndarray) -> tuple[float, float, float, float, float]:
    """Ellipse (xc, yc, a, b, theta) in pixels fitted to the boundary of the largest region of a
    2D mask (Y, X)."""
    return fit_ellipse(boundary_points(largest_region_filled(mask)))


def head_circumference_mm(
    mask: np.ndarray, pixel_mm: float, offset_px: float = 0.0,
    fit: Callable[[np.ndarray], tuple[float, float, float, float, float]] = mask_ellipse,
) -> float:
    """Head circumference (mm): Ramanujan perimeter of the ellipse ``fit`` gives for a 2D mask
    (default: least squares on the boundary), with both semi-axes shrunk by ``offset_px`` (a mask
    drawn that far outside the true ellipse)."""
    _, _, a, b, _ = fit(mask)
    return ellipse_perimeter(max(a - offset_px, 0.0), max(b - offset_px, 0.0)) * float(pixel_mm)
