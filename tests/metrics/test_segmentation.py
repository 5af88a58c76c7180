"""Segmentation metrics equal MONAI's on the same arrays; empty-mask conventions; ellipse fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import (
    DiceMetric,
    compute_average_surface_distance,
    compute_hausdorff_distance,
    compute_iou,
    compute_surface_dice,
)

from medfm.metrics.segmentation import (
    binary_metrics,
    ellipse_perimeter,
    head_circumference_mm,
    label_metrics,
    mask_ellipse,
    summarize,
)
from medfm.results import MetricValue


def _blob(shape: tuple[int, ...], centre: tuple[float, ...], radius: float) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius**2


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(a[None, None].astype(np.float32))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.5, 0.7, 0.9)])
def test_binary_metrics_equal_monai_3d(spacing: tuple[float, ...]) -> None:
    gt = _blob((20, 24, 22), (10, 12, 11), 6)
    pred = _blob((20, 24, 22), (11, 12, 9), 5.5)
    m = binary_metrics(pred, gt, spacing, tolerance_mm=1.5)
    p, g = _t(pred), _t(gt)
    dm = DiceMetric(include_background=True, reduction="mean")
    dm(p, g)
    assert m["dice"] == pytest.approx(float(dm.aggregate()), abs=1e-6)
    assert m["iou"] == pytest.approx(float(compute_iou(p, g, include_background=True)), abs=1e-6)
    hd = compute_hausdorff_distance(p, g, include_background=True, percentile=95, spacing=spacing)
    assert m["hd95_mm"] == pytest.approx(float(hd), abs=1e-5)
    asd = compute_average_surface_distance(p, g, include_background=True, symmetric=True, spacing=spacing)
    assert m["assd_mm"] == pytest.approx(float(asd), abs=1e-5)
    nsd = compute_surface_dice(p, g, [1.5], include_background=True, spacing=spacing)
    assert m["nsd"] == pytest.approx(float(nsd), abs=1e-6)
    vox = float(np.prod(spacing)) / 1000
    assert m["volume_diff_ml"] == pytest.approx((pred.sum() - gt.sum()) * vox)
    assert 0 < m["dice"] < 1 and m["hd95_mm"] > 0


def test_spacing_changes_distances_not_overlap() -> None:
    gt = _blob((30, 30), (15, 15), 8)
    pred = _blob((30, 30), (15, 18), 8)
    a = binary_metrics(pred, gt, (1.0, 1.0))
    b = binary_metrics(pred, gt, (2.0, 2.0))
    assert a["dice"] == pytest.approx(b["dice"])
    assert b["hd95_mm"] == pytest.approx(2 * a["hd95_mm"], rel=1e-5)
    assert b["assd_mm"] == pytest.approx(2 * a["assd_mm"], rel=1e-5)


def test_empty_conventions() -> None:
    z = np.zeros((8, 8), bool)
    one = z.copy()
    one[2:5, 2:5] = True
    both = binary_metrics(z, z, (1.0, 1.0))
    assert both["dice"] == 1.0 and both["iou"] == 1.0 and both["nsd"] == 1.0
    assert both["hd95_mm"] == 0.0 and both["assd_mm"] == 0.0
    miss = binary_metrics(z, one, (1.0, 1.0))
    assert miss["dice"] == 0.0 and miss["nsd"] == 0.0
    assert math.isnan(miss["hd95_mm"]) and math.isnan(miss["assd_mm"])
    s = summarize([both["hd95_mm"], miss["hd95_mm"], 2.0])
    assert s.n == 3 and s.n_undefined == 1 and s.value == pytest.approx(1.0)
    assert s.text(2).endswith("(1 undef.)")
    none = summarize([miss["hd95_mm"]])
    assert math.isnan(none.value) and none.ci_low is None and none.n_undefined == 1 and none.text().startswith("n/a")


def test_label_metrics_per_class() -> None:
    gt = np.zeros((10, 12, 12), np.uint8)
    gt[2:6, 2:6, 2:6] = 1
    gt[5:9, 6:10, 6:10] = 2
    pred = gt.copy()
    pred[pred == 2] = 0
    m = label_metrics(pred, gt, [1, 2], (1.0, 1.0, 1.0))
    assert m[1]["dice"] == 1.0 and m[2]["dice"] == 0.0


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shape"):
        binary_metrics(np.zeros((3, 3)), np.zeros((3, 4)), (1.0, 1.0))


def test_summarize_bootstrap_brackets_mean() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(0.8, 0.05, 50)
    s = summarize(v, seed=1)
    assert isinstance(s, MetricValue) and s.n == 50 and s.n_undefined == 0
    assert s.ci_low < s.value < s.ci_high and s.value == pytest.approx(v.mean())
    assert summarize(v, seed=1) == s
    assert s.ci_high - s.ci_low < 0.05
    narrow = summarize(v, seed=1, ci=0.5)  # the CI level is ``ci``, as everywhere else in medfm.metrics
    assert s.ci_low < narrow.ci_low < narrow.ci_high < s.ci_high


def _ellipse_mask(h: int, w: int, xc: float, yc: float, a: float, b: float, theta: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    x, y = xx - xc, yy - yc
    c, s = math.cos(theta), math.sin(theta)
    u, v = x * c + y * s, -x * s + y * c
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def test_ellipse_fit_recovers_parameters() -> None:
    mask = _ellipse_mask(200, 260, 130.3, 95.7, 90.0, 60.0, 0.4)
    xc, yc, a, b, theta = mask_ellipse(mask)
    assert xc == pytest.approx(130.3, abs=0.3) and yc == pytest.approx(95.7, abs=0.3)
    assert a == pytest.approx(90.0, abs=0.3) and b == pytest.approx(60.0, abs=0.3)
    assert math.cos(2 * (theta - 0.4)) == pytest.approx(1.0, abs=1e-3)
    hc = head_circumference_mm(mask, 0.2, offset_px=0.0)
    assert hc == pytest.approx(ellipse_perimeter(90, 60) * 0.2, rel=0.003)


def test_ramanujan_circle() -> None:
    assert ellipse_perimeter(3.0, 3.0) == pytest.approx(2 * math.pi * 3)
