"""``medfm calibrate RUN`` on a tiny BreastMNIST bench run: predictions recomputed and checked, report written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medfm.cli.main import main

TINY = "test/vit-tiny-timm"


@pytest.mark.slow  # ~15 s: a 2-cell bench run, then the cells again
def test_calibrate_bench_run(shared_data: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["bench", "--data-dir", str(shared_data), "--dataset", "breastmnist", "--model", TINY,
                 "--protocol", "knn,linear_probe", "--shots", "all", "--seeds", "1", "--n-boot", "20",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["calibrate", str(run), "--data-dir", str(shared_data), "--n-boot", "50", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cells"] == 2 and not doc["skipped"]
    for row in doc["rows"]:
        assert row["temperature"] > 0
        assert 0.0 <= row["ece_after"] <= 1.0 and 0.0 <= row["conformal_coverage"] <= 1.0
        assert row["target_coverage"] == pytest.approx(0.9)
    out = run / "calibration"
    res = json.loads((out / "results.json").read_text())
    for rec in res["records"]:
        trust = rec["provenance"]["trust"]
        # the recomputed cell reproduces the stored test AUROC: the calibration is of the same predictions
        assert trust["predictions"] == "recomputed"
        assert trust["test_auroc_recomputed"] == pytest.approx(trust["test_auroc_stored"], abs=1e-9)
        assert rec["provenance"]["data_checksum"] and rec["metrics"]["ece_after"]["ci_low"] is not None
    assert "Calibration and abstention" in (out / "report.html").read_text()
    # again into the same folder: refused without --force (one line, exit 2)
    assert main(["calibrate", str(run), "--data-dir", str(shared_data), "--n-boot", "0"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["calibrate", str(tmp_path / "nothing")]) == 2
    assert "no results.json" in capsys.readouterr().err


def test_is_calibratable_keeps_single_label_records_only(tmp_path: Path) -> None:
    from medfm.report.trust import is_calibratable, results_path
    from medfm.results import Record

    def rec(n_classes: int, task: str) -> Record:
        return Record("d", "test", "m", "knn", {}, extra={"n_classes": n_classes},
                      provenance={"dataset_card": {"task": task}})

    assert is_calibratable(rec(2, "classification")) and is_calibratable(rec(5, "ordinal"))
    assert not is_calibratable(rec(14, "multilabel")) and not is_calibratable(rec(1, "classification"))
    (tmp_path / "results.json").write_text("{}")
    assert results_path(tmp_path) == tmp_path / "results.json" == results_path(tmp_path / "results.json")
