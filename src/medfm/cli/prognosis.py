"""``medfm prognosis``: survival models on a built-in dataset or a CSV/Parquet table, with CV,
bootstrap CIs, ``results.json`` and an HTML report section."""

from __future__ import annotations

from pathlib import Path

import typer

MODELS_HELP = "Comma-separated models: coxph, coxnet, rsf, gbsa, cgb, deepsurv, ssvm, kssvm, ensemble."
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")


def register(app: typer.Typer) -> None:
    app.command("prognosis")(prognosis_command)


def _load_table(
    dataset: str,
    data_dir: Path | None,
    schema: Path | None,
    time_col: str | None,
    event_col: str | None,
    id_col: str | None,
):  # -> (SurvivalTable, checksum)
    from medfm._paths import file_hash
    from medfm.data.survival import SURVIVAL_DATASETS, dataset_file_hash, load_survival_dataset, read_table
    from medfm.errors import ConfigError

    if dataset in SURVIVAL_DATASETS:
        if schema or time_col or event_col:
            raise ConfigError(f"{dataset}: --schema/--time-col/--event-col apply to table files, not built-in datasets")
        table = load_survival_dataset(dataset)
        return table, dataset_file_hash(dataset)
    path = Path(dataset).expanduser()
    if not path.exists() and data_dir is not None and (Path(data_dir) / dataset).exists():
        path = Path(data_dir) / dataset
    if path.suffix.lower() not in TABLE_SUFFIXES and not path.exists():
        from medfm._registry import suggest

        names = SURVIVAL_DATASETS.names()
        raise ConfigError(
            f"unknown survival dataset '{dataset}'.{suggest(dataset, names)} Built-in: {', '.join(names)}; "
            "or give a .csv/.parquet table with --schema or --time-col/--event-col"
        )
    table = read_table(path, schema=schema, time_col=time_col, event_col=event_col, id_col=id_col)
    return table, file_hash(path)


def _add_embeddings(table, path: Path):  # -> SurvivalTable
    """Append an image-embedding block: .npy (N, D) row-aligned, or .npz with ``embeddings``
    (N, D) and optional ``ids`` matched to the table's id column."""
    import numpy as np

    from medfm.errors import InputError

    if not path.is_file():
        raise InputError(f"{path}: embeddings file not found")
    try:
        if path.suffix == ".npy":
            emb, ids = np.load(path), None
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "embeddings" not in z:
                    raise InputError(
                        f"{path}: .npz needs an 'embeddings' array (and optionally 'ids'); found {list(z.keys())}"
                    )
                emb = z["embeddings"]
                ids = z["ids"].astype(str) if "ids" in z else None
        else:
            raise InputError(f"{path}: embeddings must be .npy or .npz")
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read embeddings ({exc})") from exc
    if emb.ndim != 2 or not np.all(np.isfinite(emb)):
        raise InputError(f"{path}: embeddings must be a finite (N, D) array, got shape {emb.shape}")
    if ids is not None:
        pos = {k: i for i, k in enumerate(ids)}
        missing = [i for i in table.ids if i not in pos]
        if missing:
            raise InputError(f"{path}: no embedding for table ids {missing[:5]} (ids come from the schema's id column)")
        emb = emb[[pos[i] for i in table.ids]]
    elif len(emb) != len(table):
        raise InputError(f"{path}: {len(emb)} embeddings for {len(table)} table rows (add 'ids' to align them)")
    return table.with_block("image", emb, prefix="img")


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
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Folder to resolve a relative table path against."),
    out: Path | None = typer.Option(None, "--out", help="Write results.json and report.html here."),
    force: bool = typer.Option(False, "--force", help="Overwrite files in a non-empty --out."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
) -> None:
    """Fit survival models with cross-validation and report C-index, td-AUC, IBS and calibration with CIs."""
    from medfm._paths import atomic_write_text, prepare_out_dir
    from medfm._runtime import default_threads
    from medfm.cli._common import err_console, out_console, print_json
    from medfm.errors import ConfigError

    models = tuple(m.strip() for m in model.split(",") if m.strip())
    if not models:
        raise ConfigError("--model: give at least one model")
    if fusion not in ("early", "late-rank", "late-stack"):
        raise ConfigError(f"--fusion must be early, late-rank or late-stack, got {fusion!r}")
    from medfm.tasks.survival.cv import PrognosisConfig, run_prognosis
    from medfm.tasks.survival.fusion import FusionConfig

    mode, _, combine = fusion.partition("-")
    cfg = PrognosisConfig(
        models=models,
        cv=cv,
        seed=seed,
        n_boot=n_boot,
        tune=tune,
        inner_cv=inner_cv,
        test_size=test_size,
        repeats=repeats,
        fusion=FusionConfig(
            mode=mode,
            combine=combine or "rank",
            pca_components=pca,
            log_skewed=log_skewed,
            splines=splines,
            interactions=interactions,
        ),
    )
    if out is not None:
        out = prepare_out_dir(out, force=force)
    table, checksum = _load_table(dataset, data_dir, schema, time_col, event_col, id_col)
    if embeddings is not None:
        table = _add_embeddings(table, embeddings)
    if "deepsurv" in models:  # the only model using torch; set its threads (MEDFM_THREADS / OMP_NUM_THREADS)
        import torch

        torch.set_num_threads(default_threads())
    err_console.print(
        f"prognosis: {table.name}: {len(table)} rows, {int(table.event.sum())} events, "
        f"{len(table.schema.covariates)} covariates; models {', '.join(models)}"
    )
    spec = {"command": "prognosis", "dataset": table.name, "config": cfg}
    files: dict[str, str] = {}

    def save(records: list) -> None:  # after every model, so a long run keeps what it finished
        from medfm.report.survival import standalone_page, survival_section
        from medfm.results import write_results

        files["results"] = str(write_results(out / "results.json", records, spec))
        page = standalone_page(survival_section(records, title=f"Prognosis: {table.name}"))
        atomic_write_text(out / "report.html", page)
        files["report"] = str(out / "report.html")

    records = run_prognosis(table, cfg, data_checksum=checksum, on_record=save if out is not None else None)
    if json_out:
        print_json(
            {
                "files": files,
                "records": [
                    {
                        "dataset": r.dataset,
                        "split": r.split,
                        "model": r.model,
                        "n": r.n,
                        "seconds": r.seconds,
                        "error": r.extra.get("error"),
                        "metrics": r.metrics,
                    }
                    for r in records
                ],
            }
        )
        return
    from rich.table import Table

    keys = ("c_harrell", "c_uno", "td_auc_mean", "ibs")
    t = Table("model", "split", *keys)
    for r in records:
        cells = []
        for k in keys:
            v = r.metrics.get(k)
            if v is None:
                cells.append("-")
            elif v.ci_low is None:
                cells.append(f"{v.value:.3f}")
            else:
                cells.append(f"{v.value:.3f} [{v.ci_low:.3f}, {v.ci_high:.3f}]")
        if r.extra.get("error"):
            cells = ["failed"] + ["-"] * (len(keys) - 1)
        t.add_row(r.model, r.split, *cells)
    out_console.print(t)
    for name, path in files.items():
        out_console.print(f"{name}: {path}")
