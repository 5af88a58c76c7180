"""End-to-end segmentation runs behind the CLI: train + test evaluation, segment files, write outputs.

``train_and_evaluate``: train on a dataset's train split (model selection on val), then evaluate
the selected model once on the test split (per-case CSV, results.json with bootstrap CIs; for
HC18 also head circumference in mm, with the mask offset estimated on the train split).
``ensemble_and_evaluate``: the same test evaluation for an ensemble of trained models (seg-ensemble).
``segment_inputs``: a trained model folder (or ensemble) or a zoo segmenter (box / point prompt, 3D
propagation) on a file, a folder of files or a DICOM series; writes NIfTI masks on the source
geometry, PNG overlays and, for DICOM series, a DICOM-SEG referencing the source.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfm._config import to_dict
from medfm.errors import ConfigError, InputError
from medfm.io.image import Image
from medfm.tasks.segmentation.evaluate import SegEvalResult, evaluate_pairs, to_records, write_case_csv
from medfm.tasks.segmentation.model import Segmenter, TrainedSegmenter, is_trained_model_dir
from medfm.tasks.segmentation.train import SegTrainConfig, infer_labels, train_segmentation

# Per-dataset defaults (chosen on the val split / from the data geometry, never on test).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "msd_hippocampus": {"arch": "unet3d", "patch_size": (32, 48, 32), "batch_size": 2, "samples_per_image": 2},
    "hc18": {"arch": "unet2d", "input_size": (256, 384), "patch_size": (224, 320), "batch_size": 4,
             "samples_per_image": 1, "flip_axes": (0, 1), "channels": (16, 32, 64, 128, 256)},
    "chase_db1": {"arch": "unet2d", "patch_size": (256, 256), "batch_size": 2, "samples_per_image": 4,
                  "flip_axes": (0, 1)},
}


def _label_names(card: Any, labels: Sequence[int]) -> tuple[str, ...]:
    names = tuple(getattr(card, "labels", ()) or ())
    return tuple(names[v] if v < len(names) else f"label {v}" for v in labels)


@dataclass
class TrainRunResult:
    out: Path
    best_val_dice: float | None
    test: dict[str, Any]
    minutes: float
    epochs: int
    steps: int
    hc18: dict[str, Any] = field(default_factory=dict)
    cpu_minutes: float = 0.0


def evaluate_samples(
    segmenter: Segmenter, samples: Sequence[Any], tolerance_mm: float = 1.0, n_boot: int = 1000, seed: int = 0
) -> tuple[SegEvalResult, list[np.ndarray]]:
    """Predict every sample at its native geometry and evaluate against its mask."""
    preds: list[np.ndarray] = []

    def pairs():
        for s in samples:
            pred = segmenter.predict(s.image)
            preds.append(pred.array[0])
            yield s.id, pred, s.mask, Path(f"prediction of {s.id}"), Path(f"mask of {s.id}")

    res = evaluate_pairs(pairs(), segmenter.info.labels, tolerance_mm, n_boot, seed)
    return res, preds


def train_and_evaluate(
    dataset: str | Path,
    config: SegTrainConfig,
    out: Path,
    data_dir: str | Path | None = None,
    resume: bool = False,
    device: str = "cpu",
    tolerance_mm: float = 1.0,
    n_boot: int = 1000,
    eval_only: bool = False,
) -> TrainRunResult:
    """``medfm train-seg``: train (train split, selection on val), then evaluate on test.

    ``eval_only``: skip training and evaluate the model already saved in ``out``.
    """
    from medfm.data import load_dataset
    from medfm.tasks.segmentation.model import read_info
    from medfm.tasks.segmentation.train import SegTrainResult

    ds = load_dataset(dataset, data_dir)
    card = ds.card
    if card.task != "segmentation":
        raise ConfigError(f"dataset {card.name} is a {card.task} dataset; train-seg needs segmentation masks")
    train = list(ds.split("train"))
    val = list(ds.split("val")) if "val" in ds.splits else []
    test = list(ds.split("test")) if "test" in ds.splits else []
    t0 = time.perf_counter()
    if eval_only:
        if not is_trained_model_dir(out):
            raise InputError(f"{out}: --eval-only needs a model saved there by train-seg")
        extra = read_info(out).extra
        from medfm._config import from_dict

        config = from_dict(SegTrainConfig, extra.get("config", {}), where=f"{out}/model_card.json")
        tr = SegTrainResult(out, read_info(out).val_dice, extra.get("best_epoch", -1), extra.get("epochs", 0),
                            extra.get("steps", 0), 60 * extra.get("minutes", 0.0), [], 60 * extra.get("cpu_minutes", 0.0))
    else:
        if not config.labels:
            config.labels = infer_labels(train)
        if not config.label_names:
            config.label_names = _label_names(card, config.labels)
        config.dataset = card.name
        tr = train_segmentation(train, val, config, out, resume=resume, device=device)
    segmenter = TrainedSegmenter.load(out, device=device, precision=config.precision)
    train_extra = {"best_val_dice": tr.best_val_dice, "best_epoch": tr.best_epoch, "epochs": tr.epochs,
                   "steps": tr.steps, "minutes": tr.seconds / 60, "cpu_minutes": tr.cpu_seconds / 60}
    train_extra["warning"] = read_info(out).extra.get("warning")  # e.g. val Dice never rose after epoch 1
    result, hc = evaluate_test(segmenter, ds, train, test, config, out, f"trained/{card.name}-{config.arch}", "train-seg",
                               tolerance_mm, n_boot, config.seed, time.perf_counter() - t0, {"train": train_extra})
    return TrainRunResult(out, tr.best_val_dice, result, tr.seconds / 60, tr.epochs, tr.steps, hc, tr.cpu_seconds / 60)


def evaluate_test(segmenter: Any, ds: Any, train: Sequence[Any], test: Sequence[Any], config: Any, out: Path,
                  model_name: str, protocol: str, tolerance_mm: float, n_boot: int, seed: int, seconds: float,
                  extra: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate once on the test split: ``test_cases.csv`` and ``results.json`` in ``out`` (for HC18
    also the head circumference with the mask offset estimated on ``train``, ``test_hc.csv``).
    Returns (summary per label group, HC18 summary or {}); nothing is written without a test split."""
    from medfm.metrics.segmentation import summarize
    from medfm.results import write_results

    if not test:
        return {}, {}
    card = ds.card
    ev, preds = evaluate_samples(segmenter, test, tolerance_mm, n_boot, seed)
    write_case_csv(ev.rows, out / "test_cases.csv")
    weights = json.loads((out / "model_card.json").read_text())["config"].get("weights_sha256")
    rec = to_records(ev, card.name, "test", model_name, protocol, config, data_checksum=ds.checksum(),
                     weights_hash=weights, seconds=seconds, seed=seed)[0]
    hc: dict[str, Any] = {}
    if card.name == "hc18":
        from medfm.tasks.segmentation.hc18 import ellipse_dice_rows, estimate_mask_offset, hc_rows

        off = estimate_mask_offset(train)
        rows = hc_rows(preds, test, off["offset_px"])
        raw = hc_rows(preds, test, 0.0)
        mad = summarize([r["hc_abs_diff_mm"] for r in rows], n_boot=n_boot, seed=seed)
        mad_raw = summarize([r["hc_abs_diff_mm"] for r in raw], n_boot=n_boot, seed=seed)
        edice = summarize([r["dice"] for r in ellipse_dice_rows(preds, test)], n_boot=n_boot, seed=seed)
        hc = {"offset_px_from_train": off, "hc_mad_mm": mad, "hc_mad_mm_uncorrected": mad_raw,
              "mean_signed_diff_mm": float(np.nanmean([r["hc_diff_mm"] for r in rows])),
              "dice_ellipse_fit": edice}
        rec.metrics["hc_mad_mm"] = mad
        rec.metrics["dice_ellipse_fit"] = edice
        rec.extra["hc18"] = hc
        _write_rows(rows, out / "test_hc.csv")
    rec.extra.update(extra)
    write_results(out / "results.json", [rec], config)
    return dict(ev.summary), hc


