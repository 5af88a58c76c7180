"""User datasets: a folder on disk becomes a ``Dataset`` with a generated card.

Recognised layouts (checked in this order):

1. ``labels.csv`` with columns ``file`` (or ``path``), ``label`` and optional ``split``
   (train/val/test) and ``group`` (patient id: splits never divide a group). ``file`` is an
   image file or a DICOM series folder, relative to the dataset folder -> classification.
2. ``images/`` + ``masks/`` or ``imagesTr/`` + ``labelsTr/`` (NIfTI, NRRD, MHA or PNG/JPEG/TIFF):
   a mask has the image's name, optionally with ``_mask`` / ``_seg`` / ``_label`` before the
   extension -> segmentation. Class names from ``dataset.json`` (MSD style) or ``labels=``.
   Optional ``splits.csv`` (columns ``id``, ``split``) gives the official split.
3. Image files and/or DICOM series folders without labels -> unlabelled samples.

Without an official split, a fixed-seed split (stratified by label for classification) is
made and recorded in ``card.options['split']``.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from medfm.data.builtin import check_geometry, to_label_mask
from medfm.data.card import DatasetCard, Sample, SplitData
from medfm.data.dataset import (
    DEFAULT_FRACTIONS, DEFAULT_SPLIT_SEED, Dataset, FileSplit, SampleRef, group_split, stratified_split,
)
from medfm.errors import ConfigError, InputError

SPLITS = ("train", "val", "test")
VOLUME_EXTS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
RASTER_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_EXTS = (".dcm", ".dicom")
MASK_SUFFIXES = ("", "_mask", "_seg", "_label", "_labels", "_annotation")
LAYOUT_HELP = (
    "expected labels.csv (file,label[,split]), images/ + masks/, imagesTr/ + labelsTr/, "
    "image files or DICOM series folders"
)
OPTIONS = ("name", "modality", "labels", "seed", "fractions")


def _ext(path: Path) -> str:
    name = path.name.lower()
    for ext in VOLUME_EXTS + RASTER_EXTS + DICOM_EXTS:
        if name.endswith(ext):
            return ext
    return ""


def _stem(path: Path) -> str:
    ext = _ext(path)
    return path.name[: -len(ext)] if ext else path.name


def _is_dicom_file(path: Path) -> bool:
    """``.dcm`` files, and extension-less files with the DICOM signature (as scanners write them)."""
    if path.suffix.lower() in DICOM_EXTS:
        return True
    if path.suffix:
        return False
    from medfm.io import is_dicom_file

    return is_dicom_file(path)


def _is_series_dir(path: Path) -> bool:
    return path.is_dir() and any(p.is_file() and _is_dicom_file(p) for p in path.iterdir())


def _is_image_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and _ext(path) in VOLUME_EXTS + RASTER_EXTS + DICOM_EXTS


def read_any(path: Path) -> Any:
    """Read an image file or a DICOM series folder with ``medfm.io``."""
    from medfm import io

    if path.is_dir():
        return io.read_dicom_series(path)
    return io.read_image(path)


def _ndim_of(path: Path) -> int:
    return 3 if path.is_dir() or _ext(path) in VOLUME_EXTS + DICOM_EXTS else 2


def _check_options(path: Path, options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown option(s) {unknown} for a folder dataset; allowed: {list(OPTIONS)}")


def _sanitise(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "dataset"


# --------------------------------------------------------------------------- classification

def _read_labels_csv(root: Path) -> list[dict[str, str]]:
    path = root / "labels.csv"
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            fields = {(h or "").strip().lower(): h for h in (reader.fieldnames or [])}
            rows = [{k: (row.get(h) or "").strip() for k, h in fields.items()} for row in reader]
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc
    file_col = "file" if "file" in fields else "path" if "path" in fields else None
    if file_col is None or "label" not in fields:
        raise InputError(f"{path}: needs columns 'file' (or 'path') and 'label', found {list(fields)}")
    if not rows:
        raise InputError(f"{path}: no rows")
    for row in rows:
        row["file"] = row[file_col]
    return rows


def _classification(root: Path, options: dict[str, Any]) -> tuple[DatasetCard, dict[str, list[SampleRef]]]:
    rows = _read_labels_csv(root)
    csv_path = root / "labels.csv"
    values = sorted({r["label"] for r in rows}, key=lambda v: (0, int(v), "") if v.lstrip("-").isdigit() else (1, 0, v))
    if "" in values:
        raise InputError(f"{csv_path}: a row has an empty label")
    index = {v: i for i, v in enumerate(values)}
    records = []
    for n, row in enumerate(rows, start=2):
        p = root / row["file"]
        if not row["file"] or not (p.is_file() or p.is_dir()):
            raise InputError(f"{csv_path}: line {n}: file '{row['file']}' not found in {root}")
        records.append(SampleRef(
            id=row["file"], image=p, label=index[row["label"]], group=row.get("group") or None,
            meta={"file": row["file"], "label_value": row["label"]},
        ))
    seed = int(options.get("seed", DEFAULT_SPLIT_SEED))
    fractions = tuple(options.get("fractions", DEFAULT_FRACTIONS))
    if any(r.get("split") for r in rows):
        bad = sorted({r.get("split", "") for r in rows} - set(SPLITS))
        if bad:
            raise InputError(f"{csv_path}: split values must be train, val or test; found {bad}")
        parts = {s: [rec for rec, r in zip(records, rows) if r["split"] == s] for s in SPLITS}
        split_info: dict[str, Any] = {"method": "official (labels.csv split column)"}
    else:
        if any(r.group for r in records):
            idx = group_split([r.group or r.id for r in records], SPLITS, fractions, seed)
            split_info = {"method": "fixed-seed, group-level", "seed": seed, "fractions": list(fractions)}
        else:
            idx = stratified_split([r.label for r in records], SPLITS, fractions, seed)
            split_info = {"method": "fixed-seed, stratified by label", "seed": seed, "fractions": list(fractions)}
        parts = {s: [records[i] for i in idx[s]] for s in SPLITS}
    card = DatasetCard(
        name=_sanitise(str(options.get("name") or root.name)),
        task="classification",
        modality=str(options.get("modality", "OT")),
        labels=tuple(values),
        splits=tuple(s for s in SPLITS if parts[s]),
        description=f"user folder dataset {root} (labels.csv, {len(records)} images)",
        ndim=_ndim_of(records[0].image) if records[0].image else 2,
        folder=str(root),
        options={"split": split_info, "layout": "labels.csv"},
    )
    return card, {s: parts[s] for s in card.splits}


# --------------------------------------------------------------------------- segmentation

def _pair_dirs(root: Path) -> tuple[Path, Path] | None:
    for images, masks in (("images", "masks"), ("imagesTr", "labelsTr")):
        if (root / images).is_dir() and (root / masks).is_dir():
            return root / images, root / masks
    return None


def _seg_labels(root: Path, options: dict[str, Any]) -> tuple[str, ...]:
    if options.get("labels"):
        return tuple(str(v) for v in options["labels"])
    meta = root / "dataset.json"
    if meta.is_file():
        try:
            labels = json.loads(meta.read_text()).get("labels", {})
            return tuple(str(labels[k]) for k in sorted(labels, key=lambda k: int(k)))
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            raise InputError(f"{meta}: cannot read 'labels' ({exc})") from exc
    return ("background", "foreground")


def _official_splits(root: Path) -> dict[str, str] | None:
    path = root / "splits.csv"
    if not path.is_file():
        return None
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc
    out = {}
    for row in rows:
        key = (row.get("id") or row.get("file") or "").strip()
        split = (row.get("split") or "").strip()
        if split not in SPLITS:
            raise InputError(f"{path}: split of '{key}' must be train, val or test, got '{split}'")
        out[_stem(Path(key)) if key else key] = split
    return out


def _segmentation(root: Path, dirs: tuple[Path, Path], options: dict[str, Any]) -> tuple[DatasetCard, dict[str, list[SampleRef]]]:
    image_dir, mask_dir = dirs
    masks = {_stem(p): p for p in sorted(mask_dir.iterdir()) if _is_image_file(p)}
    records = []
    for path in sorted(image_dir.iterdir()):
        if not _is_image_file(path):
            continue
        stem = _stem(path)
        mask = next((masks[stem + s] for s in MASK_SUFFIXES if stem + s in masks), None)
        if mask is None:
            raise InputError(f"image {path} has no mask in {mask_dir} (expected {stem}{_ext(path)} or {stem}_mask...)")
        records.append(SampleRef(id=stem, image=path, mask=mask, group=stem, meta={"file": path.name}))
    if not records:
        raise InputError(f"{image_dir}: no images ({LAYOUT_HELP})")
    seed = int(options.get("seed", DEFAULT_SPLIT_SEED))
    fractions = tuple(options.get("fractions", DEFAULT_FRACTIONS))
    official = _official_splits(root)
    if official is not None:
        missing = [r.id for r in records if r.id not in official]
        if missing:
            raise InputError(f"{root / 'splits.csv'}: no split for {missing[:3]}")
        parts = {s: [r for r in records if official[r.id] == s] for s in SPLITS}
        split_info: dict[str, Any] = {"method": "official (splits.csv)"}
    else:
        idx = group_split([r.id for r in records], SPLITS, fractions, seed)
        parts = {s: [records[i] for i in idx[s]] for s in SPLITS}
        split_info = {"method": "fixed-seed, case-level", "seed": seed, "fractions": list(fractions)}
    card = DatasetCard(
        name=_sanitise(str(options.get("name") or root.name)),
        task="segmentation",
        modality=str(options.get("modality", "OT")),
        labels=_seg_labels(root, options),
        splits=tuple(s for s in SPLITS if parts[s]),
        description=f"user folder dataset {root} ({image_dir.name}/ + {mask_dir.name}/, {len(records)} pairs)",
        ndim=_ndim_of(records[0].image) if records[0].image else 2,
        folder=str(root),
        options={"split": split_info, "layout": f"{image_dir.name}/+{mask_dir.name}/"},
    )
    return card, {s: parts[s] for s in card.splits}


# --------------------------------------------------------------------------- unlabelled

def _unlabelled(root: Path, options: dict[str, Any]) -> tuple[DatasetCard, dict[str, list[SampleRef]]]:
    items: list[Path] = []
    for path in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if _is_series_dir(path):
            items.append(path)
        elif _is_image_file(path) and not _is_dicom_file(path):
            items.append(path)
    if not items:
        raise InputError(f"{root}: no images found; {LAYOUT_HELP}")
    records = [SampleRef(id=str(p.relative_to(root)), image=p, meta={"file": str(p.relative_to(root))}) for p in items]
    seed = int(options.get("seed", DEFAULT_SPLIT_SEED))
    fractions = tuple(options.get("fractions", DEFAULT_FRACTIONS))
    idx = group_split([r.id for r in records], SPLITS, fractions, seed)
    parts = {s: [records[i] for i in idx[s]] for s in SPLITS}
    n_series = sum(p.is_dir() for p in items)
    card = DatasetCard(
        name=_sanitise(str(options.get("name") or root.name)),
        task="classification",
        modality=str(options.get("modality", "OT")),
        labels=(),
        splits=tuple(s for s in SPLITS if parts[s]),
        description=f"user folder dataset {root} (unlabelled: {len(items) - n_series} image files, {n_series} DICOM series)",
        ndim=_ndim_of(items[0]),
        folder=str(root),
        options={"split": {"method": "fixed-seed, item-level", "seed": seed, "fractions": list(fractions)},
                 "layout": "unlabelled"},
    )
    return card, {s: parts[s] for s in card.splits}


# --------------------------------------------------------------------------- entry point

def load_folder(root: str | Path, **options: Any) -> Dataset:
    """Load a folder in one of the layouts above. Options: name, modality, labels, seed, fractions.

    Raises InputError naming the folder when it holds no usable images, and naming both files
    when a mask's shape or geometry differs from its image (checked when a sample is read).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InputError(f"{root}: dataset folder not found")
    _check_options(root, options)
    modality = options.get("modality")
    if (root / "labels.csv").is_file():
        card, parts = _classification(root, options)

        def read(rec: SampleRef) -> Sample:
            assert rec.image is not None
            image = read_any(rec.image)
            if modality:
                image = replace(image, modality=str(modality))
            return Sample(id=rec.id, image=image, label=rec.label, meta=dict(rec.meta))

    elif (dirs := _pair_dirs(root)) is not None:
        card, parts = _segmentation(root, dirs, options)

        def read(rec: SampleRef) -> Sample:
            assert rec.image is not None and rec.mask is not None
            image = read_any(rec.image)
            if modality:
                image = replace(image, modality=str(modality))
            mask = to_label_mask(read_any(rec.mask), rec.mask)
            check_geometry(image, mask, rec.image, rec.mask)
            return Sample(id=rec.id, image=image, mask=mask, meta=dict(rec.meta))

    else:
        card, parts = _unlabelled(root, options)

        def read(rec: SampleRef) -> Sample:
            assert rec.image is not None
            image = read_any(rec.image)
            if modality:
                image = replace(image, modality=str(modality))
            return Sample(id=rec.id, image=image, meta=dict(rec.meta))

    splits: dict[str, SplitData] = {s: FileSplit(card, s, recs, read) for s, recs in parts.items()}
    return Dataset(card, root, splits)
