"""Evaluate label maps against references: per case and per label, summaries with bootstrap CIs.

Every case and every declared label is a row; nothing empty is dropped (see the empty-mask
conventions in ``medfm.metrics.segmentation``: Dice of empty vs empty = 1). Distances use each
case's voxel spacing, so they are in mm.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import InputError
from medfm.io.geometry import geometry_differences
from medfm.io.image import Image
from medfm.metrics.segmentation import METRICS, binary_metrics, summarize
from medfm.results import MetricValue

MASK_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".tif", ".tiff", ".npz")
SUMMARY_METRICS = ("dice", "iou", "hd95_mm", "assd_mm", "nsd", "volume_diff_ml", "abs_volume_diff_ml")


def case_name(path: Path) -> str | None:
    """Case id of a mask file (name without its mask suffix), None for other files."""
    low = path.name.lower()
    for suf in MASK_SUFFIXES:
        if low.endswith(suf):
            return path.name[: -len(suf)]
    return None


def mask_files(folder: Path) -> dict[str, Path]:
    """{case: path} of the mask files directly in ``folder``."""
    if not folder.is_dir():
        raise InputError(f"{folder}: folder not found")
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and (c := case_name(p)) is not None:
            if c in out:
                raise InputError(f"{folder}: two mask files for case '{c}' ({out[c].name}, {p.name})")
            out[c] = p
    return out


def label_array(mask: Image, path: Path) -> np.ndarray:
    """(1, *s) or (C, *s) mask Image -> integer label map (*s); {0, 255} masks become {0, 1}."""
    arr = np.asarray(mask.array)
    if arr.shape[0] > 1:  # RGB masks (PNG annotations): any channel on
        arr = arr.max(axis=0, keepdims=True)
    arr = arr[0]
    if arr.size and not np.allclose(arr, np.round(arr)):
        raise InputError(f"{path}: mask values must be integer labels (found non-integer values)")
    arr = np.round(arr).astype(np.int64)
    vals = set(np.unique(arr).tolist())
    if vals <= {0, 255} and 255 in vals:
        arr = arr // 255
    return arr


def check_same_geometry(pred: Image, gt: Image, pred_path: Path, gt_path: Path) -> None:
    """InputError naming both files when the two masks are not on the same grid."""
    problems = geometry_differences(pred, gt)
    if problems:
        raise InputError(f"prediction {pred_path} and reference {gt_path} differ in geometry: {'; '.join(problems)}")


def check_labels(arr: np.ndarray, labels: Sequence[int], path: Path) -> None:
    """InputError when ``arr`` holds a value that is neither 0 nor a declared label."""
    extra = sorted(set(np.unique(arr).tolist()) - {0, *labels})
    if extra:
        raise InputError(f"{path}: label value(s) {extra} not among the declared labels {sorted(labels)}")


def case_rows(
    case: str, pred: np.ndarray, gt: np.ndarray, labels: Sequence[int], spacing: Sequence[float], tolerance_mm: float
) -> list[dict[str, Any]]:
    """One row per label: {"case", "label", metric: value}."""
    return [
        {"case": case, "label": int(lab), **binary_metrics(pred == lab, gt == lab, spacing, tolerance_mm)}
        for lab in labels
    ]


@dataclass
class SegEvalConfig:
    """What ``seg-eval`` was asked (recorded in the results' provenance)."""

    pred_dir: str
    gt_dir: str
    labels: tuple[int, ...] = ()
    tolerance_mm: float = 1.0
    n_boot: int = 1000
    seed: int = 0


@dataclass
class SegEvalResult:
    rows: list[dict[str, Any]]
    summary: dict[str, dict[str, MetricValue]]
    labels: tuple[int, ...]
    label_names: dict[int, str] = field(default_factory=dict)
    n_cases: int = 0
    notes: list[str] = field(default_factory=list)


def summarize_rows(
    rows: Sequence[dict[str, Any]], labels: Sequence[int], n_boot: int = 1000, seed: int = 0
) -> dict[str, dict[str, MetricValue]]:
    """{"label <v>" | "mean": {metric: MetricValue (mean over cases, CI, n, n_undefined)}}.

    "mean" averages the labels within each case first (NaN when a label's value is undefined),
    then bootstraps over cases.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for lab in labels:
        sel = [r for r in rows if r["label"] == lab]
        out[f"label {lab}"] = {m: summarize([r[m] for r in sel], n_boot=n_boot, seed=seed) for m in SUMMARY_METRICS}
    cases: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        cases.setdefault(r["case"], []).append(r)
    out["mean"] = {}
    for m in SUMMARY_METRICS:
        per_case = []
        for rs in cases.values():
            v = [r[m] for r in rs]
            per_case.append(float(np.mean(v)) if all(np.isfinite(v)) else math.nan)
        out["mean"][m] = summarize(per_case, n_boot=n_boot, seed=seed)
    return out


def evaluate_pairs(
    pairs: Iterable[tuple[str, Image, Image, Path, Path]],
    labels: Sequence[int] | None = None,
    tolerance_mm: float = 1.0,
    n_boot: int = 1000,
    seed: int = 0,
) -> SegEvalResult:
    """Evaluate (case, pred Image, gt Image, pred_path, gt_path) pairs; labels default to the
    non-zero values found in the references."""
    loaded = []
    no_spacing = []
    for case, pred, gt, pp, gp in pairs:
        check_same_geometry(pred, gt, pp, gp)
        if gt.meta.get("spacing_known") is False:
            no_spacing.append(case)
        loaded.append((case, label_array(pred, pp), label_array(gt, gp), gt.spacing, pp, gp))
    if labels is None:
        found: set[int] = set()
        for _, _, g, _, _, _ in loaded:
            found.update(int(v) for v in np.unique(g))
        found.discard(0)
        labels = sorted(found)
        if not labels:
            raise InputError("no foreground label in any reference mask; pass --labels")
    labels = tuple(int(v) for v in labels)
    rows: list[dict[str, Any]] = []
    for case, p, g, spacing, pp, gp in loaded:
        check_labels(g, labels, gp)
        check_labels(p, labels, pp)
        rows.extend(case_rows(case, p, g, labels, spacing, tolerance_mm))
    notes = spacing_notes(no_spacing, "reference file(s)")
    return SegEvalResult(rows, summarize_rows(rows, labels, n_boot, seed), labels, n_cases=len(loaded), notes=notes)


def spacing_notes(cases: Sequence[Any], what: str = "case(s)") -> list[str]:
    """The note for cases scored in pixels because their files carry no spacing (PNG etc.)."""
    if not cases:
        return []
    names = ", ".join(map(str, cases[:3])) + (" ..." if len(cases) > 3 else "")
    return [f"{len(cases)} {what} carry no pixel spacing (e.g. PNG): their distances and volumes assume 1 mm pixels ({names})"]


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    labels: Sequence[int] | None = None,
    tolerance_mm: float = 1.0,
    n_boot: int = 1000,
    seed: int = 0,
) -> SegEvalResult:
    """Pair mask files of two folders by case name (file name without suffix) and evaluate.

    A reference without a prediction (or the reverse) is an InputError: every case counts.
    """
    from medfm.io import read_image

    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    preds, gts = mask_files(pred_dir), mask_files(gt_dir)
    if not gts:
        raise InputError(f"{gt_dir}: no mask files ({', '.join(MASK_SUFFIXES)})")
    missing = sorted(set(gts) - set(preds))
    if missing:
        raise InputError(f"{pred_dir}: no prediction for reference case(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    unmatched = sorted(set(preds) - set(gts))
    if unmatched:
        raise InputError(f"{gt_dir}: no reference for predicted case(s) {unmatched[:5]}{' ...' if len(unmatched) > 5 else ''}")

    def pairs() -> Iterable[tuple[str, Image, Image, Path, Path]]:
        for case in sorted(gts):
            yield case, read_image(preds[case]), read_image(gts[case]), preds[case], gts[case]

    return evaluate_pairs(pairs(), labels, tolerance_mm, n_boot, seed)


def write_case_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Per-case, per-label CSV (atomic)."""
    from medfm._paths import atomic_path

    path = Path(path)
    cols = ["case", "label", *METRICS]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return path


def to_records(
    result: SegEvalResult, dataset: str, split: str, model: str, protocol: str, config: Any,
    data_checksum: str | None = None, weights_hash: str | None = None, seconds: float = 0.0, seed: int = 0,
) -> list[Any]:
    """One ``Record`` with ``metric`` (mean over labels) and ``metric[label]`` entries."""
    from medfm.results import Record, make_provenance

    metrics: dict[str, MetricValue] = {}
    for group, vals in result.summary.items():
        suffix = "" if group == "mean" else f"[{group.split()[-1]}]"
        for m, s in vals.items():
            metrics[f"{m}{suffix}"] = s
    undefined = {name: v.n_undefined for name, v in metrics.items() if v.n_undefined}
    return [Record(
        dataset=dataset, split=split, model=model, protocol=protocol, metrics=metrics, seed=seed,
        n=result.n_cases, seconds=seconds,
        provenance=make_provenance(config, data_checksum=data_checksum, weights_hash=weights_hash),
        extra={"labels": list(result.labels), "n_undefined": undefined,
               "per_case": [{k: r[k] for k in ("case", "label", "dice", "hd95_mm")} for r in result.rows]},
    )]
