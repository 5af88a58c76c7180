"""``run_prognosis_job``: the prognosis run as one library call (results and report written
after every model, as ``run_bench`` does), and its config built from the command line's terms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medfm.data.survival import load_survival_input
from medfm.errors import ConfigError, InputError
from medfm.results import read_results
from medfm.tasks.survival.run import prognosis_config, run_prognosis_job


def test_job_writes_results_and_report_after_every_model(tmp_path: Path) -> None:
    table, checksum = load_survival_input("veterans")
    cfg = prognosis_config("coxph,coxnet", cv=3, n_boot=0)
    pages: list[int] = []

    def report(records, title: str) -> str:
        pages.append(len(records))
        return f"<html>{title}: {len(records)}</html>"

    run = run_prognosis_job(table, cfg, tmp_path, data_checksum=checksum, report=report, progress=False)
    assert pages == [1, 2] and run.failed == {}
    assert run.files == {"results": str(tmp_path / "results.json"), "report": str(tmp_path / "report.html")}
    spec, records = read_results(tmp_path / "results.json")
    assert spec["command"] == "prognosis" and [r.model for r in records] == ["coxph", "coxnet"]
    assert records[0].provenance["data_checksum"] == checksum
    assert (tmp_path / "report.html").read_text() == "<html>Prognosis: veterans: 2</html>"


def test_job_raises_when_nothing_was_fitted() -> None:
    table, _ = load_survival_input("veterans")
    tiny = table.subset(np.arange(8))  # 8 rows: no Cox model can be fitted
    with pytest.raises(InputError, match=r"veterans: no model could be fitted: coxph: "):
        run_prognosis_job(tiny, prognosis_config("coxph", cv=5, n_boot=0), progress=False)


def test_imputed_counts_are_recorded() -> None:
    table, _ = load_survival_input("flchain")
    small = table.subset(np.arange(600))
    run = run_prognosis_job(small, prognosis_config("coxnet", cv=2, n_boot=0), progress=False)
    assert run.records[0].extra["imputed"] == small.missing() and small.missing()["creatinine"] > 0


def test_config_from_command_line_terms() -> None:
    cfg = prognosis_config(" coxph , rsf ", "late-stack", pca=4, cv=3)
    assert cfg.models == ("coxph", "rsf") and (cfg.fusion.mode, cfg.fusion.combine) == ("late", "stack")
    assert cfg.fusion.pca_components == 4 and cfg.cv == 3
    with pytest.raises(ConfigError, match="--fusion must be"):
        prognosis_config("coxph", "middle")
    with pytest.raises(ConfigError, match="at least one model"):
        prognosis_config(" , ")
