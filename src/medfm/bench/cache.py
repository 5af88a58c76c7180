"""Per-cell result cache: one JSON file per finished cell, keyed by ``Cell.cache_key``.

The key hashes (cell config, data checksum, weights hash, medfm version), so an identical
cell on the same data and weights is never computed twice, across runs and output folders.
Files are written atomically: a run killed mid-write leaves no half entry.
"""

from __future__ import annotations

import json
from pathlib import Path

from medfm import _paths
from medfm._config import from_dict, to_dict
from medfm.errors import MedfmError
from medfm.results import MetricValue, Record


def default_cache_dir() -> Path:
    return _paths.home() / "cells"


class CellCache:
    """Record store on disk: ``<root>/<key[:2]>/<key>.json``."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Record | None:
        """The cached record, or None when absent or unreadable (then it is recomputed)."""
        path = self._path(key)
        try:
            doc = json.loads(path.read_text())
            rec = from_dict(Record, doc, where=str(path))
        except (OSError, ValueError, TypeError, KeyError, MedfmError):  # a bad entry is a miss: recompute
            return None
        rec.metrics = {k: v if isinstance(v, MetricValue) else from_dict(MetricValue, v) for k, v in rec.metrics.items()}
        return rec

    def put(self, key: str, record: Record) -> None:
        _paths.atomic_write_text(self._path(key), json.dumps(to_dict(record), allow_nan=True))

    def __contains__(self, key: str) -> bool:
        return self._path(key).is_file()
