"""Records: one row of results, written by every task family and read by every report.

``results.json`` = ``{"medfm_version": str, "spec": {...}, "completeness": {...}, "records": [Record, ...]}``.
``completeness`` (:class:`Completeness`) says how many results the run planned and how many it
wrote, so a killed or partial run never reads as a finished one; files written before it existed
have none ("completeness unknown"). ``record_sha256`` holds one checksum per record, so a number
edited by hand is found on read (``Results.problems``) rather than reported as medfm's. :func:`format_metric` is the one way a value and its CI print.
"""

from __future__ import annotations

import hashlib
import json
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfm import __version__
from medfm._config import from_dict, to_dict
from medfm._paths import atomic_write_text
from medfm._provenance import git_commit, git_dirty, versions, weights_info
from medfm.errors import InputError


def _finite(x: float | None) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def format_ci(ci_low: float | None, ci_high: float | None, digits: int = 3) -> str:
    """``[0.80, 0.93]``, or "" when either bound is missing or not finite."""
    if not (_finite(ci_low) and _finite(ci_high)):
        return ""
    return f"[{ci_low:.{digits}f}, {ci_high:.{digits}f}]"


def format_metric(
    value: float | None, ci_low: float | None = None, ci_high: float | None = None,
    digits: int = 3, ci_digits: int | None = None,
) -> str:
    """The one text form of a metric: ``0.871 [0.80, 0.93]`` (CI when known), ``n/a`` when undefined.

    >>> format_metric(0.8712, 0.8, 0.93, 3, 2), format_metric(float("nan"))
    ('0.871 [0.80, 0.93]', 'n/a')
    """
    if not _finite(value):
        return "n/a"
    ci = format_ci(ci_low, ci_high, digits if ci_digits is None else ci_digits)
    return f"{value:.{digits}f}" + (f" {ci}" if ci else "")


@dataclass(frozen=True)
class MetricValue:
    """A metric with its bootstrap confidence interval (``ci_*`` None when not computed).

    ``n``: cases it was computed over; ``n_undefined``: cases where the metric is undefined
    (e.g. HD95 with one empty mask), left out of ``value`` (None where not counted).
    """

    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    n_undefined: int | None = None

    def text(self, digits: int = 3, ci_digits: int | None = None) -> str:
        """``0.871 [0.80, 0.93]`` plus `` (2 undef.)`` when cases were undefined (:func:`format_metric`)."""
        undef = f" ({self.n_undefined} undef.)" if self.n_undefined else ""
        return format_metric(self.value, self.ci_low, self.ci_high, digits, ci_digits) + undef


@dataclass(frozen=True)
class Completeness:
    """How much of a run's plan its results file holds: ``expected`` results (bench: cells),
    ``written`` of them, and the labels of the ``missing`` ones."""

    expected: int
    written: int
    missing: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return self.written >= self.expected and not self.missing

    def text(self, max_missing: int = 5) -> str:
        """``8 of 8 results`` or ``INCOMPLETE: 3 of 8 results written; missing: a, b, ...``."""
        if self.complete:
            return f"complete: {self.written} of {self.expected} results"
        names = ", ".join(self.missing[:max_missing]) + (" ..." if len(self.missing) > max_missing else "")
        return f"INCOMPLETE: {self.written} of {self.expected} results written" + (f"; missing: {names}" if names else "")


UNKNOWN_COMPLETENESS = "completeness unknown (results file written without a record of how many results were planned)"


def completeness_text(c: Completeness | None) -> str:
    """What a report prints about ``c`` (None: a file from before completeness was recorded)."""
    return UNKNOWN_COMPLETENESS if c is None else c.text()


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
    """The provenance block every Record carries (with the weights' source and hub commit when
    the zoo built a model with ``weights_hash`` in this process)."""
    return {
        "config": to_dict(config),
        "versions": versions(),
        "data_checksum": data_checksum,
        "weights_hash": weights_hash,
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        **weights_info(weights_hash),
        **more,
    }


