"""A results store across runs: one row per record, with the run id and time.

A path is a SQLite file (default ``MEDFM_STORE`` or ``<MEDFM_HOME>/results.sqlite``); an fsspec
URL (``s3://bucket/results``, ``gs://``, ``file://`` on a shared mount, ``memory://``) is a
folder with one JSON object per (run, cell), written whole by one PUT (or a rename) and carrying
its record's checksum, so several drivers may add to it at once and a cell added twice in one run
is one record. Query either to compare runs over time.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
import warnings
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote, unquote

from medfm import _paths
from medfm._config import from_dict, to_dict
from medfm.bench.storage import Folder, as_location, is_url
from medfm.results import MetricValue, Record, record_digest

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    run_id TEXT NOT NULL,
    time REAL NOT NULL,
    out_dir TEXT,
    dataset TEXT NOT NULL,
    split TEXT NOT NULL,
    model TEXT NOT NULL,
    protocol TEXT NOT NULL,
    shots INTEGER,
    seed INTEGER NOT NULL,
    n INTEGER,
    seconds REAL,
    cell_key TEXT,
    metrics TEXT NOT NULL,
    provenance TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_cell ON records (dataset, model, protocol, shots);
"""


def default_store_path() -> str | Path:
    """``MEDFM_STORE`` (a SQLite path or a URL), else ``<MEDFM_HOME>/results.sqlite``."""
    return os.environ.get("MEDFM_STORE") or _paths.home() / "results.sqlite"