@dataclass
class EnsembleRunResult:
    out: Path
    val_dice: float | None
    members_val_dice: list[float | None]
    test: dict[str, Any]
    hc18: dict[str, Any] = field(default_factory=dict)
    postprocess: str = "none"


def ensemble_and_evaluate(folders: Sequence[str | Path], dataset: str | Path, out: Path, data_dir: str | Path | None = None,
                          select: bool = True, seed: int = 0, precision: str = "auto", device: str = "cpu",
                          tolerance_mm: float = 1.0, n_boot: int = 1000) -> EnsembleRunResult:
    """``medfm seg-ensemble``: combine trained models of one dataset (post-processing chosen on its
    val split), then evaluate the ensemble once on its test split, as ``train-seg`` does."""
    from medfm.data import load_dataset
    from medfm.tasks.segmentation.ensemble import SegEnsembleConfig, build_ensemble

    ds = load_dataset(dataset, data_dir)
    card = ds.card
    if card.task != "segmentation":
        raise ConfigError(f"dataset {card.name} is a {card.task} dataset; seg-ensemble needs segmentation masks")
    t0 = time.perf_counter()
    cfg = SegEnsembleConfig(members=tuple(str(Path(f).resolve()) for f in folders), dataset=card.name,
                            select_inference=select, seed=seed, precision=precision)
    val = list(ds.split("val")) if "val" in ds.splits else []
    ens = build_ensemble(folders, out, val, cfg, device=device)
    train = list(ds.split("train"))
    test = list(ds.split("test")) if "test" in ds.splits else []
    members = [m.info.val_dice for m in ens.members]
    result, hc = evaluate_test(ens, ds, train, test, cfg, out, f"trained/{card.name}-ensemble{len(folders)}", "seg-ensemble",
                               tolerance_mm, n_boot, seed, time.perf_counter() - t0,
                               {"ensemble": {"members_val_dice": members, "val_dice": ens.info.val_dice,
                                             "postprocess": ens.info.postprocess}})
    return EnsembleRunResult(out, ens.info.val_dice, members, result, hc, ens.info.postprocess)