def record_digest(record: Record | dict[str, Any]) -> str:
    """sha256 of a record's canonical JSON (sorted keys): any edited number changes it."""
    doc = record if isinstance(record, dict) else to_dict(record)
    text = json.dumps(doc, sort_keys=True, allow_nan=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def write_results(
    path: str | Path, records: list[Record], spec: Any, completeness: Completeness | None = None,
    memo: dict[int, tuple[Record, str, str]] | None = None,
) -> Path:
    """Write ``results.json`` atomically (a crash never leaves a half-written file).

    ``completeness`` defaults to "every result the caller planned": ``len(records)`` of ``len(records)``.
    ``memo`` (a dict the caller keeps between writes, as the bench runner does after every cell)
    holds each record's JSON text and checksum, so rewriting a growing file costs the new
    records only; records must not be changed after they were written with a memo.
    """
    path = Path(path)
    if completeness is None:
        completeness = Completeness(len(records), len(records))
    memo = {} if memo is None else memo
    texts, sums = [], []
    for r in records:
        hit = memo.get(id(r))
        if hit is None or hit[0] is not r:
            row = to_dict(r)
            hit = memo[id(r)] = (r, json.dumps(row, indent=2, allow_nan=True), record_digest(row))
        texts.append(hit[1])
        sums.append(hit[2])
    if len(memo) > len(records):  # records replaced since the last write (a resumed cell): drop their text
        live = {id(r) for r in records}
        for k in [k for k in memo if k not in live]:
            del memo[k]
    head = {"medfm_version": __version__, "spec": to_dict(spec), "completeness": to_dict(completeness),
            "record_sha256": sums}
    atomic_write_text(path, _results_text(head, texts))
    return path


def _results_text(head: dict[str, Any], record_texts: list[str]) -> str:
    """``json.dumps({**head, "records": rows}, indent=2)``, spliced from each row's own indented
    text (json's indented encoder is pure Python: re-encoding every row on every write is slow)."""
    text = json.dumps({**head, "records": []}, indent=2, allow_nan=True)
    if not record_texts:
        return text
    tail = "[]\n}"
    assert text.endswith(tail), text[-40:]
    body = ",\n".join(textwrap.indent(t, "    ") for t in record_texts)
    return text[: -len(tail)] + "[\n" + body + "\n  ]\n}"


@dataclass
class Results:
    """A read ``results.json``: its spec, records, completeness (None: not recorded, old file),
    the indices of ``records`` changed since medfm wrote them and one line per such problem."""

    spec: dict[str, Any]
    records: list[Record]
    completeness: Completeness | None = None
    changed: tuple[int, ...] = ()
    problems: tuple[str, ...] = ()


def _changed_records(rows: list[Any], sums: Any) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Records whose checksum (``record_sha256``, written beside them) no longer matches."""
    if sums is None:
        return (), ()  # a file from before checksums were written: nothing to check against
    if not isinstance(sums, list) or len(sums) != len(rows):
        n = len(sums) if isinstance(sums, list) else 0
        return tuple(range(len(rows))), (f"records were added or removed after medfm wrote the file ({n} checksums for {len(rows)} records)",)
    changed = tuple(i for i, (row, h) in enumerate(zip(rows, sums, strict=True)) if record_digest(row) != h)
    problems = []
    for i in changed:
        r = rows[i] if isinstance(rows[i], dict) else {}
        what = " ".join(str(r.get(k)) for k in ("dataset", "model", "protocol", "shots", "seed"))
        problems.append(f"record {i} ({what}) was changed after medfm wrote it")
    return changed, tuple(problems)


def load_results(path: str | Path) -> Results:
    """Read ``results.json`` -> :class:`Results`; InputError naming the file when it is not one."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        records = [from_dict(Record, r, where=f"{path}:records[{i}]") for i, r in enumerate(doc["records"])]
        comp = doc.get("completeness")
        completeness = None if comp is None else from_dict(Completeness, comp, where=f"{path}:completeness")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: not a medfm results file ({exc})") from exc
    for r in records:
        r.metrics = {k: v if isinstance(v, MetricValue) else from_dict(MetricValue, v) for k, v in r.metrics.items()}
    spec = doc.get("spec", {})
    changed, problems = _changed_records(doc["records"], doc.get("record_sha256"))
    return Results(spec if isinstance(spec, dict) else {}, records, completeness, changed, problems)


def read_results(path: str | Path) -> tuple[dict[str, Any], list[Record]]:
    """Read ``results.json`` -> (spec dict, records); :func:`load_results` also gives completeness."""
    res = load_results(path)
    return res.spec, res.records
