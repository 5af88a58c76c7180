"""Records: one row of results, written by every task family and read by every report.

``results.json`` = ``{"medfm_version": str, "spec": {...}, "records": [Record, ...]}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfm import __version__
from medfm._config import from_dict, to_dict
from medfm._paths import atomic_write_text
from medfm._provenance import git_commit, versions
from medfm.errors import InputError


@dataclass(frozen=True)
class MetricValue:
    """A metric with its bootstrap confidence interval (``ci_*`` None when not computed)."""

    value: float
    ci_low: float | None = None
    ci_high: float | None = None


@dataclass
class Record:
    """One result: a (dataset, split, model, protocol, shots, seed) cell and its metrics.

    ``provenance`` holds at least ``config``, ``versions``, ``data_checksum``, ``weights_hash``
    and ``git_commit`` so that any number can be traced to what produced it. ``extra`` holds
    arrays a report may plot (ROC points, per-case scores), kept small.
    """

    dataset: str
    split: str
    model: str
    protocol: str
    metrics: dict[str, MetricValue]
    shots: int | None = None
    seed: int = 0
    n: int = 0
    seconds: float = 0.0
    provenance: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def key(self) -> tuple:
        return (self.dataset, self.split, self.model, self.protocol, self.shots, self.seed)


def make_provenance(
    config: Any, data_checksum: str | None = None, weights_hash: str | None = None, **more: Any
) -> dict[str, Any]:
    """The provenance block every Record carries."""
    return {
        "config": to_dict(config),
        "versions": versions(),
        "data_checksum": data_checksum,
        "weights_hash": weights_hash,
        "git_commit": git_commit(),
        **more,
    }


def write_results(path: str | Path, records: list[Record], spec: Any) -> Path:
    """Write ``results.json`` atomically (a crash never leaves a half-written file)."""
    path = Path(path)
    doc = {"medfm_version": __version__, "spec": to_dict(spec), "records": [to_dict(r) for r in records]}
    atomic_write_text(path, json.dumps(doc, indent=2, allow_nan=True))
    return path


def read_results(path: str | Path) -> tuple[dict[str, Any], list[Record]]:
    """Read ``results.json`` -> (spec dict, records)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        records = [from_dict(Record, r, where=f"{path}:records[{i}]") for i, r in enumerate(doc["records"])]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a medfm results file ({exc})") from exc
    for r in records:
        r.metrics = {k: v if isinstance(v, MetricValue) else from_dict(MetricValue, v) for k, v in r.metrics.items()}
    return doc.get("spec", {}), records
