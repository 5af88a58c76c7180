"""Leaderboard ordering and aggregation; the HTML report's sections and embedded figures."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

from medfm.report import build_report, leaderboard, primary_metric, section
from medfm.report.plots import reliability_bins, roc_curves
from medfm.report.tables import higher_is_better, rich_tables
from medfm.results import MetricValue, Record, write_results


def _rec(model: str, protocol: str, shots: int | None, seed: int, auroc: float, ece: float = 0.1) -> Record:
    fpr = [0.0, 0.2, 1.0]
    return Record(
        dataset="breastmnist", split="test", model=model, protocol=protocol, shots=shots, seed=seed, n=156,
        seconds=1.0, metrics={"auroc": MetricValue(auroc, auroc - 0.05, min(1.0, auroc + 0.05)), "ece": MetricValue(ece, 0.0, 0.2)},
        provenance={"dataset_card": {"name": "breastmnist", "task": "classification", "labels": ["malignant", "benign"],
                                     "splits": {"train": 546, "val": 78, "test": 156}, "license": "CC BY 4.0"},
                    "versions": {"python": "3.11"}, "git_commit": "abc", "weights_hash": "w", "data_checksum": "d"},
        extra={"n_train": 546, "n_classes": 2, "trained": protocol == "scratch",
               "roc": {"task": "binary", "curves": [{"name": "benign", "fpr": fpr, "tpr": [0.0, auroc, 1.0]}]},
               "reliability": {"confidence": [0.55, None, 0.9], "accuracy": [0.5, None, 0.8], "count": [10, 0, 20]},
               "hyperparameters": {"C": 1.0}},
    )


def _records() -> list[Record]:
    recs = []
    for model, proto, base in (("random/vit-b16", "knn", 0.6), ("random/vit-b16", "linear_probe", 0.7), ("scratch/resnet18", "scratch", 0.8)):
        for shots in (1, 4, None):
            for seed in ((0,) if shots is None else (0, 1, 2)):
                recs.append(_rec(model, proto, shots, seed, base + (0.05 if shots is None else 0.01 * (shots or 0)) + 0.01 * seed))
    return recs


def test_leaderboard_best_first_with_seed_aggregation() -> None:
    recs = _records()
    assert primary_metric(recs) == "auroc"
    rows = leaderboard(recs)["breastmnist"]
    values = [r.value for r in rows]
    assert values == sorted(values, reverse=True)
    top = rows[0]
    assert (top.model, top.protocol, top.shots, top.n_seeds) == ("scratch/resnet18", "scratch", None, 1)
    assert top.value_text().startswith("0.850 [0.80, 0.90]")
    few = next(r for r in rows if r.model == "random/vit-b16" and r.protocol == "knn" and r.shots == 4)
    assert few.n_seeds == 3 and few.value == pytest.approx(np.mean([0.64, 0.65, 0.66]))
    assert few.sd == pytest.approx(np.std([0.64, 0.65, 0.66], ddof=1))
    assert "± " in few.value_text() and "(3 seeds)" in few.value_text()
    assert higher_is_better("auroc") and not higher_is_better("ece")
    ranked_by_ece = leaderboard(recs, metric="ece")["breastmnist"]
    assert len(ranked_by_ece) == len(rows)
    assert rich_tables(leaderboard(recs))[0].row_count == len(rows)


def test_report_has_sections_and_embedded_images(tmp_path) -> None:
    path = write_results(tmp_path / "results.json", _records(), {"datasets": ["breastmnist"]})
    extra = section("survival", "Survival", "<p>Kaplan-Meier here</p>")
    out = build_report(path, tmp_path / "report.html", extra_sections=[extra], notes=["finetune left out"])
    text = out.read_text()
    for anchor in ("summary", "leaderboard", "label-efficiency", "roc", "reliability", "dataset", "provenance", "notes", "survival"):
        assert f"id='{anchor}'" in text, anchor
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    assert len(images) == 3  # label efficiency, ROC, reliability
    for b64 in images:
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "CC BY 4.0" in text and "0: malignant" in text and "finetune left out" in text
    assert "http" not in text.replace("http-equiv", "")  # self-contained: nothing fetched
    assert text.index("id='survival'") < text.index("id='provenance'")


def test_report_without_curves_says_so(tmp_path) -> None:
    rec = _rec("random/vit-b16", "knn", None, 0, 0.7)
    rec.extra = {}
    out = build_report(({}, [rec]), tmp_path / "r.html")
    text = out.read_text()
    assert "data:image/png" not in text and "No ROC points stored" in text


def test_plot_input_normalisation() -> None:
    curves = roc_curves({"task": "multiclass", "curves": [{"name": "a", "fpr": [0, 1], "tpr": [0, 1]}, {"name": "b", "fpr": [0, 1], "tpr": [0, 1]}]})
    assert [c[0] for c in curves] == ["a", "b"]
    assert roc_curves({"error": "one class"}) == []
    conf, acc, cnt = reliability_bins({"confidence": [0.5, None], "accuracy": [0.4, None], "count": [3, 0]})
    assert conf.tolist() == [0.5] and acc.tolist() == [0.4] and cnt.tolist() == [3]