class ResultsStore:
    """Append-only record table shared by every run on this machine (SQLite), or by every
    machine that reaches the URL (one object per record; see the module docstring)."""

    def __new__(cls, path: str | Path | None = None, storage_options: dict[str, Any] | None = None) -> Self:
        where = as_location(path if path is not None else default_store_path())
        if cls is ResultsStore and is_url(where):
            return super().__new__(ObjectResultsStore)  # type: ignore[return-value]
        return super().__new__(cls)

    def __init__(self, path: str | Path | None = None, storage_options: dict[str, Any] | None = None) -> None:
        self.path = Path(path) if path is not None else Path(default_store_path())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def add(self, run_id: str, records: list[Record], out_dir: str | Path | None = None, when: float | None = None) -> None:
        """Insert (or replace, for the same run and cell) ``records``."""
        when = time.time() if when is None else when
        rows = [
            (
                run_id, when, str(out_dir) if out_dir else None, r.dataset, r.split, r.model, r.protocol,
                r.shots, r.seed, r.n, r.seconds, r.provenance.get("cell_key"),
                json.dumps(to_dict(r.metrics)), json.dumps(to_dict(r.provenance), default=str),
            )
            for r in records
        ]
        with self._connect() as con:
            # ``shots IS ?`` matches NULL (all images) too, so a re-added cell replaces its row.
            con.executemany(
                "DELETE FROM records WHERE run_id = ? AND dataset = ? AND split = ? AND model = ? "
                "AND protocol = ? AND shots IS ? AND seed = ?",
                [(run_id, *r.key()) for r in records],
            )
            con.executemany("INSERT INTO records VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)

    def records(self, run_id: str | None = None, dataset: str | None = None, model: str | None = None) -> list[Record]:
        """Records, oldest first, optionally filtered by run, dataset or model."""
        where, args = [], []
        for col, val in (("run_id", run_id), ("dataset", dataset), ("model", model)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        sql = "SELECT dataset, split, model, protocol, shots, seed, n, seconds, metrics, provenance, run_id FROM records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time, rowid"
        with self._connect() as con:
            rows = con.execute(sql, args).fetchall()
        out = []
        for ds, split, mdl, proto, shots, seed, n, secs, metrics, prov, rid in rows:
            rec = Record(
                dataset=ds, split=split, model=mdl, protocol=proto, shots=shots, seed=seed, n=n, seconds=secs,
                metrics={k: from_dict(MetricValue, v) for k, v in json.loads(metrics).items()},
                provenance={**json.loads(prov), "run_id": rid},
            )
            out.append(rec)
        return out

    def runs(self) -> list[tuple[str, float, int]]:
        """(run_id, start time, number of records), oldest first."""
        with self._connect() as con:
            return con.execute(
                "SELECT run_id, MIN(time), COUNT(*) FROM records GROUP BY run_id ORDER BY MIN(time)"
            ).fetchall()


_ENTRY_FORMAT = 1


class ObjectResultsStore(ResultsStore):
    """The results store on an fsspec URL: ``<url>/records/<run_id>/<cell digest>.json``.

    Each object is ``{"format", "run_id", "time", "seq", "out_dir", "sha256", "record"}``; the
    name is the hash of the record's cell key, so re-adding a cell in a run replaces its object.
    An object that fails its checksum is left out of :meth:`records` and listed in ``problems``.
    """

    def __init__(self, path: str | Path | None = None, storage_options: dict[str, Any] | None = None) -> None:
        self.folder = Folder(as_location(path if path is not None else default_store_path()), storage_options)
        self.path = str(self.folder)  # type: ignore[assignment]
        self.folder.ensure()
        self.problems: list[str] = []

    @staticmethod
    def _rel(run_id: str, rec: Record) -> str:
        digest = hashlib.sha256(json.dumps(list(rec.key()), default=str).encode()).hexdigest()[:32]
        return f"records/{quote(run_id, safe='')}/{digest}.json"

    def add(self, run_id: str, records: list[Record], out_dir: str | Path | None = None, when: float | None = None) -> None:
        """Write one object per record (replacing the same run's object for that cell)."""
        when = time.time() if when is None else when
        for seq, r in enumerate(records):
            doc = to_dict(r)
            entry = {"format": _ENTRY_FORMAT, "run_id": run_id, "time": when, "seq": seq,
                     "out_dir": str(out_dir) if out_dir else None, "sha256": record_digest(doc), "record": doc}
            self.folder.write(self._rel(run_id, r), json.dumps(entry, default=str, allow_nan=True).encode())

    def _entries(self, run_id: str | None = None) -> list[dict[str, Any]]:
        prefix = f"records/{quote(run_id, safe='')}/" if run_id is not None else "records/"
        names = [n for n in self.folder.list(prefix) if n.endswith(".json")]
        out, self.problems = [], []
        for name, raw in self.folder.read_many(names).items():
            where = self.folder.where(name)
            try:
                doc = json.loads(raw) if raw is not None else None
            except ValueError:
                doc = None
            if not isinstance(doc, dict) or doc.get("format") != _ENTRY_FORMAT or not isinstance(doc.get("record"), dict):
                self.problems.append(f"{where}: not a results-store entry")
            elif record_digest(doc["record"]) != doc.get("sha256"):
                self.problems.append(f"{where}: record does not match its checksum")
            elif unquote(name.split("/")[1]) != doc.get("run_id"):
                self.problems.append(f"{where}: names run {doc.get('run_id')!r} outside its run folder")
            else:
                out.append({**doc, "_name": name})
        for p in self.problems:
            warnings.warn(f"results store entry {p}; left out", stacklevel=3)
        out.sort(key=lambda d: (float(d.get("time") or 0), int(d.get("seq") or 0), d["_name"]))
        return out

    def records(self, run_id: str | None = None, dataset: str | None = None, model: str | None = None) -> list[Record]:
        """Records, oldest first, optionally filtered by run, dataset or model."""
        out = []
        for doc in self._entries(run_id):
            rec = from_dict(Record, doc["record"], where=self.folder.where(doc["_name"]))
            rec.metrics = {k: v if isinstance(v, MetricValue) else from_dict(MetricValue, v) for k, v in rec.metrics.items()}
            if (dataset is None or rec.dataset == dataset) and (model is None or rec.model == model):
                rec.provenance = {**rec.provenance, "run_id": doc["run_id"]}
                out.append(rec)
        return out

    def runs(self) -> list[tuple[str, float, int]]:
        """(run_id, start time, number of records), oldest first."""
        agg: dict[str, list[float]] = {}
        for doc in self._entries():
            agg.setdefault(doc["run_id"], []).append(float(doc["time"]))
        return sorted(((rid, min(ts), len(ts)) for rid, ts in agg.items()), key=lambda x: x[1])
