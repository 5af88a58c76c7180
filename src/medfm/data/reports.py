"""Report datasets: an image folder plus a CSV of reports, and prediction/reference CSVs.

``reports.csv`` columns: ``id``, ``image`` (file name relative to the folder, or under
``images/``), ``report``; optional ``split`` (``train`` / ``val`` / ``test``). Prediction and
reference CSVs for scoring have ``id`` and ``report`` columns.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from medfm.errors import InputError, MissingDataError


@dataclass(frozen=True)
class ReportItem:
    """One image and its report."""

    id: str
    image: Path
    report: str
    split: str = ""


def read_report_csv(path: str | Path, require_image: bool = False) -> list[dict[str, str]]:
    """Rows of a report CSV with ``id`` and ``report`` (and ``image`` when ``require_image``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingDataError(f"{path}: report CSV not found")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = set(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read CSV ({exc})") from exc
    need = {"id", "report"} | ({"image"} if require_image else set())
    if not need <= fields:
        raise InputError(f"{path}: missing column(s) {sorted(need - fields)}; has {sorted(fields)}")
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InputError(f"{path}: id {dup!r} appears more than once")
    if not rows:
        raise InputError(f"{path}: no rows")
    return rows


def load_report_folder(folder: str | Path, csv_name: str = "reports.csv") -> list[ReportItem]:
    """Read ``folder/reports.csv``; every image must exist (``folder/IMAGE`` or ``folder/images/IMAGE``)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise MissingDataError(f"{folder}: report dataset folder not found")
    table = folder / csv_name
    items = []
    for i, r in enumerate(read_report_csv(table, require_image=True)):
        cands = [folder / r["image"], folder / "images" / r["image"]]
        image = next((c for c in cands if c.is_file()), None)
        if image is None:
            raise InputError(f"{table}: row {i + 1} (id {r['id']}) names image {r['image']!r}, not found in {folder}")
        items.append(ReportItem(id=r["id"], image=image, report=r["report"], split=(r.get("split") or "").strip()))
    return items


def paired_reports(pred_csv: str | Path, ref_csv: str | Path) -> tuple[list[str], list[str], list[str]]:
    """(ids, predictions, references) joined on ``id``; every reference needs a prediction."""
    preds = {r["id"]: r["report"] for r in read_report_csv(pred_csv)}
    refs = read_report_csv(ref_csv)
    missing = [r["id"] for r in refs if r["id"] not in preds]
    if missing:
        raise InputError(f"{pred_csv}: no prediction for {len(missing)} reference id(s), e.g. {missing[0]!r}")
    ids = [r["id"] for r in refs]
    return ids, [preds[i] for i in ids], [r["report"] for r in refs]
