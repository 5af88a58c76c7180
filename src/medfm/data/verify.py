"""``verify``: are a dataset's files present, intact (checksum) and readable, and how many per split?"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from medfm.data.dataset import Dataset, FileSplit
from medfm.errors import InputError, MedfmError


def _read_all(ds: Dataset, progress: bool) -> None:
    """Read every distinct file of a file-backed dataset once (mask checks included)."""
    from medfm._progress import track

    todo = []
    seen: set[tuple[str, ...]] = set()
    for name in ds.splits:
        split = ds.split(name)
        if not isinstance(split, FileSplit):
            continue
        for i, rec in enumerate(split.records):
            key = tuple(str(p) for p in rec.paths())
            if key not in seen:
                seen.add(key)
                todo.append((split, i))
    items = track(todo, desc=f"verify {ds.card.name}", unit="files", live=False) if progress else todo
    for split, i in items:
        try:
            split[i]
        except (MedfmError, ImportError, NameError, AttributeError, TypeError, AssertionError):
            raise  # named errors pass through; programming errors stay bugs
        except Exception as exc:  # a reader failed in a way it did not name: report the file
            rec = split.records[i]
            raise InputError(f"{rec.image}: unreadable ({type(exc).__name__}: {exc})") from exc


def verify(name: str | Path, data_dir: str | Path | None = None, read: bool = True,
           progress: bool = False, raise_errors: bool = False) -> dict[str, Any]:
    """Check one dataset without downloading anything.

    Returns {"name", "status": "ok" | "absent" | "failed", "root", "checksum_ok", "readable",
    "counts": {split: n}, "checksum", "seconds", "error"}, plus "expected_counts" and
    "counts_match" for cards that declare their split sizes. ``read`` reads every file of
    file-backed datasets (MedMNIST archives are checked through their checksum and array
    headers). With ``raise_errors`` a failure or absence raises its MedfmError instead.
    An unknown name always raises ConfigError.
    """
    from medfm.data import fetch
    from medfm.data.folder import load_folder
    from medfm.data.registry import get_card, load_splits

    start = time.perf_counter()
    result: dict[str, Any] = {"name": str(name), "status": "failed", "root": None, "checksum_ok": None,
                              "readable": None, "counts": {}, "checksum": None, "seconds": 0.0, "error": None}
    card = None
    if not isinstance(name, Path):
        from medfm.data import is_path_like

        if not is_path_like(name):
            card = get_card(name)
    try:
        if card is None:
            ds = load_folder(Path(name))
            result["name"] = ds.card.name
        else:
            if not fetch.present(card, data_dir):
                result["status"] = "absent"
                try:
                    fetch.locate(card, data_dir, download_missing=False)
                except MedfmError as exc:
                    result["error"] = str(exc)
                    if raise_errors:
                        raise
                return result
            try:
                located = fetch.locate(card, data_dir, download_missing=False)
            except MedfmError:
                result["checksum_ok"] = False
                raise
            result["checksum_ok"] = True if card.files else None
            ds = Dataset(card, located.root, load_splits(card, located))
        result["root"] = str(ds.root)
        counts = ds.counts()
        result["counts"] = counts
        expected = card.options.get("n_samples") if card is not None else None
        if expected:  # informative only: the checksum is what proves a file intact
            result["expected_counts"] = dict(expected)
            result["counts_match"] = dict(expected) == counts
        if read:
            _read_all(ds, progress)
        result["readable"] = True
        result["checksum"] = ds.checksum()
        result["status"] = "ok"
    except MedfmError as exc:
        if result["status"] == "absent":
            raise
        result["status"] = "failed"
        result["error"] = str(exc)
        if result["readable"] is None and result["checksum_ok"] is not False:
            result["readable"] = False
        if raise_errors:
            raise
    finally:
        result["seconds"] = round(time.perf_counter() - start, 3)
    return result


def verify_all(data_dir: str | Path | None = None, read: bool = True, progress: bool = False) -> list[dict[str, Any]]:
    """Verify every registered dataset whose files are present; the others are reported absent."""
    from medfm.data.registry import list_cards

    return [verify(card.name, data_dir, read=read, progress=progress) for card in list_cards()]
