"""Unlabelled image arrays for pretraining: from a registered dataset split or a folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfm.errors import ConfigError, InputError


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    import torch

    from medfm.tasks.pretrain.trainer import resize_to

    return resize_to(torch.from_numpy(a.astype(np.float32))[None], size)[0].numpy()


def _unit(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def folder_images(folder: str | Path, image_size: int | None = None) -> np.ndarray:
    """Every readable image under ``folder`` -> (N, C, H, W) or (N, C, D, H, W).

    uint8 images stay uint8 when they all share one shape; otherwise each is scaled to [0, 1]
    (float32) and resized to ``image_size`` (required when shapes differ). Mixed 2D/3D inputs
    and folders without a readable image are errors.
    """
    from medfm.io import read_image

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: folder not found")
    arrays: list[np.ndarray] = []
    names: list[str] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() in {".csv", ".json", ".txt", ".md", ".yaml", ".yml"}:
            continue
        try:
            img = read_image(path)
        except Exception:  # noqa: BLE001 - unreadable files are skipped, counted below
            continue
        arrays.append(img.array)
        names.append(str(path))
    if not arrays:
        raise InputError(f"{folder}: no readable image found (PNG, JPEG, TIFF, NIfTI or DICOM)")
    dims = {a.ndim for a in arrays}
    if len(dims) > 1:
        two = next(n for n, a in zip(names, arrays, strict=True) if a.ndim == 3)
        three = next(n for n, a in zip(names, arrays, strict=True) if a.ndim == 4)
        raise InputError(f"{folder}: mixed 2D and 3D images (e.g. {two} and {three}); pretrain on one kind at a time")
    chans = {a.shape[0] for a in arrays}
    if len(chans) > 1:
        raise InputError(f"{folder}: images have different channel counts {sorted(chans)}")
    shapes = {a.shape for a in arrays}
    if len(shapes) == 1 and image_size is None:
        return np.stack(arrays)
    if image_size is None:
        raise ConfigError(f"{folder}: images have {len(shapes)} different sizes; pass --image-size to resize them")
    return np.stack([_resize(_unit(a), image_size) for a in arrays])


def dataset_images(name: str, split: str = "train", data_dir: str | Path | None = None) -> np.ndarray:
    """Images of one split of a registered dataset (labels are not read)."""
    from medfm.data import load_dataset

    ds = load_dataset(name, data_dir=data_dir)
    if split not in ds.splits:
        raise ConfigError(f"dataset '{name}' has no split '{split}' (splits: {', '.join(ds.splits)})")
    part = ds.split(split)
    stacked = part.images()
    if stacked is not None:
        return stacked
    arrays = [s.image.array for s in part if s.image is not None]
    if not arrays or len({a.shape for a in arrays}) != 1:
        raise InputError(f"dataset '{name}' split '{split}': images missing or of different sizes; use --folder with --image-size")
    return np.stack(arrays)
