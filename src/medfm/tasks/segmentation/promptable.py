"""Promptable segmentation with the zoo's segmenters (SAM family): box/point prompts, 3D
propagation from one key slice, and prompt simulation from ground truth for evaluation.

Frames (as in ``medfm.models.base``): a box is (x0, y0, x1, y1) and a point (x, y) in pixel
coordinates of the 2D slice given to ``set_image``: x = column, y = row, origin at the top-left
pixel's corner, so a mask covering columns c0..c1 has x0 = c0, x1 = c1 + 1. Volumes are
(C, Z, Y, X); slices are taken along Z and prompts refer to a slice's (Y, X) plane.

Prompt simulation follows MedSAM / SAM-Med2D evaluation: a box is the ground-truth bounding box
with each side moved by a seeded random shift of up to ``max_shift`` pixels (clipped to the
image); points are sampled uniformly among the ground-truth pixels (all positive). Fixed boxes
can be given instead (``read_prompt_file``: the same prompts for every model compared).
Scores are the ``seg-eval`` metrics and summaries (``medfm.tasks.segmentation.evaluate``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from medfm.errors import ConfigError, InputError
from medfm.io.image import Image
from medfm.metrics.segmentation import binary_metrics
from medfm.tasks.segmentation.evaluate import SegEvalResult, spacing_notes, summarize_rows

PROMPT_MODES = ("box", "points", "propagate")


# -- prompt validation -----------------------------------------------------------------------


def check_box(box: Sequence[float], hw: tuple[int, int], where: str = "box") -> np.ndarray:
    """(x0, y0, x1, y1) inside an (H, W) image with x0 < x1, y0 < y1, else InputError."""
    b = np.asarray(box, dtype=float).reshape(-1)
    h, w = hw
    if b.size != 4 or not np.all(np.isfinite(b)):
        raise InputError(f"{where}: a box is 4 numbers X0 Y0 X1 Y1, got {list(box)}")
    x0, y0, x1, y1 = b
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise InputError(
            f"{where}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is outside the {w}x{h} image "
            f"(need 0 <= x0 < x1 <= {w}, 0 <= y0 < y1 <= {h})"
        )
    return b


def check_points(points: Sequence[Sequence[float]], hw: tuple[int, int], where: str = "point") -> np.ndarray:
    """(N, 2) (x, y) points inside an (H, W) image, else InputError."""
    p = np.asarray(points, dtype=float).reshape(-1, 2)
    h, w = hw
    for x, y in p:
        if not (0 <= x < w and 0 <= y < h) or not np.isfinite(x + y):
            raise InputError(f"{where}: point ({x:g}, {y:g}) is outside the {w}x{h} image (need 0 <= x < {w}, 0 <= y < {h})")
    return p


def check_slice(z: int, depth: int, where: str = "slice") -> int:
    if not 0 <= int(z) < depth:
        raise InputError(f"{where}: slice {z} is outside the volume (0..{depth - 1})")
    return int(z)


# -- geometry helpers ------------------------------------------------------------------------


def mask_box(mask: np.ndarray, margin: float = 0.0) -> np.ndarray | None:
    """Bounding box (x0, y0, x1, y1) of a 2D mask (Y, X), enlarged by ``margin`` px on each side
    and clipped to the image; None for an empty mask."""
    ys, xs = np.nonzero(np.asarray(mask, dtype=bool))
    if ys.size == 0:
        return None
    h, w = mask.shape
    return np.array(
        [max(xs.min() - margin, 0), max(ys.min() - margin, 0), min(xs.max() + 1 + margin, w), min(ys.max() + 1 + margin, h)],
        dtype=float,
    )


def jittered_box(mask: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Ground-truth box of a 2D mask with each side shifted by an integer in [-max_shift, max_shift]
    (seeded ``rng``), clipped to the image and kept non-degenerate."""
    box = mask_box(mask)
    if box is None:
        raise ValueError("cannot build a box prompt from an empty mask")
    h, w = mask.shape
    if max_shift > 0:
        box = box + rng.integers(-max_shift, max_shift + 1, size=4)
    x0, y0, x1, y1 = box
    x0, x1 = np.clip(x0, 0, w - 1), np.clip(x1, 1, w)
    y0, y1 = np.clip(y0, 0, h - 1), np.clip(y1, 1, h)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    return np.array([x0, y0, x1, y1], dtype=float)


