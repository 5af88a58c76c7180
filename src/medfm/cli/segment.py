"""``medfm segment``, ``medfm train-seg``, ``medfm seg-ensemble``, ``medfm seg-eval``: segmentation from the command line."""

from __future__ import annotations

from pathlib import Path

import typer

from medfm.cli._common import DataDir, Device, Json
from medfm.errors import ConfigError


def _int_tuple(text: str | None, what: str) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{what}: expected comma-separated integers, got '{text}'") from None


def _check_precision(precision: str) -> None:
    """--precision of train-seg and seg-ensemble: auto, bf16 or fp32."""
    from medfm._runtime import check_precision

    check_precision(precision, "--precision")


def register(app: typer.Typer) -> None:
    app.command("segment")(segment_command)
    app.command("train-seg")(train_seg_command)
    app.command("seg-eval")(seg_eval_command)
    app.command("seg-ensemble")(seg_ensemble_command)


def segment_command(
    model: str = typer.Option(..., "--model", "-m", help="Zoo segmenter id (e.g. medsam/vit-base) or a folder written by train-seg."),
    input: str = typer.Option(..., "--input", "-i", help="Image file, folder of images, DICOM series folder, or a PACS series "
                              "dicomweb://HOST:PORT/dicom-web/studies/UID/series/UID."),
    box: tuple[float, float, float, float] = typer.Option(None, "--box", help="Box prompt X0 Y0 X1 Y1 (pixels, x = column)."),
    point: tuple[float, float] = typer.Option(None, "--point", help="Point prompt X Y (pixels, x = column)."),
    slice_: int = typer.Option(None, "--slice", help="3D: key slice index (z) the prompt refers to (default: middle)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (NIfTI masks, overlays/, dicom_seg/)."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty --out."),
    device: Device = None,
    store_to: str = typer.Option(None, "--store-to", help="Store the DICOM-SEG and a measurement SR (segment volumes) in this PACS: "
                                 "dicomweb://HOST:PORT/dicom-web or AET@HOST:PORT."),
    json_out: Json = False,
) -> None:
    """Segment images: a trained model, or a promptable one with --box / --point (3D: propagated
    from --slice through neighbouring slices). Writes masks as NIfTI on the source geometry, PNG
    overlays and, for a DICOM series input, a DICOM-SEG referencing it (--store-to: sent to a PACS with an SR)."""
    from medfm._paths import prepare_out_dir
    from medfm._runtime import configure_threads, default_device
    from medfm.cli._common import out_console, print_json
    from medfm.tasks.segmentation.pipeline import SegmentOptions, segment_inputs

    if box is not None and point is not None:
        raise ConfigError("give either --box or --point, not both")
    from medfm.cli.pacs import check_address, pacs_input, store_results
    from medfm.io.pacs import is_dicomweb_url

    if store_to:
        check_address(store_to)  # a bad address fails before the work, not after
    configure_threads()
    out_dir = prepare_out_dir(out, force=force)
    opts = SegmentOptions(box=box, point=point, slice=slice_, overwrite=force)

    with pacs_input(input) as in_path:
        rows = segment_inputs(model, in_path, out_dir, opts, device=device or default_device())
        if store_to:
            store_results(rows, store_to, out_dir, overwrite=force)
    if is_dicomweb_url(input):  # fetched from a PACS into a temp folder (gone now): name the address
        for r in rows:
            r["input"] = input
    if json_out:
        print_json(rows)
        return
    for r in rows:
        vols = ", ".join(f"{v['name']}: {v['voxels']} px" for v in r["labels"].values())
        out_console.print(f"{r['case']}: {r['mask']} ({vols})" + (f"; DICOM-SEG {r['dicom_seg']}" if r.get("dicom_seg") else "")
                          + (f"; SR {r['dicom_sr']} -> {r['stored_to']}" if r.get("stored_to") else "")
                          + (f"; note: {r['note']}" if r.get("note") else ""))


def train_seg_command(
    dataset: str = typer.Option(None, "--dataset", "-d", help="Registered dataset name (e.g. msd_hippocampus, hc18)."),
    folder: Path = typer.Option(None, "--folder", help="A dataset folder instead of a name."),
    arch: str = typer.Option(None, "--arch", help="unet2d, unet3d, swinunetr or frozen_encoder (default: per dataset)."),
    encoder: str = typer.Option(None, "--encoder", help="frozen_encoder: model-zoo image encoder id."),
    minutes: float = typer.Option(None, "--minutes", help="Training time budget in minutes (wall clock)."),
    cpu_minutes: float = typer.Option(None, "--cpu-minutes", help="Training budget in CPU minutes of this process (shared machines)."),
    epochs: int = typer.Option(None, "--epochs", help="Maximum epochs (default 1000; the time budget usually ends first)."),
    max_steps: int = typer.Option(None, "--max-steps", help="Maximum optimiser steps (quick checks)."),
    patch: str = typer.Option(None, "--patch", help="Patch size, e.g. 32,48,32."),
    input_size: str = typer.Option(None, "--input-size", help="2D: resize images to H,W before the network."),
    batch_size: int = typer.Option(None, "--batch-size", help="Images per batch (each gives --samples patches)."),
    samples: int = typer.Option(None, "--samples", help="Patches sampled per image per step."),
    channels: str = typer.Option(None, "--channels", help="UNet widths, e.g. 16,32,64,128,256."),
    lr: float = typer.Option(None, "--lr", help="AdamW learning rate (default 2e-3, poly decay)."),
    rotate: float = typer.Option(None, "--rotate", help="Augmentation: random rotation up to +-DEG degrees (p 0.5)."),
    scale_aug: float = typer.Option(None, "--scale-aug", help="Augmentation: random zoom by up to +-this fraction (p 0.5)."),
    select_inference: bool = typer.Option(True, "--select-inference/--no-select-inference",
                                          help="After training, choose flip TTA, post-processing (largest component, ellipse) and the refiner on val."),
    refine: bool = typer.Option(None, "--refine/--no-refine",
                                help="2D: also train a second network on crops around the object (a cascade); val decides its use."),
    refine_budget: float = typer.Option(None, "--refine-budget", help="The refiner's time/step budget as a fraction of the first stage's (default 1)."),
    seed: int = typer.Option(0, "--seed", help="Seed for init, sampling and bootstrap."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 autocast where fast), bf16 or fp32."),
    tolerance_mm: float = typer.Option(1.0, "--tolerance-mm", help="NSD tolerance in mm for the test evaluation."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for CIs."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: the saved model + results.json."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty --out."),
    resume: bool = typer.Option(False, "--resume", help="Continue a run in --out from its last checkpoint."),
    eval_only: bool = typer.Option(False, "--eval-only", help="Evaluate the model saved in --out on the test split; no training."),
    data_dir: DataDir = None,
    device: Device = None,
    json_out: Json = False,
) -> None:
    """Train a segmentation network (MONAI) on a dataset's train split, select on val, report test."""
    from medfm._paths import prepare_out_dir
    from medfm._runtime import configure_threads, default_device
    from medfm.cli._common import err_console, out_console, print_json
    from medfm.tasks.segmentation.pipeline import (
        DATASET_DEFAULTS,
        nan_to_none,
        train_and_evaluate,
    )
    from medfm.tasks.segmentation.train import SegTrainConfig

    if (dataset is None) == (folder is None):
        raise ConfigError("give exactly one of --dataset NAME or --folder DIR")
    name = dataset if dataset is not None else str(folder)
    defaults = dict(DATASET_DEFAULTS.get(dataset or "", {}))
    cfg = SegTrainConfig(**defaults)
    if arch is not None:
        if arch != defaults.get("arch", arch):  # another arch: its own default patch
            cfg.patch_size = ()
        cfg.arch = arch
    given = {
        "encoder": encoder, "minutes": minutes, "cpu_minutes": cpu_minutes, "epochs": epochs, "max_steps": max_steps, "batch_size": batch_size,
        "samples_per_image": samples, "lr": lr, "rotate_deg": rotate, "scale_aug": scale_aug,
        "select_inference": select_inference, "precision": precision, "seed": seed, "refine": refine,
        "refine_budget": refine_budget,
        "patch_size": _int_tuple(patch, "--patch") or None, "input_size": _int_tuple(input_size, "--input-size") or None,
        "channels": _int_tuple(channels, "--channels") or None,
    }
    for k, v in given.items():
        if v is not None:
            setattr(cfg, k, v)
    _check_precision(cfg.precision)
    configure_threads()
    out_dir = prepare_out_dir(out, force=force, resume=resume or eval_only)
    res = train_and_evaluate(name, cfg, out_dir, data_dir=data_dir, resume=resume, device=device or default_device(),
                             tolerance_mm=tolerance_mm, n_boot=n_boot, eval_only=eval_only)
    doc = nan_to_none({"out": str(res.out), "best_val_dice": res.best_val_dice, "minutes": res.minutes,
                       "cpu_minutes": res.cpu_minutes,
                       "epochs": res.epochs, "steps": res.steps, "test": res.test, "hc18": res.hc18,
                       "warning": _training_warning(res.out)})
    if json_out:
        print_json(doc)
        return
    out_console.print(f"model: {res.out} (best val Dice {res.best_val_dice}, {res.epochs} epochs, {res.minutes:.1f} min, {res.cpu_minutes:.1f} CPU min)")
    if doc["warning"]:
        err_console.print(f"warning: {doc['warning']}")
    _print_test(res.test, res.hc18)


def _training_warning(out: Path) -> str | None:
    """The warning train-seg recorded in the model card (e.g. val Dice never rose above its first epoch)."""
    from medfm.tasks.segmentation.model import read_info

    return read_info(out).extra.get("warning")


def _print_test(test: dict, hc18: dict) -> None:
    """The test split's Dice / HD95 / NSD per label group, and HC18's head circumference."""
    from medfm.cli._common import out_console
    from medfm.results import format_metric

    for group, vals in test.items():
        d = vals["dice"]
        out_console.print(f"test {group}: Dice {d.text(4)}, "
                          f"HD95 {format_metric(vals['hd95_mm'].value, digits=2)} mm, NSD {format_metric(vals['nsd'].value, digits=4)} (n={d.n})")
    if hc18:
        m = hc18["hc_mad_mm"]
        e = hc18["dice_ellipse_fit"]
        out_console.print(f"test HC MAD {m.text(2)} mm "
                          f"(mask offset {hc18['offset_px_from_train']['offset_px']:.2f} px from train); "
                          f"Dice of the fitted ellipse {e.text(4)}")


def seg_ensemble_command(
    models: list[Path] = typer.Argument(..., help="Two or more folders written by train-seg on the same dataset."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Registered dataset the members were trained on."),
    folder: Path = typer.Option(None, "--folder", help="A user folder of image/mask pairs the members were trained on."),
    select_inference: bool = typer.Option(True, "--select-inference/--no-select-inference",
                                          help="Choose the ensemble's post-processing on the val split."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 autocast where fast), bf16 or fp32."),
    tolerance_mm: float = typer.Option(1.0, "--tolerance-mm", help="NSD tolerance in mm for the test evaluation."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for CIs."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: the ensemble (a model folder) + results.json."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty --out."),
    data_dir: DataDir = None,
    device: Device = None,
    json_out: Json = False,
) -> None:
    """Average trained models (e.g. train-seg runs with other seeds) into one, as nnU-Net ensembles
    its folds; choose its post-processing on val and report test. `medfm segment --model OUT` uses it."""
    from medfm._paths import prepare_out_dir
    from medfm._runtime import configure_threads, default_device
    from medfm.cli._common import out_console, print_json
    from medfm.tasks.segmentation.pipeline import ensemble_and_evaluate, nan_to_none

    if (dataset is None) == (folder is None):
        raise ConfigError("give exactly one of --dataset NAME or --folder DIR (the data the members were trained on)")
    _check_precision(precision)
    out_dir = out.expanduser().resolve()
    for m in (Path(m).expanduser().resolve() for m in models):
        if out_dir == m or m in out_dir.parents or out_dir in m.parents:
            raise ConfigError(f"--out {out}: is a member folder, inside one or holds one ({m}); choose a new folder")
    configure_threads()
    out_dir = prepare_out_dir(out, force=force)
    res = ensemble_and_evaluate(models, dataset if dataset is not None else folder, out_dir, data_dir=data_dir,
                                select=select_inference, seed=seed, precision=precision,
                                device=device or default_device(), tolerance_mm=tolerance_mm, n_boot=n_boot)
    doc = nan_to_none({"out": str(res.out), "val_dice": res.val_dice, "members_val_dice": res.members_val_dice,
                       "postprocess": res.postprocess, "test": res.test, "hc18": res.hc18})
    if json_out:
        print_json(doc)
        return
    vd = "n/a" if res.val_dice is None else f"{res.val_dice:.4f}"
    out_console.print(f"ensemble of {len(models)}: {res.out} (val Dice {vd}; post-processing {res.postprocess})")
    _print_test(res.test, res.hc18)


def seg_eval_command(
    pred_dir: Path = typer.Argument(..., help="Folder of predicted masks (NIfTI, NRRD, PNG ...)."),
    gt_dir: Path = typer.Argument(..., help="Folder of reference masks with the same case names."),
    labels: str = typer.Option(None, "--labels", help="Declared label values, e.g. 1,2 (default: those in the references)."),
    tolerance_mm: float = typer.Option(1.0, "--tolerance-mm", help="Normalised surface Dice tolerance (mm)."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for CIs over cases."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    out: Path = typer.Option(None, "--out", "-o", help="Write cases.csv and results.json here."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty --out."),
    json_out: Json = False,
) -> None:
    """Dice, IoU, HD95, ASSD, NSD (mm) and volume difference per case and label, with bootstrap CIs.
    Every case counts; a label absent in both masks scores Dice 1 (empty vs empty)."""
    from medfm._paths import prepare_out_dir
    from medfm.cli._common import err_console, out_console, print_json
    from medfm.results import write_results
    from medfm.tasks.segmentation.evaluate import (
        SegEvalConfig,
        evaluate_folders,
        to_records,
        write_case_csv,
    )
    from medfm.tasks.segmentation.pipeline import nan_to_none

    lab = _int_tuple(labels, "--labels") or None
    out_dir = prepare_out_dir(out, force=force) if out is not None else None
    res = evaluate_folders(pred_dir, gt_dir, lab, tolerance_mm, n_boot, seed)

    cfg = SegEvalConfig(str(pred_dir), str(gt_dir), res.labels, tolerance_mm, n_boot, seed)
    if out_dir is not None:
        write_case_csv(res.rows, out_dir / "cases.csv")
        write_results(out_dir / "results.json", to_records(res, str(gt_dir), "all", str(pred_dir), "seg-eval", cfg, seed=seed), cfg)
    doc = nan_to_none({"n_cases": res.n_cases, "labels": list(res.labels), "summary": res.summary, "cases": res.rows,
                       "notes": res.notes})
    if json_out:
        print_json(doc)
        return
    from rich.table import Table

    table = Table("group", "Dice", "IoU", "HD95 mm", "ASSD mm", "NSD", "|dV| ml", "n", title=f"{res.n_cases} cases")
    for group, vals in res.summary.items():
        def fmt(m: str, nd: int = 4) -> str:
            return vals[m].text(nd)
        table.add_row(group, fmt("dice"), fmt("iou"), fmt("hd95_mm", 2), fmt("assd_mm", 2), fmt("nsd"),
                      fmt("abs_volume_diff_ml", 3), str(vals["dice"].n))
    out_console.print(table)
    for note in res.notes:
        err_console.print(f"note: {note}")
