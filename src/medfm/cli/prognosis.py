"""``medfm prognosis``: survival models on a built-in dataset or a CSV/Parquet table, with CV,
bootstrap CIs, ``results.json`` and an HTML report section.

One library call per step: ``load_survival_input`` (data), ``run_prognosis_job`` (task);
this module only parses options and prints."""

from __future__ import annotations

from pathlib import Path

import typer

from medfm.cli._common import DataDir, Force, Json, OptionalOutDir

MODELS_HELP = "Comma-separated models: coxph, coxnet, rsf, gbsa, cgb, deepsurv, ssvm, kssvm, ensemble."
METRIC_COLUMNS = ("c_harrell", "c_uno", "td_auc_mean", "ibs")


def register(app: typer.Typer) -> None:
    app.command("prognosis")(prognosis_command)


def _render_report(records, title: str) -> str:
    from medfm.report.survival import standalone_page, survival_section

    return standalone_page(survival_section(records, title=title))


def _print_table(records) -> None:
    from rich.table import Table

    from medfm.cli._common import out_console

    t = Table("model", "split", *METRIC_COLUMNS)
    for r in records:
        cells = []
        for k in METRIC_COLUMNS:
            v = r.metrics.get(k)
            cells.append("-" if v is None else v.text(3))
        if r.extra.get("error"):
            cells = ["failed"] + ["-"] * (len(METRIC_COLUMNS) - 1)
        t.add_row(r.model, r.split, *cells)
    out_console.print(t)


def _summary(run) -> dict:
    keys = ("dataset", "split", "model", "n", "seconds", "metrics")
    return {
        "files": run.files,
        "records": [{**{k: getattr(r, k) for k in keys}, "error": r.extra.get("error")} for r in run.records],
    }


def prognosis_command(
    dataset: str = typer.Option(
        ..., "--dataset", "-d", help="Built-in survival dataset name, or a .csv/.parquet table."
    ),
    model: str = typer.Option("coxph,coxnet,rsf,gbsa,deepsurv", "--model", "-m", help=MODELS_HELP),
    cv: int = typer.Option(5, "--cv", help="Outer folds (event-stratified); 0 = one held-out test split."),
    test_size: float = typer.Option(0.25, "--test-size", help="Test share when --cv 0."),
    repeats: int = typer.Option(
        1, "--repeats", help="Repeat the outer CV with fold seeds seed, seed+1, ...; metrics average every fold."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for splits, models and bootstrap."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples of test rows for CIs (0: none)."),
    tune: bool = typer.Option(
        False, "--tune", help="Choose hyper-parameters by inner CV on each training fold (nested CV)."
    ),
    inner_cv: int = typer.Option(5, "--inner-cv", help="Inner folds (event-stratified) for --tune."),
    fusion: str = typer.Option("early", "--fusion", help="early | late-rank | late-stack (late: one model per block)."),
    pca: int | None = typer.Option(None, "--pca", help="PCA components for blocks wider than 50 columns."),
    log_skewed: bool = typer.Option(
        False,
        "--log-skewed",
        help="log1p of skewed non-negative covariates (chosen on training rows; --tune chooses it).",
    ),
    splines: int = typer.Option(
        0,
        "--splines",
        help="Cubic B-spline knots for continuous covariates (0: off; --tune chooses it for Cox-type models).",
    ),
    interactions: bool = typer.Option(
        False,
        "--interactions",
        help="Add standardised pairwise products of the tabular covariates (for penalised Cox, e.g. coxnet).",
    ),
    embeddings: Path | None = typer.Option(
        None, "--embeddings", help="Image embeddings (.npy rows aligned, or .npz with embeddings+ids)."
    ),
    schema: Path | None = typer.Option(
        None, "--schema", help="Schema YAML for a table file (time, event, id, covariates)."
    ),
    time_col: str | None = typer.Option(None, "--time-col", help="Time column of a table file (without --schema)."),
    event_col: str | None = typer.Option(
        None, "--event-col", help="Event column (0/1) of a table file (without --schema)."
    ),
    id_col: str | None = typer.Option(None, "--id-col", help="Row id column of a table file (without --schema)."),
    data_dir: DataDir = None,
    out: OptionalOutDir = None,
    force: Force = False,
    json_out: Json = False,
) -> None:
    """Fit survival models with cross-validation and report C-index, td-AUC, IBS and calibration with CIs."""
    from medfm.cli._common import err_console, out_console, output_folder, print_json
    from medfm.data.survival import load_survival_input
    from medfm.tasks.survival.run import prognosis_config, run_prognosis_job

    cfg = prognosis_config(
        model, fusion, pca, log_skewed, splines, interactions,
        cv=cv, seed=seed, n_boot=n_boot, tune=tune, inner_cv=inner_cv, test_size=test_size, repeats=repeats,
    )
    table, checksum = load_survival_input(dataset, data_dir, schema, time_col, event_col, id_col, embeddings)
    err_console.print(
        f"prognosis: {table.name}: {len(table)} rows, {int(table.event.sum())} events, "
        f"{len(table.schema.covariates)} covariates; models {', '.join(cfg.models)}"
    )
    with output_folder(out, force=force) as folder:
        run = run_prognosis_job(table, cfg, folder, data_checksum=checksum, report=_render_report)
    if json_out:
        print_json(_summary(run))
        return
    _print_table(run.records)
    for name, path in run.files.items():
        out_console.print(f"{name}: {path}")