def sample_points(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` (x, y) pixel-centre points drawn without replacement among a 2D mask's pixels."""
    ys, xs = np.nonzero(np.asarray(mask, dtype=bool))
    if ys.size == 0:
        raise ValueError("cannot sample point prompts from an empty mask")
    idx = rng.choice(ys.size, size=min(n, ys.size), replace=False)
    return np.stack([xs[idx] + 0.5, ys[idx] + 0.5], axis=1).astype(float)


def slice_of(image: Image | np.ndarray, z: int) -> np.ndarray:
    """(C, H, W) slice z of a (C, Z, Y, X) volume (Image or array)."""
    arr = image.array if isinstance(image, Image) else np.asarray(image)
    return arr[:, z]


# -- prompting -------------------------------------------------------------------------------


def _set_image(model: Any, image: np.ndarray, modality: str | None) -> None:
    """``model.set_image`` with the image's modality when known (e.g. MedSAM windows CT first)."""
    if modality is None:
        model.set_image(image)
    else:
        model.set_image(image, modality=modality)


def segment_box(
    model: Any, image: np.ndarray, box: Sequence[float], embed: bool = True, modality: str | None = None
) -> np.ndarray:
    """Mask (H, W) bool for one box on a 2D image (C, H, W) or (H, W).

    ``embed=False`` reuses the embedding of the previous ``set_image`` (same image);
    ``modality`` (e.g. "CT") lets the model apply its card's intensity window.
    """
    hw = image.shape[-2:]
    b = check_box(box, hw)
    if embed:
        _set_image(model, image, modality)
    return np.asarray(model.predict(boxes=b[None]))[0].astype(bool)


def segment_points(
    model: Any,
    image: np.ndarray,
    points: Sequence[Sequence[float]],
    labels: Sequence[int] | None = None,
    embed: bool = True,
    modality: str | None = None,
) -> np.ndarray:
    """Mask (H, W) bool for one prompt made of N points (x, y) with labels (1 = inside, 0 = outside)."""
    p = check_points(points, image.shape[-2:])
    lab = np.ones(len(p), dtype=int) if labels is None else np.asarray(labels, dtype=int).reshape(-1)
    if lab.size != len(p):
        raise InputError(f"{len(p)} points but {lab.size} point labels")
    if embed:
        _set_image(model, image, modality)
    return np.asarray(model.predict(points=p[None], point_labels=lab[None]))[0].astype(bool)


def propagate_3d(
    model: Any,
    volume: Image | np.ndarray,
    key_slice: int,
    box: Sequence[float] | None = None,
    points: Sequence[Sequence[float]] | None = None,
    point_labels: Sequence[int] | None = None,
    margin: float = 3.0,
    min_pixels: int = 1,
    max_slices: int | None = None,
    select: Callable[[int], None] | None = None,
    modality: str | None = None,
) -> np.ndarray:
    """Segment a volume (C, Z, Y, X) from one prompt on ``key_slice``; returns (Z, Y, X) bool.

    The key slice is segmented with the given box (or points); then, in both directions, each
    neighbouring slice is prompted with the previous slice's mask bounding box enlarged by
    ``margin`` px. Propagation stops when a mask has fewer than ``min_pixels`` pixels.
    ``select(z)``, when given, makes slice z the model's current image instead of
    ``model.set_image`` (e.g. from embeddings kept by the caller).
    """
    arr = volume.array if isinstance(volume, Image) else np.asarray(volume)
    if modality is None and isinstance(volume, Image):
        modality = volume.modality
    if arr.ndim != 4:
        raise InputError(f"3D propagation needs a (C, Z, Y, X) volume, got shape {arr.shape}")
    depth = arr.shape[1]
    z0 = check_slice(key_slice, depth)
    out = np.zeros(arr.shape[1:], dtype=bool)
    if box is None and points is None:
        raise InputError("3D propagation needs a box or point prompt on the key slice")
    if select is not None:
        select(z0)
    if box is not None:
        key = segment_box(model, arr[:, z0], box, embed=select is None, modality=modality)
    else:
        key = segment_points(model, arr[:, z0], points, point_labels, embed=select is None, modality=modality)
    out[z0] = key
    if key.sum() < min_pixels:
        return out
    for step in (1, -1):
        prev, z, n = key, z0 + step, 0
        while 0 <= z < depth and (max_slices is None or n < max_slices):
            b = mask_box(prev, margin)
            if b is None:
                break
            if select is not None:
                select(z)
            m = segment_box(model, arr[:, z], b, embed=select is None, modality=modality)
            if m.sum() < min_pixels:
                break
            out[z] = m
            prev, z, n = m, z + step, n + 1
    return out


# -- evaluation with simulated prompts -------------------------------------------------------


@dataclass
class PromptEvalConfig:
    """How prompts are simulated from ground truth.

    mode: "box" (jittered GT box per slice / image), "points" (``n_points`` positive points per
    slice / image) or "propagate" (3D only: one jittered box on the slice with the largest area,
    then :func:`propagate_3d`). Each label value is prompted separately.
    """

    mode: str = "box"
    max_shift: int = 5
    n_points: int = 1
    seed: int = 0
    tolerance_mm: float = 1.0
    margin: float = 3.0


@dataclass(frozen=True)
class FixedPrompt:
    """A given box prompt for one (case, label): on the image (2D) or on slice ``z`` (3D, then
    propagated through the volume)."""

    box: tuple[float, float, float, float]
    z: int | None = None
    where: str = "prompt"


def read_prompt_file(path: str | Any) -> dict[tuple[str, int], FixedPrompt]:
    """Box prompts from a CSV with columns ``case, x0, y0, x1, y1`` and optional ``label``
    (default 1) and ``z`` (3D key slice); pixels, x = column, as for ``medfm segment --box``."""
    import csv
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: prompt file not found")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or ())
        need = {"case", "x0", "y0", "x1", "y1"}
        if not need <= cols:
            raise InputError(f"{path}: prompt file needs columns {sorted(need)} (+ optional label, z), got {sorted(cols)}")
        out: dict[tuple[str, int], FixedPrompt] = {}
        for i, row in enumerate(reader, start=2):
            where = f"{path}:{i}"
            try:
                box = tuple(float(row[k]) for k in ("x0", "y0", "x1", "y1"))
                label = int(row.get("label") or 1)
                z = int(row["z"]) if (row.get("z") or "").strip() else None
            except ValueError:
                raise InputError(f"{where}: box coordinates, label and z must be numbers") from None
            key = (row["case"], label)
            if key in out:
                raise InputError(f"{where}: a second prompt for case '{row['case']}' label {label}")
            out[key] = FixedPrompt(box, z, where)  # type: ignore[arg-type]
    if not out:
        raise InputError(f"{path}: no prompts in the file")
    return out


def check_prompts(prompts: dict[tuple[str, int], FixedPrompt], samples: Sequence[Any]) -> None:
    """Every fixed prompt names an evaluated case and lies on its image (slice), else InputError;
    run before any model call so a bad prompt file fails fast."""
    shapes = {str(s.id): s.image.array.shape[1:] for s in samples if s.image is not None}
    unknown = sorted({c for c, _ in prompts} - set(shapes))
    if unknown:
        raise InputError(f"prompt file names case(s) not in the evaluated cases: {unknown[:5]}")
    for (case, _), p in prompts.items():
        shape = shapes[case]
        if len(shape) == 3:
            if p.z is None:
                raise InputError(f"{p.where}: a 3D case needs the key slice in column z")
            check_slice(p.z, shape[0], where=p.where)
        elif p.z not in (None, 0):
            raise InputError(f"{p.where}: z = {p.z} given for a 2D image")
        check_box(p.box, tuple(shape[-2:]), where=p.where)


def _fixed_prediction(
    model: Any, arr: np.ndarray, gt: np.ndarray, prompt: FixedPrompt, cfg: PromptEvalConfig, modality: str | None = None
) -> np.ndarray:
    """Prediction from a fixed box (checked by ``check_prompts``): 2D directly, 3D propagated from z."""
    if gt.ndim == 2:
        return segment_box(model, arr, check_box(prompt.box, gt.shape, where=prompt.where), modality=modality)
    assert prompt.z is not None
    z = check_slice(prompt.z, gt.shape[0], where=prompt.where)
    check_box(prompt.box, gt.shape[1:], where=prompt.where)
    return propagate_3d(model, arr, z, box=prompt.box, margin=cfg.margin, modality=modality)


def _predict_label(
    model: Any, arr: np.ndarray, gt: np.ndarray, cfg: PromptEvalConfig, rng: np.random.Generator, modality: str | None = None
) -> np.ndarray:
    """Binary prediction (same shape as ``gt``) for one label of one image/volume."""
    pred = np.zeros(gt.shape, dtype=bool)
    if cfg.mode == "propagate":
        if gt.ndim != 3:
            raise InputError("prompt mode 'propagate' needs 3D volumes")
        if not gt.any():
            return pred
        z = int(np.argmax(gt.reshape(gt.shape[0], -1).sum(axis=1)))
        return propagate_3d(model, arr, z, box=jittered_box(gt[z], cfg.max_shift, rng), margin=cfg.margin, modality=modality)
    slices = range(gt.shape[0]) if gt.ndim == 3 else [None]
    for z in slices:
        g = gt if z is None else gt[z]
        if not g.any():
            continue  # no object on this slice: no prompt, an empty prediction (counted)
        img = arr if z is None else arr[:, z]
        if cfg.mode == "box":
            m = segment_box(model, img, jittered_box(g, cfg.max_shift, rng), modality=modality)
        elif cfg.mode == "points":
            m = segment_points(model, img, sample_points(g, cfg.n_points, rng), modality=modality)
        else:
            raise ConfigError(f"unknown prompt mode '{cfg.mode}' ({', '.join(PROMPT_MODES)})")
        if z is None:
            pred = m
        else:
            pred[z] = m
    return pred


def evaluate_prompted(
    model: Any,
    samples: Iterable[Any],
    labels: Sequence[int],
    config: PromptEvalConfig,
    prompts: dict[tuple[str, int], FixedPrompt] | None = None,
) -> list[dict[str, Any]]:
    """Per-case, per-label metrics of a promptable model with prompts simulated from the masks.

    ``samples``: objects with ``id``, ``image`` and ``mask`` Images (``medfm.data.Sample``).
    ``prompts``: fixed boxes per (case, label) instead of simulated ones; a label present in a
    case's mask without a prompt is an InputError (nothing is silently scored as missed).
    Returns rows {"case", "label", metric: value, ...}; every case and label is a row, including
    those whose reference is empty (Dice 1 when the prediction is empty too).
    """
    if config.mode not in PROMPT_MODES:
        raise ConfigError(f"unknown prompt mode '{config.mode}' ({', '.join(PROMPT_MODES)})")
    rng = np.random.default_rng(config.seed)
    rows = []
    for s in samples:
        if s.image is None or s.mask is None:
            raise InputError(f"case {s.id}: needs an image and a reference mask for prompted evaluation")
        arr = s.image.array
        gt_all = s.mask.array[0] if s.mask.array.shape[0] == 1 else s.mask.array
        if gt_all.shape != arr.shape[1:]:
            raise InputError(
                f"case {s.id}: mask shape {gt_all.shape} differs from the image's {arr.shape[1:]}; "
                "prompts taken from the mask would not fall on the image"
            )
        for lab in labels:
            gt = gt_all == lab
            if prompts is not None:
                p = prompts.get((str(s.id), int(lab)))
                if p is None and gt.any():
                    raise InputError(f"case {s.id}: no prompt for label {lab} in the prompt file")
                pred = np.zeros(gt.shape, bool) if p is None else _fixed_prediction(model, arr, gt, p, config, s.image.modality)
            else:
                pred = _predict_label(model, arr, gt, config, rng, s.image.modality)
            m = binary_metrics(pred, gt, s.image.spacing, config.tolerance_mm)
            rows.append({"case": s.id, "label": int(lab), **m})
    return rows


def evaluate_prompted_cases(
    model: Any,
    samples: Sequence[Any],
    labels: Sequence[int],
    config: PromptEvalConfig,
    prompts: dict[tuple[str, int], FixedPrompt] | None = None,
    n_boot: int = 1000,
    progress: Any = None,
) -> SegEvalResult:
    """``evaluate_prompted`` plus the ``seg-eval`` summaries (per label and mean, bootstrap CIs
    over cases). ``progress``: optional wrapper ``f(iterable, total) -> iterable``."""
    if not samples:
        raise InputError("no cases to evaluate")
    if prompts is not None:
        check_prompts(prompts, samples)
    it = samples if progress is None else progress(samples, len(samples))
    rows = evaluate_prompted(model, it, labels, config, prompts)
    labels = tuple(int(v) for v in labels)
    notes = spacing_notes([s.id for s in samples if s.image.meta.get("spacing_known") is False])
    return SegEvalResult(rows, summarize_rows(rows, labels, n_boot, config.seed), labels, n_cases=len(samples), notes=notes)


# -- a whole run (``medfm seg-prompt-eval``) -------------------------------------------------


@dataclass
class SegPromptEvalConfig:
    """What ``seg-prompt-eval`` was asked (recorded in the results' provenance).

    prompt: a ``PROMPT_MODES`` entry, or None for the default (box for 2D data, propagate for 3D).
    """

    model: str
    dataset: str
    split: str = "test"
    prompt: str | None = None
    n_points: int = 1
    jitter: int = 5
    margin: float = 3.0
    seed: int = 0
    limit: int | None = None
    labels: tuple[int, ...] = ()
    prompts_file: str | None = None
    tolerance_mm: float = 1.0
    n_boot: int = 1000


@dataclass
class PromptEvalRun:
    result: SegEvalResult
    protocol: str
    model: str
    dataset: str
    split: str
    seconds: float
    out: Any = None


def run_prompt_eval(
    config: SegPromptEvalConfig,
    out: Any,
    force: bool = False,
    data_dir: Any = None,
    device: str = "cpu",
    progress: Any = None,
) -> PromptEvalRun:
    """Load the dataset split and the model, check them, evaluate with simulated (or given)
    prompts, and write ``cases.csv`` and ``results.json`` (one ``Record``) into ``out``.

    Bad input (no masks, unknown prompt mode, bad prompt file) is refused before ``out`` is made.
    """
    import time

    from medfm._paths import prepare_out_dir
    from medfm.data import load_dataset
    from medfm.models import create_model
    from medfm.results import write_results
    from medfm.tasks.segmentation.evaluate import to_records, write_case_csv
    from medfm.tasks.segmentation.train import infer_labels

    cfg = config
    if cfg.prompt is not None and cfg.prompt not in PROMPT_MODES:
        raise ConfigError(f"--prompt must be one of {', '.join(PROMPT_MODES)}, got '{cfg.prompt}'")
    if cfg.prompts_file is not None and cfg.prompt is not None:
        raise ConfigError("give either --prompt (simulated prompts) or --prompts FILE (fixed boxes), not both")
    fixed = read_prompt_file(cfg.prompts_file) if cfg.prompts_file is not None else None
    ds = load_dataset(cfg.dataset, data_dir)
    if ds.card.task != "segmentation":
        raise ConfigError(f"dataset {ds.card.name} is a {ds.card.task} dataset without masks; "
                          "seg-prompt-eval needs reference segmentation masks")
    part = ds.split(cfg.split)
    n = len(part) if cfg.limit is None else min(cfg.limit, len(part))
    samples = [part[i] for i in range(n)]
    if not samples:
        raise ConfigError(f"dataset {ds.card.name}: split '{cfg.split}' has no cases")
    ndim = samples[0].image.ndim if samples[0].image is not None else ds.card.ndim
    mode = cfg.prompt or ("propagate" if ndim == 3 else "box")
    if mode == "propagate" and ndim != 3:
        raise ConfigError("--prompt propagate needs 3D volumes; this dataset is 2D (use box or points)")
    labels = tuple(cfg.labels) or infer_labels(samples)
    if not labels:
        raise ConfigError(f"no foreground label in the masks of split '{cfg.split}'; pass --labels")
    if fixed is not None:
        check_prompts(fixed, samples)
    model = create_model(cfg.model, device=device)
    model.require("segmenter", "seg-prompt-eval")
    out_dir = prepare_out_dir(out, force=force)

    record_cfg = replace(cfg, dataset=ds.card.name, prompt="fixed" if fixed else mode, labels=labels)
    pcfg = PromptEvalConfig(mode=mode, max_shift=cfg.jitter, n_points=cfg.n_points, seed=cfg.seed,
                            tolerance_mm=cfg.tolerance_mm, margin=cfg.margin)
    t0 = time.perf_counter()
    res = evaluate_prompted_cases(model, samples, labels, pcfg, prompts=fixed, n_boot=cfg.n_boot, progress=progress)
    seconds = time.perf_counter() - t0
    protocol = "prompt-fixed-box" if fixed else (f"prompt-points{cfg.n_points}" if mode == "points" else f"prompt-{mode}")
    records = to_records(res, ds.card.name, cfg.split, model.card.id, protocol, record_cfg, data_checksum=ds.checksum(),
                         weights_hash=model.weights_hash, seconds=seconds, seed=cfg.seed)
    write_case_csv(res.rows, out_dir / "cases.csv")
    write_results(out_dir / "results.json", records, record_cfg)
    return PromptEvalRun(res, protocol, model.card.id, ds.card.name, cfg.split, seconds, out_dir)
