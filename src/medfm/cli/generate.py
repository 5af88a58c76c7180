"""``medfm vqa``, ``medfm report-eval``, ``medfm synth``: generation tasks and their metrics.

Each writes ``results.json`` (``medfm.results.write_results``) into ``--out`` and prints a
metric table (or ``--json``) on stdout; progress goes to stderr.
"""

from __future__ import annotations

from pathlib import Path

import typer

from medfm.cli._common import (
    DataDir, Device, Force, Json, OptionalOutDir, OutDir, err_console, out_console, output_folder, print_json, progress,
)
from medfm.errors import InputError, MissingDataError


def _metrics_table(records: list, keys: list[str] | None = None) -> None:
    from rich.table import Table

    from medfm.results import format_ci, format_metric

    for rec in records:
        table = Table(title=f"{rec.dataset} / {rec.protocol} / {rec.model} (n={rec.n})")
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("95% CI", justify="right")
        for name, mv in rec.metrics.items():
            if keys is not None and name not in keys:
                continue
            table.add_row(name, format_metric(mv.value, digits=4), format_ci(mv.ci_low, mv.ci_high, 3))
        out_console.print(table)


def _summary(records: list, out: Path | None) -> dict:
    return {
        "results": str(out / "results.json") if out else None,
        "records": [
            {"dataset": r.dataset, "protocol": r.protocol, "model": r.model, "n": r.n,
             "metrics": {k: {"value": v.value, "ci_low": v.ci_low, "ci_high": v.ci_high} for k, v in r.metrics.items()},
             **({"skipped_metrics": r.extra["skipped_metrics"]} if r.extra.get("skipped_metrics") else {})}
            for r in records
        ],
    }


def _resolve_folder(name: str, data_dir: str | None) -> Path:
    """A folder path as given, else ``<data location>/<name>``."""
    from medfm._paths import data_dir as resolve

    p = Path(name).expanduser()
    if p.is_dir():
        return p
    root, _ = resolve(data_dir)
    if (root / name).is_dir():
        return root / name
    raise MissingDataError(f"{name}: not a folder, and not found under the data location {root}")


