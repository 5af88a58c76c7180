"""seg-eval logic: per-case/per-label rows equal MONAI, empty cases counted, bad input refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

from medfm.errors import InputError
from medfm.io.image import Image
from medfm.tasks.segmentation.evaluate import evaluate_pairs, to_records, write_case_csv


def _pair(seed: int, shape=(12, 20, 18)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = np.zeros(shape, np.uint8)
    gt[2:8, 4:12, 3:10] = 1
    gt[6:10, 10:16, 8:15] = 2
    pred = np.roll(gt, int(rng.integers(-2, 3)), axis=2)
    pred[rng.random(shape) < 0.01] = 1
    return pred, gt


def test_rows_equal_monai_on_same_arrays() -> None:
    sp = (2.0, 0.8, 0.8)
    pairs = []
    arrays = []
    for i in range(3):
        p, g = _pair(i)
        arrays.append((p, g))
        pairs.append((f"c{i}", Image(p[None], sp), Image(g[None], sp), Path(f"p{i}"), Path(f"g{i}")))
    res = evaluate_pairs(pairs, labels=[1, 2], tolerance_mm=1.0, n_boot=200)
    assert res.n_cases == 3 and len(res.rows) == 6
    for (p, g), rows in zip(arrays, [res.rows[0:2], res.rows[2:4], res.rows[4:6]]):
        oh_p = torch.nn.functional.one_hot(torch.as_tensor(p, dtype=torch.long), 3).permute(3, 0, 1, 2)[None].float()
        oh_g = torch.nn.functional.one_hot(torch.as_tensor(g, dtype=torch.long), 3).permute(3, 0, 1, 2)[None].float()
        dice = compute_dice(oh_p, oh_g, include_background=False)[0]
        hd = compute_hausdorff_distance(oh_p, oh_g, percentile=95, spacing=sp)[0]
        nsd = compute_surface_dice(oh_p, oh_g, [1.0, 1.0], spacing=sp)[0]
        for k, r in enumerate(rows):
            assert r["dice"] == pytest.approx(float(dice[k]), abs=1e-6)
            assert r["hd95_mm"] == pytest.approx(float(hd[k]), abs=1e-5)
            assert r["nsd"] == pytest.approx(float(nsd[k]), abs=1e-6)
    mean_dice = np.mean([(r1["dice"] + r2["dice"]) / 2 for r1, r2 in zip(res.rows[0::2], res.rows[1::2])])
    assert res.summary["mean"]["dice"].value == pytest.approx(mean_dice)
    s = res.summary["label 1"]["dice"]
    assert s.ci_low <= s.value <= s.ci_high and s.n == 3


def test_empty_cases_are_counted(tmp_path: Path) -> None:
    z = np.zeros((1, 8, 8), np.uint8)
    one = z.copy()
    one[0, 2:5, 2:5] = 1
    pairs = [
        ("both_empty", Image(z, (1.0, 1.0)), Image(z, (1.0, 1.0)), Path("a"), Path("b")),
        ("missed", Image(z, (1.0, 1.0)), Image(one, (1.0, 1.0)), Path("c"), Path("d")),
        ("hit", Image(one, (1.0, 1.0)), Image(one, (1.0, 1.0)), Path("e"), Path("f")),
    ]
    res = evaluate_pairs(pairs, labels=[1], n_boot=100)
    d = res.summary["label 1"]["dice"]
    assert d.n == 3 and d.value == pytest.approx((1 + 0 + 1) / 3)
    hd = res.summary["label 1"]["hd95_mm"]
    assert hd.n_undefined == 1 and hd.value == 0.0
    csv = write_case_csv(res.rows, tmp_path / "cases.csv").read_text().splitlines()
    assert len(csv) == 4 and csv[0].startswith("case,label,dice")
    rec = to_records(res, "toy", "test", "m", "seg-eval", {"x": 1})[0]
    assert rec.metrics["dice[1]"].value == pytest.approx(2 / 3) and rec.n == 3


def test_geometry_mismatch_names_both_files() -> None:
    a = Image(np.zeros((1, 4, 8, 8), np.uint8), (1.0, 1.0, 1.0))
    b = Image(np.zeros((1, 4, 8, 8), np.uint8), (2.0, 1.0, 1.0))
    c = Image(np.zeros((1, 4, 8, 9), np.uint8), (1.0, 1.0, 1.0))
    for other in (b, c):
        with pytest.raises(InputError, match=r"pred\.nii\.gz.*gt\.nii\.gz"):
            evaluate_pairs([("x", a, other, Path("pred.nii.gz"), Path("gt.nii.gz"))], labels=[1])


def test_undeclared_label_value_refused() -> None:
    g = np.zeros((1, 6, 6), np.uint8)
    g[0, 1:3, 1:3] = 1
    p = g.copy()
    p[0, 4, 4] = 3
    with pytest.raises(InputError, match=r"pred\.png.*\[3\]"):
        evaluate_pairs([("x", Image(p, (1.0, 1.0)), Image(g, (1.0, 1.0)), Path("pred.png"), Path("gt.png"))], labels=[1])
    with pytest.raises(InputError, match=r"gt\.png"):
        evaluate_pairs([("x", Image(g, (1.0, 1.0)), Image(g * 2, (1.0, 1.0)), Path("pred.png"), Path("gt.png"))], labels=[1])
