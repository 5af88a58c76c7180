"""``medfm seg-prompt-eval`` in-process on the tiny random SamModel: outputs, seeding, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from medfm.cli.main import main
from medfm.io import Image, write_nifti
from medfm.results import read_results


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _volumes(root: Path, n: int = 4) -> Path:
    """MSD-style imagesTr/ + labelsTr/: bright boxes (label 1) in noise; splits.csv puts the
    last two cases in test."""
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(n):
        lab = np.zeros((5, 40, 50), np.uint8)
        lab[1:4, 10 + i : 30, 15 : 35 - i] = 1
        img = (rng.random(lab.shape) * 50 + 200 * lab).astype(np.float32)
        write_nifti(Image(img[None], (2.0, 1.0, 1.0)), root / "imagesTr" / f"c{i}.nii.gz")
        write_nifti(Image(lab[None], (2.0, 1.0, 1.0)), root / "labelsTr" / f"c{i}.nii.gz")
    with open(root / "splits.csv", "w") as f:
        f.write("id,split\n" + "".join(f"c{i},{'test' if i >= n - 2 else 'train'}\n" for i in range(n)))
    return root


def test_seg_prompt_eval_3d_and_points(tmp_path, capsys) -> None:
    data = _volumes(tmp_path / "data")
    out = tmp_path / "o"
    rc, so, err = _run(capsys, "seg-prompt-eval", "--model", "test/sam-tiny", "--folder", str(data), "--jitter", "3",
                       "--n-boot", "50", "--out", str(out), "--json")
    assert rc == 0, err
    doc = json.loads(so)
    assert doc["protocol"] == "prompt-propagate" and doc["n_cases"] == 2 and doc["labels"] == [1]
    assert [r["case"] for r in doc["cases"]] == ["c2", "c3"]
    assert all(0.0 <= r["dice"] <= 1.0 for r in doc["cases"])
    spec, records = read_results(out / "results.json")  # the results.json medfm bench / report read
    (rec,) = records
    assert (rec.split, rec.model, rec.protocol, rec.n) == ("test", "test/sam-tiny", "prompt-propagate", 2)
    assert rec.metrics["dice"].value == pytest.approx(np.mean([r["dice"] for r in doc["cases"]]))
    assert "dice[1]" in rec.metrics and rec.provenance["weights_hash"] and rec.provenance["data_checksum"]
    assert spec["prompt"] == "propagate" and spec["jitter"] == 3
    with open(out / "cases.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == ["c2", "c3"] and float(rows[0]["dice"]) == pytest.approx(doc["cases"][0]["dice"], rel=1e-5)

    # points on every slice; the same seed gives the same scores, a sweep over --limit is honoured
    argv = ["seg-prompt-eval", "--model", "test/sam-tiny", "--folder", str(data), "--prompt", "points", "--n-points",
            "3", "--limit", "1", "--n-boot", "20", "--json"]
    rc, so1, err = _run(capsys, *argv, "--out", str(tmp_path / "p1"))
    assert rc == 0, err
    rc, so2, err = _run(capsys, *argv, "--out", str(tmp_path / "p2"))
    assert rc == 0, err
    d1, d2 = json.loads(so1), json.loads(so2)
    assert d1["protocol"] == "prompt-points3" and d1["n_cases"] == 1
    assert d1["cases"] == d2["cases"]


def test_seg_prompt_eval_fixed_boxes_2d(tmp_path, capsys) -> None:
    from PIL import Image as PILImage

    root = tmp_path / "d2"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        m = np.zeros((30, 40), np.uint8)
        m[5:20, 8 + i : 30] = 255
        img = (rng.random((30, 40)) * 60 + (m > 0) * 180).astype(np.uint8)
        PILImage.fromarray(img).save(root / "images" / f"p{i}.png")
        PILImage.fromarray(m).save(root / "masks" / f"p{i}.png")
    (root / "splits.csv").write_text("id,split\np0,train\np1,test\np2,test\n")
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("case,x0,y0,x1,y1\np1,9,5,30,20\np2,10,5,30,20\n")
    rc, so, err = _run(capsys, "seg-prompt-eval", "--model", "test/medsam-tiny", "--folder", str(root), "--prompts",
                       str(prompts), "--n-boot", "20", "--out", str(tmp_path / "o"), "--json")
    assert rc == 0, err
    doc = json.loads(so)
    assert doc["protocol"] == "prompt-fixed-box" and doc["n_cases"] == 2
    assert any("no pixel spacing" in n for n in doc["notes"])
    # default for 2D data: jittered boxes
    rc, so, err = _run(capsys, "seg-prompt-eval", "--model", "test/medsam-tiny", "--folder", str(root), "--n-boot", "20",
                       "--out", str(tmp_path / "o2"), "--json")
    assert rc == 0, err
    assert json.loads(so)["protocol"] == "prompt-box"

    # a fixed box outside the 40x30 image: exit 2, one line naming the prompt file row
    prompts.write_text("case,x0,y0,x1,y1\np1,9,5,45,20\np2,10,5,30,20\n")
    rc, _, err = _run(capsys, "seg-prompt-eval", "--model", "test/medsam-tiny", "--folder", str(root), "--prompts",
                      str(prompts), "--out", str(tmp_path / "o3"))
    assert rc == 2 and "outside" in err and "prompts.csv:2" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o3").exists()  # refused before anything was run or written
    # a label in a mask without a prompt is an error, not a silent miss
    prompts.write_text("case,x0,y0,x1,y1\np1,9,5,30,20\n")
    rc, _, err = _run(capsys, "seg-prompt-eval", "--model", "test/medsam-tiny", "--folder", str(root), "--prompts",
                      str(prompts), "--out", str(tmp_path / "o4"))
    assert rc == 2 and "no prompt for label 1" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _run(capsys, "seg-prompt-eval", "--model", "test/medsam-tiny", "--folder", str(root), "--prompt",
                      "propagate", "--out", str(tmp_path / "o5"))
    assert rc == 2 and "3D" in err and len(err.strip().splitlines()) == 1


def test_seg_prompt_eval_bad_inputs_exit_2(tmp_path, capsys) -> None:
    from PIL import Image as PILImage

    plain = tmp_path / "plain"  # images only: no masks
    plain.mkdir()
    for i in range(3):
        PILImage.fromarray(np.zeros((8, 8), np.uint8)).save(plain / f"x{i}.png")
    rc, _, err = _run(capsys, "seg-prompt-eval", "--model", "test/sam-tiny", "--folder", str(plain),
                      "--out", str(tmp_path / "o"))
    assert rc == 2 and "without masks" in err and len(err.strip().splitlines()) == 1
    rc, _, err = _run(capsys, "seg-prompt-eval", "--model", "test/sam-tiny", "--out", str(tmp_path / "o"))
    assert rc == 2 and "--dataset" in err
    rc, _, err = _run(capsys, "seg-prompt-eval", "--model", "test/sam-tiny", "--folder", str(plain), "--prompt", "lasso",
                      "--out", str(tmp_path / "o"))
    assert rc == 2 and "--prompt" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("case,x0,y0\na,1,2\n")
    rc, _, err = _run(capsys, "seg-prompt-eval", "--model", "test/sam-tiny", "--folder", str(plain), "--prompts",
                      str(bad), "--out", str(tmp_path / "o"))
    assert rc == 2 and "columns" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()  # nothing written for bad input found before the run