def vqa(
    train: str = typer.Option(..., "--train", help="VQA folder (images/ + qa.json), or its name under the data location."),
    test: str | None = typer.Option(None, "--test", help="Test folder; default: an image-disjoint split of --train."),
    model: str | None = typer.Option(None, "--model", help="Generator id for generative answering (e.g. medgemma/4b-it)."),
    base_url: str | None = typer.Option(None, "--base-url", help="With --model NAME: an OpenAI-compatible server serving it."),
    image_encoder: str = typer.Option(
        "pixels-pca+stats", "--image-encoder", help="'pixels-pca', 'stats', 'pixels-pca+stats' (fitted on the training images), 'ssl' (SimCLR pretrained "
        "on the training images only, inside the run), a zoo id, or 'none'."
    ),
    ssl_minutes: float = typer.Option(3.0, "--ssl-minutes", help="With --image-encoder ssl: minutes per pretraining (one per validation split + one final)."),
    fusion: str = typer.Option("linear", "--fusion", help="Classifier (linear or mlp) when --no-select; otherwise chosen on validation."),
    select: bool = typer.Option(True, "--select/--no-select", help="Choose classifier settings on image-disjoint validation splits of the training images."),
    val_splits: int = typer.Option(3, "--val-splits", help="Validation splits (of the training images) averaged when selecting."),
    generate_limit: int | None = typer.Option(None, "--generate-limit", help="Answer only the first N test questions generatively."),
    test_fraction: float = typer.Option(0.3, "--test-fraction", help="Share of images held out when no --test is given."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for the CIs."),
    seed: int = typer.Option(0, "--seed"),
    device: Device = None,
    data_dir: DataDir = None,
    out: OutDir = ...,
    force: Force = False,
    json_out: Json = False,
) -> None:
    """Visual question answering: majority, question-only, discriminative and generative answers."""
    from medfm.data.vqa import load_vqa_folder
    from medfm.errors import ConfigError

    if base_url and not model:
        raise ConfigError("--base-url needs --model (the model name the server knows)")
    from medfm.results import write_results
    from medfm.tasks.vqa import VQAConfig, run_vqa, split_train_test

    cfg = VQAConfig(
        image_encoder=None if image_encoder.lower() == "none" else image_encoder, fusion=fusion, model=model, base_url=base_url,
        generate_limit=generate_limit, test_fraction=test_fraction, n_boot=n_boot, seed=seed, device=device,
        select_on_val=select, val_splits=val_splits, ssl_minutes=ssl_minutes,
    )
    train_dir = _resolve_folder(train, data_dir)
    items = load_vqa_folder(train_dir)
    if test is not None:
        tr, te, split = items, load_vqa_folder(_resolve_folder(test, data_dir)), "test"
    else:
        tr, te = split_train_test(items, cfg)
        split = f"image-disjoint-{cfg.test_fraction:g}-seed{cfg.seed}"
    err_console.print(f"vqa: {len(tr)} training and {len(te)} test questions")
    with output_folder(out, force=force) as out:  # created once the inputs are read
        records = run_vqa(tr, te, cfg, dataset=train_dir.name, split=split, progress=progress)
        write_results(out / "results.json", records, cfg)
    if json_out:
        print_json(_summary(records, out))
    else:
        _metrics_table(records, ["closed_accuracy", "open_accuracy", "accuracy", "open_token_f1", "open_bleu1"])


def report_eval(
    pred: Path = typer.Option(..., "--pred", help="CSV with id,report (generated reports)."),
    ref: Path = typer.Option(..., "--ref", help="CSV with id,report (reference reports)."),
    meteor: str = typer.Option("auto", "--meteor", help="auto | java (METEOR 1.5) | nltk (no WordNet) | off."),
    bertscore_model: str | None = typer.Option(
        None, "--bertscore-model", help="BERTScore model: a local folder or a hub id in the local cache (never downloaded); absent -> skipped."
    ),
    bertscore_layer: int | None = typer.Option(None, "--bertscore-layer", help="Hidden layer used by BERTScore (default: the last)."),
    n_boot: int = typer.Option(1000, "--n-boot"),
    seed: int = typer.Option(0, "--seed"),
    out: OptionalOutDir = None,
    force: Force = False,
    json_out: Json = False,
) -> None:
    """Score generated reports: BLEU-1..4, ROUGE-L, METEOR, CIDEr, clinical-efficacy F1, BERTScore (with --bertscore-model)."""
    import hashlib
    import time

    from medfm._paths import file_hash
    from medfm.data.reports import paired_reports
    from medfm.results import Record, make_provenance, write_results
    from medfm.tasks.report_gen import evaluate_reports

    t0 = time.perf_counter()
    ids, preds, refs = paired_reports(pred, ref)
    with output_folder(out, force=force) as folder:  # removed again when empty and scoring fails
        skipped: dict[str, str] = {}
        metrics = evaluate_reports(
            preds, refs, meteor=meteor, n_boot=n_boot, seed=seed, bertscore_model=bertscore_model,
            bertscore_layer=bertscore_layer, skipped=skipped,
        )
        for name, reason in skipped.items():
            err_console.print(f"[yellow]{name} skipped:[/] {reason}")
        spec = {"pred": str(pred), "ref": str(ref), "meteor": meteor, "n_boot": n_boot, "seed": seed,
                "bertscore_model": bertscore_model, "bertscore_layer": bertscore_layer}
        checksum = hashlib.sha256((file_hash(pred) + file_hash(ref)).encode()).hexdigest()
        rec = Record(dataset=ref.stem, split="test", model=pred.stem, protocol="report_gen/eval", metrics=metrics,
                     seed=seed, n=len(ids), seconds=round(time.perf_counter() - t0, 3),
                     provenance=make_provenance(spec, data_checksum=checksum), extra={"skipped_metrics": skipped})
        if folder is not None:
            write_results(folder / "results.json", [rec], spec)
    if json_out:
        print_json(_summary([rec], out))
    else:
        _metrics_table([rec])


def synth(
    dataset: str = typer.Option(..., "--dataset", help="2D dataset name, e.g. breastmnist."),
    data_dir: DataDir = None,
    train_steps: int = typer.Option(1500, "--train-steps", help="Optimiser steps of the diffusion model."),
    batch_size: int = typer.Option(32, "--batch-size"),
    channels: str = typer.Option("16,32", "--channels", help="UNet widths per level, e.g. 16,32."),
    sample_steps: int = typer.Option(25, "--sample-steps", help="DDIM sampling steps."),
    n_per_class: int | None = typer.Option(None, "--n-per-class", help="Synthetic images per class (default: as in train)."),
    max_train: int | None = typer.Option(None, "--max-train", help="Use at most N training images."),
    feature_encoder: str = typer.Option("random/vit-b16", "--feature-encoder", help="Zoo encoder for FD / precision / recall / probes."),
    n_boot: int = typer.Option(1000, "--n-boot"),
    seed: int = typer.Option(0, "--seed"),
    device: Device = None,
    out: OutDir = ...,
    force: Force = False,
    json_out: Json = False,
) -> None:
    """Train a class-conditional diffusion model, sample, and score the samples against real images."""
    import numpy as np

    from medfm._paths import atomic_path
    from medfm.results import write_results
    from medfm.tasks.synthesis import DiffusionConfig, SynthConfig, run_synthesis

    try:
        widths = tuple(int(c) for c in channels.split(",") if c.strip())
    except ValueError as exc:
        raise InputError(f"--channels: expected integers like 16,32, got {channels!r}") from exc
    cfg = SynthConfig(
        diffusion=DiffusionConfig(channels=widths, train_steps=train_steps, batch_size=batch_size, sample_steps=sample_steps, seed=seed),
        feature_encoder=feature_encoder, n_per_class=n_per_class, max_train=max_train, n_boot=n_boot, seed=seed, device=device,
    )
    with output_folder(out, force=force) as out:  # removed again when empty and the run fails
        rec, images, labels, _ = run_synthesis(dataset, cfg, data_dir=data_dir, progress=progress)
        with atomic_path(out / "samples.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, images=images, labels=labels)
        _save_grid(images, labels, out / "samples.png")
        write_results(out / "results.json", [rec], cfg)
    if json_out:
        print_json(_summary([rec], out))
    else:
        _metrics_table([rec])


def _save_grid(images, labels, path: Path, per_class: int = 8) -> None:
    """A PNG with up to ``per_class`` samples per class, one row per class."""
    import numpy as np
    from PIL import Image as PILImage

    from medfm._paths import atomic_path

    rows = []
    for c in np.unique(labels):
        sel = images[labels == c][:per_class]
        tiles = [np.moveaxis(t, 0, -1) if t.shape[0] in (3,) else t[0] for t in sel]
        pad = [np.zeros_like(tiles[0])] * (per_class - len(tiles))
        rows.append(np.concatenate(tiles + pad, axis=1))
    grid = np.concatenate(rows, axis=0)
    with atomic_path(path) as tmp:
        PILImage.fromarray(grid).save(tmp, format="PNG")


def register(app: typer.Typer) -> None:
    app.command("vqa")(vqa)
    app.command("report-eval")(report_eval)
    app.command("synth")(synth)
