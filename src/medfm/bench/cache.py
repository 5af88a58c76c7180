"""Per-cell result cache: one JSON file per finished cell, keyed by ``Cell.cache_key``.

The key hashes (cell config, data checksum, weights hash, medfm version), so an identical
cell on the same data and weights is never computed twice, across runs and output folders.
Files are written atomically: a run killed mid-write leaves no half entry.

An entry is ``{"key": <its own key>, "sha256": <checksum of the record>, "record": {...}}`` and
is checked on read: an entry whose key is not the one asked for (another cell's record copied
there), whose record no longer matches its checksum (an edited number), or that is not an entry
at all, is never returned. It is reported as a :class:`BadEntry` and the cell is recomputed
(and the entry rewritten): the cache only saves time, so recomputing gives the right number at
the cost of minutes, while refusing would stop the whole run over a file the user cannot mend.

The root is a folder or an fsspec URL (``s3://bucket/cells``, ``gs://``, ``file://``, a shared
mount), so the workers of a cluster share one cache (see :mod:`medfm.bench.storage`); default
``MEDFM_CELL_CACHE`` or ``<MEDFM_HOME>/cells``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfm import _paths
from medfm._config import from_dict, to_dict
from medfm.bench.storage import Folder
from medfm.errors import MedfmError
from medfm.results import MetricValue, Record, record_digest

FORMAT = 2  # entry layout version; older entries (a bare record) are recomputed


def default_cache_dir() -> str | Path:
    """``MEDFM_CELL_CACHE`` (a folder or a URL such as ``s3://bucket/cells``), else ``<MEDFM_HOME>/cells``."""
    return os.environ.get("MEDFM_CELL_CACHE") or _paths.home() / "cells"


@dataclass(frozen=True)
class BadEntry:
    """A cache file that failed its checks: where, and why (one line)."""

    path: Path | str
    problem: str

    def message(self) -> str:
        return f"cell cache entry {self.path}: {self.problem}; recomputing the cell"


class CellCache:
    """Record store ``<root>/<key[:2]>/<key>.json`` (root: a folder or an fsspec URL), each entry
    carrying its key and checksum."""

    def __init__(self, root: str | Path | None = None, storage_options: dict[str, Any] | None = None) -> None:
        self.folder = Folder(root if root is not None else default_cache_dir(), storage_options)
        self.root: Path | str = self.folder.local if self.folder.local is not None else str(self.folder.url)

    @staticmethod
    def _rel(key: str) -> str:
        return f"{key[:2]}/{key}.json"

    def _path(self, key: str) -> Path | str:
        return self.folder.where(self._rel(key))

    def lookup(self, key: str) -> tuple[Record | None, BadEntry | None]:
        """(record, None) for a valid entry; (None, None) when absent; (None, BadEntry) when the
        file exists but fails a check (then the caller recomputes the cell)."""
        path = self._path(key)
        try:
            raw = self.folder.read(self._rel(key))
            if raw is None:
                return None, None
            doc = json.loads(raw)
        except (OSError, ValueError) as exc:
            return None, BadEntry(path, f"not readable JSON ({exc})")
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or not {"key", "sha256", "record"} <= set(doc):
            return None, BadEntry(path, "not a checked cache entry (older medfm, or not written by medfm)")
        if doc["key"] != key:
            return None, BadEntry(path, f"holds the entry of another cell (key {str(doc['key'])[:12]}...)")
        if not isinstance(doc["record"], dict) or record_digest(doc["record"]) != doc["sha256"]:
            return None, BadEntry(path, "record does not match its checksum (edited after it was written)")
        try:
            rec = from_dict(Record, doc["record"], where=str(path))
            rec.metrics = {k: v if isinstance(v, MetricValue) else from_dict(MetricValue, v) for k, v in rec.metrics.items()}
        except (ValueError, TypeError, KeyError, AttributeError, MedfmError) as exc:
            return None, BadEntry(path, f"not a record ({exc})")
        if rec.provenance.get("cell_key", key) != key:
            return None, BadEntry(path, "record names another cell key in its provenance")
        return rec, None

    def get(self, key: str) -> Record | None:
        """The cached record, or None when absent or failing a check (see :meth:`lookup`)."""
        return self.lookup(key)[0]

    def put(self, key: str, record: Record) -> None:
        """Write the entry for ``key`` atomically, with the record's checksum."""
        doc = to_dict(record)
        entry = {"format": FORMAT, "key": key, "sha256": record_digest(doc), "record": doc}
        self.folder.write(self._rel(key), json.dumps(entry, allow_nan=True).encode())

    def __contains__(self, key: str) -> bool:
        return self.lookup(key)[0] is not None