def _write_rows(rows: Sequence[dict[str, Any]], path: Path) -> None:
    import csv

    from medfm._paths import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["case"])
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


# -- segment ---------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm")


@dataclass
class InputCase:
    case: str
    path: Path
    dicom_series: bool = False


def _stem(p: Path) -> str:
    low = p.name.lower()
    for suf in IMAGE_SUFFIXES:
        if low.endswith(suf):
            return p.name[: -len(suf)]
    return p.stem


def list_inputs(path: Path) -> list[InputCase]:
    """A file -> one case; a folder of DICOM files -> one series; a folder of images -> one case each."""
    if path.is_file():
        return [InputCase(_stem(path), path)]
    if not path.is_dir():
        raise InputError(f"{path}: input not found")
    from medfm.io import is_dicom_file

    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if files and all(p.suffix.lower() == ".dcm" or is_dicom_file(p) for p in files):
        return [InputCase(path.name, path, dicom_series=True)]
    cases = [InputCase(_stem(p), p) for p in files if p.name.lower().endswith(IMAGE_SUFFIXES)]
    if not cases:
        raise InputError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) and not a DICOM series")
    return cases


def _display(arr: np.ndarray) -> np.ndarray:
    """(C, H, W) intensities -> (H, W, 3) uint8 with a 1-99 percentile window."""
    from medfm.io.window import display_uint8, percentile_range

    a = arr.astype(np.float32)
    a = a[:3] if a.shape[0] >= 3 else np.repeat(a[:1], 3, axis=0)
    return display_uint8(a, *percentile_range(a)).transpose(1, 2, 0)


COLOURS = np.array([[255, 64, 64], [64, 200, 255], [255, 220, 0], [120, 255, 120], [255, 0, 255]], dtype=np.float32)


def overlay_png(image: Image, labels: np.ndarray, path: Path, z: int | None = None) -> Path:
    """PNG of one slice (``z``, default the slice with most foreground) with labels tinted on top."""
    from PIL import Image as PILImage

    from medfm._paths import atomic_path

    arr = image.array
    lab = labels
    if image.ndim == 3:
        if z is None:
            z = int(np.argmax((lab > 0).reshape(lab.shape[0], -1).sum(axis=1)))
        arr, lab = arr[:, z], lab[z]
    rgb = _display(arr).astype(np.float32)
    for i, v in enumerate(sorted(int(x) for x in np.unique(lab) if x != 0)):
        m = lab == v
        rgb[m] = 0.55 * rgb[m] + 0.45 * COLOURS[i % len(COLOURS)]
    with atomic_path(path) as tmp:
        PILImage.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(tmp, format="PNG")
    return path


@dataclass
class SegmentOptions:
    box: tuple[float, float, float, float] | None = None
    point: tuple[float, float] | None = None
    slice: int | None = None
    margin: float = 3.0
    segment_names: tuple[str, ...] = ()
    overwrite: bool = False  # --force: files already in --out may be replaced


