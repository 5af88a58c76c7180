"""Report generation protocol on tiny report data built in the test."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfm.data.reports import load_report_folder, paired_reports
from medfm.errors import InputError
from medfm.tasks.report_gen import ReportConfig, evaluate_reports, retrieve_reports, run_report_generation

ABNORMAL = "Cardiomegaly. Small left pleural effusion."
NORMAL = "Heart size is normal. No pleural effusion or pneumothorax."


def make_report_folder(root: Path, n: int = 12, seed: int = 0) -> Path:
    """Bright-blob images carry the abnormal report, dark ones the normal report."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        abnormal = i % 2 == 0
        img = rng.normal(60, 10, (32, 32))
        if abnormal:
            img[8:24, 8:24] += 120
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "images" / f"im{i}.png")
        rows.append({"id": f"r{i}", "image": f"im{i}.png", "report": ABNORMAL if abnormal else NORMAL,
                     "split": "test" if i >= n - 4 else "train"})
    with (root / "reports.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "image", "report", "split"])
        w.writeheader()
        w.writerows(rows)
    return root


def test_retrieval_finds_matching_reports(tmp_path) -> None:
    items = load_report_folder(make_report_folder(tmp_path / "ds"))
    train = [it for it in items if it.split == "train"]
    test = [it for it in items if it.split == "test"]
    preds, _ = retrieve_reports(train, test)
    assert preds == [it.report for it in test]
    rec = run_report_generation(train, test, ReportConfig(meteor="nltk", n_boot=50))
    assert rec.metrics["bleu4"].value == pytest.approx(1.0, abs=1e-6)
    assert rec.metrics["ce_f1"].value == pytest.approx(1.0)
    assert rec.protocol == "report_gen/retrieval" and rec.provenance["data_checksum"]


def test_metrics_drop_for_wrong_reports() -> None:
    refs = [ABNORMAL, NORMAL, ABNORMAL, NORMAL]
    good = evaluate_reports(refs, refs, meteor="nltk", n_boot=50)
    bad = evaluate_reports([NORMAL, ABNORMAL, NORMAL, ABNORMAL], refs, meteor="nltk", n_boot=50)
    for k in ("bleu1", "rouge_l", "cider", "meteor_nltk", "ce_f1"):
        assert bad[k].value < good[k].value, k
    assert good["rouge_l"].ci_low is not None


def test_paired_csvs(tmp_path) -> None:
    (tmp_path / "p.csv").write_text("id,report\na,no effusion\nb,cardiomegaly\n")
    (tmp_path / "r.csv").write_text("id,report\nb,cardiomegaly\na,no effusion\n")
    ids, p, r = paired_reports(tmp_path / "p.csv", tmp_path / "r.csv")
    assert ids == ["b", "a"] and p == r
    (tmp_path / "r2.csv").write_text("id,report\nc,x\n")
    with pytest.raises(InputError, match="no prediction"):
        paired_reports(tmp_path / "p.csv", tmp_path / "r2.csv")
    (tmp_path / "bad.csv").write_text("name,text\n")
    with pytest.raises(InputError, match="missing column"):
        paired_reports(tmp_path / "bad.csv", tmp_path / "r.csv")


def test_evaluate_reports_bertscore(tmp_path) -> None:
    import sys

    from medfm.metrics import text as tm

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "metrics"))
    from test_text import make_tiny_bert

    preds, refs = [NORMAL, ABNORMAL, NORMAL], [NORMAL, ABNORMAL, ABNORMAL]
    bert = make_tiny_bert(tmp_path / "bert", words=[NORMAL, ABNORMAL])
    skipped: dict[str, str] = {}
    m = evaluate_reports(preds, refs, meteor="off", n_boot=50, bertscore_model=bert, skipped=skipped)
    per = tm.bertscore(preds, refs, bert)["f1"]
    assert not skipped and m["bertscore_f1"].value == pytest.approx(per.mean())
    assert per[0] == pytest.approx(1.0, abs=1e-5) and per[2] < 0.999
    m = evaluate_reports(preds, refs, meteor="off", n_boot=50, bertscore_model=str(tmp_path / "none"), skipped=skipped)
    assert "bertscore_f1" not in m and "not found" in skipped["bertscore"]
