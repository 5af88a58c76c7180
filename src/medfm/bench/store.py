"""A results store across runs: SQLite, one row per record, with the run id and time.

Default location ``<MEDFM_HOME>/results.sqlite``; query it to compare runs over time.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from medfm import _paths
from medfm._config import from_dict, to_dict
from medfm.results import MetricValue, Record

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


def default_store_path() -> Path:
    return _paths.home() / "results.sqlite"


class ResultsStore:
    """Append-only record table shared by every run on this machine."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_store_path()
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