def _prompted(model: Any, image: Image, opts: SegmentOptions, where: str) -> np.ndarray:
    """(1, *spatial) uint8 mask from a zoo segmenter with the given prompt."""
    from medfm.tasks.segmentation.promptable import (
        check_box,
        check_points,
        check_slice,
        propagate_3d,
        segment_box,
        segment_points,
    )

    if opts.box is None and opts.point is None:
        raise ConfigError(f"model '{model.card.id}' is promptable: give --box X0 Y0 X1 Y1 or --point X Y")
    hw = image.spatial_shape[-2:]
    if opts.box is not None:
        check_box(opts.box, hw, where=f"{where}: --box")
    if opts.point is not None:
        check_points([opts.point], hw, where=f"{where}: --point")
    if image.ndim == 2:
        if opts.slice not in (None, 0):
            raise InputError(f"{where}: --slice {opts.slice} given for a 2D image")
        if opts.box is not None:
            m = segment_box(model, image.array, opts.box, modality=image.modality)
        else:
            m = segment_points(model, image.array, [opts.point], modality=image.modality)
        return m[None].astype(np.uint8)
    depth = image.spatial_shape[0]
    z = check_slice(depth // 2 if opts.slice is None else opts.slice, depth, where=f"{where}: --slice")
    m = propagate_3d(model, image, z, box=opts.box, points=None if opts.box is not None else [opts.point],
                     margin=opts.margin)
    return m[None].astype(np.uint8)


def segment_inputs(model_ref: str, input_path: Path, out: Path, opts: SegmentOptions, device: str = "cpu") -> list[dict[str, Any]]:
    """``medfm segment``: one row per case with the files written and label volumes."""
    from medfm.io import read_dicom_series, read_image, write_dicom_seg, write_nifti

    cases = list_inputs(input_path)
    trained = is_trained_model_dir(model_ref)
    if trained:
        if opts.box is not None or opts.point is not None:
            raise ConfigError(f"{model_ref}: a trained model segments whole images; --box/--point are for promptable models")
        from medfm.tasks.segmentation.ensemble import load_segmenter

        seg = load_segmenter(model_ref, device=device)
        labels = seg.info.labels
        names = seg.info.label_names or tuple(f"label {v}" for v in labels)
        model_id = f"trained:{model_ref}"
    else:
        if Path(model_ref).exists() and not Path(model_ref).is_dir():
            raise InputError(f"{model_ref}: not a model folder")
        from medfm.models import create_model

        model = create_model(model_ref)
        model.require("segmenter", "medfm segment")
        labels = (1,)
        names = opts.segment_names[:1] or ("object",)
        model_id = model.card.id
    rows = []
    for c in cases:
        image = read_dicom_series(c.path) if c.dicom_series else read_image(c.path)
        if trained:
            mask = seg.predict(image)
        else:
            mask = image.with_array(_prompted(model, image, opts, str(c.path)), modality="SEG")
        lab = np.asarray(mask.array[0])
        nii = write_nifti(mask, out / f"{c.case}.nii.gz", overwrite=opts.overwrite)
        png = overlay_png(image, lab, out / "overlays" / f"{c.case}.png", z=opts.slice if image.ndim == 3 else None)
        row: dict[str, Any] = {"case": c.case, "input": str(c.path), "model": model_id, "mask": str(nii),
                               "overlay": str(png), "shape": list(lab.shape)}
        if c.dicom_series:
            dseg = out / "dicom_seg" / f"{c.case}.dcm"
            dseg.parent.mkdir(parents=True, exist_ok=True)
            present = [v for v in labels if (lab == v).any()]
            if present:
                # DICOM-SEG segments are numbered 1..K: label value labels[k - 1] -> segment k
                idx = np.zeros(int(max(labels)) + 1, dtype=np.uint8)
                for k, v in enumerate(labels):
                    idx[v] = k + 1
                write_dicom_seg(mask.with_array(idx[mask.array]), c.path, dseg, list(names), overwrite=opts.overwrite)
                row["dicom_seg"] = str(dseg)
            else:
                row["dicom_seg"] = None
                row["note"] = "empty mask: no DICOM-SEG written"
        known = image.meta.get("spacing_known", True) is not False
        unit = float(np.prod(image.spacing)) / (1000.0 if image.ndim == 3 else 100.0)
        size_key = "volume_ml" if image.ndim == 3 else "area_cm2"
        row["labels"] = {str(v): {"name": names[i], "voxels": int((lab == v).sum()),
                                  **({size_key: float((lab == v).sum() * unit)} if known else {})}
                         for i, v in enumerate(labels)}
        if not known:  # a PNG/JPEG/TIFF holds no pixel size: sizes in mm would be invented
            row["note"] = f"{c.path.name}: no pixel spacing in the file, so sizes are given in pixels only"
        rows.append(row)
    return rows


def nan_to_none(obj: Any) -> Any:
    """NaN -> None for JSON output (dataclasses such as ``MetricValue`` become dicts first)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = to_dict(obj)
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [nan_to_none(v) for v in obj]
    return obj
