"""Datasets: cards, registry, loaders, data location and checksummed download.

>>> from medfm.data import load_dataset                      # doctest: +SKIP
>>> ds = load_dataset("breastmnist")                          # doctest: +SKIP
>>> x = ds.split("train").images()     # (546, 1, 28, 28) uint8   doctest: +SKIP
>>> y = ds.split("train").labels       # (546,) int64              doctest: +SKIP

A folder path instead of a name loads a user dataset (see ``medfm.data.folder``).
Transforms (MONAI) live in ``medfm.data.transforms`` (imported on demand: it loads torch).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medfm.data.card import DatasetCard, FileEntry, Sample, SplitData
from medfm.data.dataset import Dataset
from medfm.data.registry import DATASETS, get_card, list_cards, register_card
from medfm.data.verify import verify, verify_all
from medfm.errors import InputError

__all__ = [
    "DATASETS", "Dataset", "DatasetCard", "FileEntry", "Sample", "SplitData",
    "get_card", "is_path_like", "list_cards", "load_dataset", "register_card", "verify", "verify_all",
]


def is_path_like(name: str | Path) -> bool:
    """True when ``name`` means a folder rather than a registered dataset name."""
    if isinstance(name, Path):
        return True
    if name in DATASETS:
        return False
    return os.sep in name or "/" in name or name.startswith((".", "~")) or Path(name).is_dir()


def load_dataset(name_or_path: str | Path, data_dir: str | Path | None = None, **options: Any) -> Dataset:
    """Open a registered dataset (downloading into the cache on first use when allowed) or a folder.

    ``data_dir``: ``--data-dir``; else ``MEDFM_DATA``; else ``~/.cache/medfm/data`` (downloads
    only go there). Unknown names raise ConfigError with the nearest name; missing files raise
    MissingDataError saying what to place where; a bad checksum raises ChecksumError.
    """
    from medfm.data import fetch
    from medfm.data.folder import load_folder
    from medfm.data.registry import load_splits

    if is_path_like(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_dir():
            raise InputError(f"{path}: dataset folder not found (and not a registered dataset name)")
        return load_folder(path, **options)
    card = get_card(str(name_or_path))
    located = fetch.locate(card, data_dir)
    return Dataset(card, located.root, load_splits(card, located, **options))
