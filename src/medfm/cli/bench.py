"""``medfm bench``: run a benchmark grid and write results.json, report.html, the leaderboard.

With no arguments: BreastMNIST with the built-in offline model set (from-scratch ResNet-18,
the random-init ViT-B/16 floor, every real model card whose weights are present locally),
every protocol that applies, few-shot 1/4/16 (3 seeds) and the full training split (the
from-scratch baseline on the full split only), into ``runs/<timestamp>/``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from medfm.cli._common import err_console, print_json, progress
from medfm.errors import ConfigError

DEFAULT_SCRATCH_EPOCHS = 20
DEFAULT_RUN_NOTE = (
    "default run (medfm bench with no arguments): settings chosen to finish in under 10 minutes on "
    "2 CPU cores: few-shot 1/4/16 labelled images per class with 3 seeds each, the full training split "
    f"with 1 seed, 1000 bootstrap resamples, the from-scratch ResNet-18 trained on the full training split "
    f"only (the random-init twins are the few-shot floor) for {DEFAULT_SCRATCH_EPOCHS} "
    "epochs (the MedMNIST v2 recipe uses 100, so it is a weaker baseline than the paper's), "
    "finetune left out (minutes per cell on a CPU)"
)


def _split(values: list[str] | None) -> list[str]:
    """``--model a,b --model c`` -> ["a", "b", "c"]."""
    out: list[str] = []
    for v in values or []:
        out += [x.strip() for x in v.split(",") if x.strip()]
    return out


def build_spec(
    config: Path | None, datasets: list[str], models: list[str], protocols: list[str], shots: str | None,
    seeds: int | None, data_dir: str | None, n_boot: int | None, precision: str | None, batch_size: int | None,
):  # -> BenchSpec
    """Spec from ``--config`` (if any) with the given flags on top; no flags and no config = default run."""
    from medfm.bench import BenchSpec, parse_shots

    if config is not None:
        spec = BenchSpec.from_file(str(config))
    else:
        spec = BenchSpec(full_data_seeds=1)
        if not (datasets or models or protocols or shots or seeds):
            spec.notes.append(DEFAULT_RUN_NOTE)
            spec.protocol_config = {"scratch": {"epochs": DEFAULT_SCRATCH_EPOCHS}}
            spec.protocol_shots = {"scratch": ["all"]}
    if datasets:
        spec.datasets = datasets
    if models:
        spec.models = models
    if protocols:
        spec.protocols = protocols
    if shots is not None:
        spec.shots = parse_shots(shots)
        if not spec.shots:
            raise ConfigError("--shots: give e.g. 1,4,16,all")
    if seeds is not None:
        if seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {seeds}")
        spec.seeds = seeds
        spec.full_data_seeds = None if config is None else spec.full_data_seeds
    for name, value in (("data_dir", data_dir), ("n_boot", n_boot), ("precision", precision), ("batch_size", batch_size)):
        if value is not None:
            setattr(spec, name, value)
    spec.__post_init__()  # re-validate after the flags
    return spec


def make_executor(
    kind: str, address: str | None, workers: int | None, max_retries: int, cpus: float, gpus: float,
    memory_gb: float | None,
):  # -> Executor
    """``--executor local|ray`` and its options -> an executor (Ray is imported only for ``ray``)."""
    from medfm.bench import InProcessExecutor

    if kind == "local":
        ray_only = {"--address": address, "--workers": workers, "--memory-per-cell": memory_gb}
        given = [k for k, v in ray_only.items() if v is not None] + (["--gpus-per-cell"] if gpus else [])
        if given:
            raise ConfigError(f"{', '.join(given)} need(s) --executor ray")
        return InProcessExecutor()
    if kind == "ray":
        from medfm._optional import optional_import
        from medfm.bench.ray_executor import RayExecutor

        optional_import("ray")  # fail now, in one line naming the extra, before any work
        return RayExecutor(address=address, workers=workers, max_retries=max_retries, cpus=cpus, gpus=gpus,
                           memory_gb=memory_gb, log=lambda msg: err_console.print(msg, markup=False, highlight=False))
    raise ConfigError(f"--executor must be local or ray, got {kind!r}")


def _executor_summary(ex) -> dict:
    """Executor, cluster size and (Ray) retries, failures, overhead per cell, for --json."""
    info = ex.describe() if hasattr(ex, "describe") else {}
    stats = getattr(ex, "stats", None)
    if stats is not None:
        info.update(retries=stats.retries, failed=stats.failed, duplicates=stats.duplicates,
                    nodes_used=len(stats.nodes_used), overhead_per_cell_s=round(stats.overhead_per_cell(), 4))
    return info


def print_tables(tables: list) -> None:
    """Leaderboard tables on stdout; a pipe or file gets 160 columns (one line per row)."""
    from rich.console import Console

    from medfm.cli._common import out_console

    console = out_console if out_console.is_terminal else Console(highlight=False, width=160)
    for table in tables:
        console.print(table)


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        dataset: list[str] = typer.Option(None, "--dataset", "-d", help="Dataset name or folder (repeat or comma-separate). Default: breastmnist."),
        model: list[str] = typer.Option(None, "--model", "-m", help="Model id or folder (repeat or comma-separate); scratch/<arch> = from-scratch baseline. Default: built-in offline set."),
        protocol: list[str] = typer.Option(None, "--protocol", "-p", help="Protocol(s): knn, linear_probe, prototype, zero_shot, finetune, scratch. Default: all that apply (finetune only on request)."),
        shots: str = typer.Option(None, "--shots", help="Labelled training images per class, e.g. 1,4,16,all."),
        seeds: int = typer.Option(None, "--seeds", help="Seeds per cell (0..N-1)."),
        out: Path = typer.Option(None, "--out", "-o", help="Output folder. Default: runs/<timestamp>."),
        config: Path = typer.Option(None, "--config", "-c", help="Spec file (YAML/JSON); flags override it."),
        data_dir: str = typer.Option(None, "--data-dir", help="Data location (default: MEDFM_DATA or the cache)."),
        n_boot: int = typer.Option(None, "--n-boot", help="Bootstrap resamples for CIs (default 1000)."),
        precision: str = typer.Option(None, "--precision", help="auto, fp32 or bf16."),
        batch_size: int = typer.Option(None, "--batch-size", help="Embedding batch size."),
        force: bool = typer.Option(False, "--force", help="Write into a non-empty --out (files are replaced one by one)."),
        resume: bool = typer.Option(False, "--resume", help="Keep the records of OUT/results.json and run only missing cells."),
        no_report: bool = typer.Option(False, "--no-report", help="Skip report.html."),
        json_: bool = typer.Option(False, "--json", help="Machine-readable summary on stdout."),
        executor: str = typer.Option("local", "--executor", help="local (in this process) or ray (each cell a Ray task; needs medfm[scale])."),
        address: str = typer.Option(None, "--address", help="Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: start one on this machine)."),
        workers: int = typer.Option(None, "--workers", help="Cells in flight on Ray (default: the cluster's CPUs / --cpus-per-cell)."),
        max_retries: int = typer.Option(2, "--max-retries", help="Retries of a cell whose Ray task failed (worker or node lost) before it is reported."),
        cpus_per_cell: float = typer.Option(1.0, "--cpus-per-cell", help="CPUs each Ray cell asks for (its torch threads)."),
        gpus_per_cell: float = typer.Option(0.0, "--gpus-per-cell", help="GPUs each Ray cell asks for (e.g. 1, or 0.25 to share one)."),
        memory_per_cell: float = typer.Option(None, "--memory-per-cell", help="GiB of memory each Ray cell asks for."),
        cache_dir: str = typer.Option(None, "--cache-dir", help="Cell cache: a folder or an fsspec URL (s3://...); on a cluster storage every node reaches (default: MEDFM_CELL_CACHE or MEDFM_HOME/cells)."),
        store: str = typer.Option(None, "--store", help="Results store: a SQLite file or an fsspec URL (default: MEDFM_STORE or MEDFM_HOME/results.sqlite)."),
    ) -> None:
        """Benchmark models x protocols x shots x seeds on datasets; write results.json and report.html."""
        from medfm.bench import default_out_dir, run_bench

        if force and resume:
            raise ConfigError("--force and --resume exclude each other")
        if resume and out is None:
            raise ConfigError("--resume needs --out (the folder holding results.json)")
        spec = build_spec(
            config, _split(dataset), _split(model), _split(protocol), shots, seeds, data_dir, n_boot, precision, batch_size,
        )
        target = out if out is not None else default_out_dir()
        ex = make_executor(executor, address, workers, max_retries, cpus_per_cell, gpus_per_cell, memory_per_cell)
        try:
            run = run_bench(
                spec, target, force=force, resume=resume, report=not no_report, executor=ex,
                cache=_open_cache(cache_dir),
                store=_open_store(store),
                progress=lambda items, total, desc: progress(items, total=total, desc=desc, unit="cell"),
            )
            exec_info = _executor_summary(ex)
        finally:
            if hasattr(ex, "close"):
                ex.close()
        report_run(run, exec_info, json_)


def _open_cache(where: str | None):
    """The cell cache ``--cache-dir`` names (a folder, created if needed, or an fsspec URL), else None (the default)."""
    import os

    from medfm.bench import CellCache
    from medfm.errors import OutputError

    if where is None:
        return None
    cache = CellCache(where)
    local = cache.folder.local
    if local is not None:
        try:
            Path(local).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"--cache-dir {where}: cannot create the cell cache folder ({type(exc).__name__}: {exc})") from None
        if not os.access(local, os.W_OK):
            raise OutputError(f"--cache-dir {where}: the cell cache folder is not writable")
    return cache


def _open_store(where: str | None):
    """The results store ``--store`` names (a SQLite file or an fsspec URL), else True (the default one)."""
    import sqlite3

    from medfm.bench import ResultsStore
    from medfm.errors import OutputError

    if where is None:
        return True
    try:
        return ResultsStore(where)
    except (OSError, sqlite3.Error, ValueError, ImportError) as exc:
        raise OutputError(f"--store {where}: cannot open the results store ({type(exc).__name__}: {exc})") from None


def report_run(run, exec_info: dict, json_: bool) -> None:
    """The run's summary: JSON on stdout, or notes + leaderboard tables + one summary line."""
    from medfm.report import leaderboard, rich_tables

    board = leaderboard(run.records)
    if json_:
        print_json({
            "out": str(run.out), "results": str(run.results), "report": str(run.report) if run.report else None,
            "run_id": run.run_id, "computed": run.computed, "cached": run.cached, "resumed": run.resumed,
            "seconds": round(run.seconds, 2), "notes": run.notes, "warnings": run.warnings,
            "executor": exec_info,
            "completeness": run.completeness.text() if run.completeness else None,
            "leaderboard": {ds: [
                {"rank": i, "model": r.model, "protocol": r.protocol, "shots": r.shots, "metric": r.metric,
                 "value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high, "sd": r.sd, "seeds": r.n_seeds,
                 "trained": r.trained}
                for i, r in enumerate(rows, 1)
            ] for ds, rows in board.items()},
        })
        return
    for note in run.notes:
        err_console.print(f"note: {note}")
    if exec_info.get("kind") == "ray":
        err_console.print(
            f"ray: {exec_info['nodes']} node(s), {exec_info['workers']} cell(s) in flight, {exec_info['retries']} retried, "
            f"{exec_info['failed']} failed, overhead {exec_info['overhead_per_cell_s'] * 1000:.0f} ms per cell", highlight=False,
        )
    print_tables(rich_tables(board))
    err_console.print(
        f"{run.computed} cell(s) computed, {run.cached} from cache, {run.resumed} resumed in {run.seconds:.1f} s; "
        f"wrote {run.results}" + (f" and {run.report}" if run.report else "")
        + (f"; {run.completeness.text()}" if run.completeness else "")
        + (f"; {len(run.warnings)} warning(s), see above" if run.warnings else ""),
        highlight=False,
    )
