"""A prognosis run as one call: the configured models on a survival table, ``results.json``
(and a report page) written into ``out`` after every model, as ``medfm.bench.run_bench`` does.

The CLI (``medfm prognosis``) parses options, loads the table with
``medfm.data.survival.load_survival_input`` and calls ``run_prognosis_job``; the report page is
rendered by a function it passes in (``report`` comes after ``tasks`` in the layers).

>>> table, checksum = load_survival_input("gbsg2")                      # doctest: +SKIP
>>> run = run_prognosis_job(table, prognosis_config("coxph"), "runs/p")  # doctest: +SKIP
>>> run.records[0].metrics["c_harrell"].value                            # doctest: +SKIP
0.69...
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfm.data.survival import SurvivalTable
from medfm.errors import ConfigError, InputError
from medfm.results import Record
from medfm.tasks.survival.cv import PrognosisConfig, run_prognosis
from medfm.tasks.survival.fusion import FusionConfig

FUSIONS = ("early", "late-rank", "late-stack")
# (records, title) -> a self-contained HTML page
ReportRenderer = Callable[[Sequence[Record], str], str]


def prognosis_config(
    models: str | Sequence[str],
    fusion: str = "early",
    pca: int | None = None,
    log_skewed: bool = False,
    splines: int = 0,
    interactions: bool = False,
    **protocol: Any,
) -> PrognosisConfig:
    """A PrognosisConfig from the command line's terms: comma-separated ``models``, ``fusion``
    one of ``FUSIONS``; ``protocol``: the other PrognosisConfig fields (cv, seed, n_boot, ...)."""
    names = tuple(m.strip() for m in (models.split(",") if isinstance(models, str) else models) if m.strip())
    if not names:
        raise ConfigError("--model: give at least one model")
    if fusion not in FUSIONS:
        raise ConfigError(f"--fusion must be early, late-rank or late-stack, got {fusion!r}")
    mode, _, combine = fusion.partition("-")
    fusion_cfg = FusionConfig(
        mode=mode,
        combine=combine or "rank",
        pca_components=pca,
        log_skewed=log_skewed,
        splines=splines,
        interactions=interactions,
    )
    return PrognosisConfig(models=names, fusion=fusion_cfg, **protocol)


@dataclass
class PrognosisRun:
    """What a run produced: one Record per model (failed ones carry ``extra['error']``) and the
    files written (name -> path)."""

    records: list[Record]
    files: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> dict[str, str]:
        """Model -> error, for the models that could not be evaluated."""
        return {r.model: str(r.extra["error"]) for r in self.records if r.extra.get("error")}


def _set_torch_threads(cfg: PrognosisConfig) -> None:
    """DeepSurv is the only model using torch: give it medfm's thread count (MEDFM_THREADS)."""
    if "deepsurv" in cfg.models:
        import torch

        from medfm._runtime import default_threads

        torch.set_num_threads(default_threads())


def _writer(out: Path, spec: dict[str, Any], title: str, report: ReportRenderer | None, files: dict[str, str]):
    """``save(records)``: results.json (and report.html), atomically, after every model."""
    from medfm._paths import atomic_write_text
    from medfm.results import write_results

    def save(records: list[Record]) -> None:
        files["results"] = str(write_results(out / "results.json", records, spec))
        if report is not None:
            atomic_write_text(out / "report.html", report(records, title))
            files["report"] = str(out / "report.html")

    return save


def run_prognosis_job(
    table: SurvivalTable,
    cfg: PrognosisConfig,
    out: str | Path | None = None,
    *,
    data_checksum: str | None = None,
    report: ReportRenderer | None = None,
    progress: bool = True,
) -> PrognosisRun:
    """Evaluate every model of ``cfg`` on ``table``; with ``out`` (an existing folder, see
    ``medfm._paths.prepare_out_dir``) write ``results.json`` and, given ``report``, ``report.html``
    after each model, so a long run keeps what it finished.

    Raises InputError (after writing the failed records) when no model could be fitted.
    """
    _set_torch_threads(cfg)
    imputed = table.missing()
    if imputed:  # said once here; every Record keeps it in extra['imputed']
        counts = ", ".join(f"{k} {n}" for k, n in imputed.items())
        print(
            f"prognosis: {table.name}: missing covariate values imputed per fold from training rows "
            f"(median / most frequent level, plus a missing indicator): {counts} rows",
            file=sys.stderr,
        )
    files: dict[str, str] = {}
    spec = {"command": "prognosis", "dataset": table.name, "config": cfg}
    save = _writer(Path(out), spec, f"Prognosis: {table.name}", report, files) if out is not None else None
    records = run_prognosis(table, cfg, data_checksum=data_checksum, progress=progress, on_record=save)
    run = PrognosisRun(records, files)
    if len(run.failed) == len(records):
        reasons = "; ".join(f"{m}: {e}" for m, e in run.failed.items())
        where = f" (errors recorded in {files['results']})" if "results" in files else ""
        raise InputError(f"{table.name}: no model could be fitted{where}: {reasons}")
    return run
