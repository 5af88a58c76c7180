"""MedMNIST .npz archives: ``{split}_images`` / ``{split}_labels`` for train, val and test."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from medfm.errors import InputError

MEDMNIST_SPLITS = ("train", "val", "test")


def read_medmnist_npz(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read a MedMNIST archive as {split: (images, labels)} for train, val and test.

    images: (N, H, W), (N, H, W, 3) or (N, D, H, W) uint8 as stored; labels: (N, K) as stored
    (K = 1 for single-label tasks). Raises InputError naming the file for a non-npz file,
    missing keys or image/label counts that differ.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npz archive ({type(exc).__name__}: {exc})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: is a single .npy array, not a MedMNIST .npz archive")
    with archive:
        keys = set(archive.files)
        needed = [f"{s}_{kind}" for s in MEDMNIST_SPLITS for kind in ("images", "labels")]
        missing = [k for k in needed if k not in keys]
        if missing:
            raise InputError(f"{path}: not a MedMNIST archive: missing {', '.join(missing)} (found: {', '.join(sorted(keys)) or 'nothing'})")
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for split in MEDMNIST_SPLITS:
            try:
                images, labels = archive[f"{split}_images"], archive[f"{split}_labels"]
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
                raise InputError(f"{path}: cannot read the {split} arrays ({type(exc).__name__}: {exc})") from exc
            if len(images) != len(labels):
                raise InputError(f"{path}: {split}_images has {len(images)} items but {split}_labels has {len(labels)}")
            if images.ndim not in (3, 4):
                raise InputError(f"{path}: {split}_images has shape {images.shape}; expected (N, H, W[, 3]) or (N, D, H, W)")
            out[split] = (images, labels)
    return out
