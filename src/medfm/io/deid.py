"""DICOM de-identification: PS3.15 Basic Application Level Confidentiality Profile.

Two maintained libraries do the work: ``dicognito`` replaces names, IDs, addresses, dates
(shifted by one offset per session, keeping intervals) and every instance UID with
pseudonyms drawn from one seeded randomiser, so a UID maps to the same new UID in every
dataset of a session (studies, series and references stay consistent). The profile's
attribute table (PS3.15 Table E.1-1, as shipped by ``dicom-anonymizer``) is then applied
to whatever dicognito left unchanged: X attributes removed, Z emptied, D given a dummy,
private attributes removed. Pixel data is never touched. An :class:`AuditEntry` lists
which attributes were removed / replaced / emptied, never their values.

Example::

    deid = Deidentifier()
    entry = deid.deidentify(ds)          # ds is changed in place
    report = deidentify_folder("in/", "out/")
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medfm.errors import InputError, OutputError

PROFILE = "DICOM PS3.15 Basic Application Level Confidentiality Profile"
TABLE_VERSION = "dicomfields_2026c"
# DICOM CID 7050 codes written into DeidentificationMethodCodeSequence
_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
)
# file-meta attributes that name the sending / receiving station
_META_DROP = (0x00020016, 0x00020017, 0x00020018)
_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}


def _pydicom() -> Any:
    from medfm._optional import optional_import

    return optional_import("pydicom")


@dataclass(frozen=True)
class ProfileTable:
    """PS3.15 Table E.1-1 as action sets: tag (int) -> action code ('X', 'Z', 'D', 'U', 'X/Z', ...).

    ``masked`` holds repeating-group rows (overlays, curves) as (tag, mask, action).
    """

    actions: dict[int, str]
    masked: tuple[tuple[int, int, str], ...]

    def action(self, tag: int) -> str | None:
        """Action code for ``tag``, or None when the profile keeps it."""
        a = self.actions.get(tag)
        if a is not None:
            return a
        for value, mask, act in self.masked:
            if tag & mask == value:
                return act
        return None


_TABLE: ProfileTable | None = None


def profile_table() -> ProfileTable:
    """The profile's attribute table (loaded once from dicom-anonymizer's database)."""
    global _TABLE
    if _TABLE is None:
        import importlib

        from medfm._optional import optional_import

        optional_import("dicomanonymizer")
        mod = importlib.import_module(f"dicomanonymizer.dicom_anonymization_databases.{TABLE_VERSION}")
        names = {"X_TAGS": "X", "Z_TAGS": "Z", "D_TAGS": "D", "U_TAGS": "U", "Z_D_TAGS": "Z/D",
                 "X_Z_TAGS": "X/Z", "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*"}
        actions: dict[int, str] = {}
        masked: list[tuple[int, int, str]] = []
        for attr, code in names.items():
            for row in getattr(mod, attr):
                tag = (row[0] << 16) | row[1]
                if len(row) == 4:
                    mask = (row[2] << 16) | row[3]
                    masked.append((tag & mask, mask, code))
                else:
                    actions[tag] = code
        _TABLE = ProfileTable(actions, tuple(masked))
    return _TABLE


@dataclass
class AuditEntry:
    """What de-identification did to one dataset: attribute keywords (or tags), never values."""

    sop_class_uid: str = ""
    removed: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    emptied: list[str] = field(default_factory=list)
    private_removed: int = 0
    burned_in_annotation: bool = False
    source_sha256: str = ""
    output: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _name(tag: int) -> str:
    kw = _pydicom().datadict.keyword_for_tag(tag)
    return kw or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _snapshot(ds: Any) -> dict[int, Any]:
    """Values of every element (sequences recursively), pixel data excluded, to diff against."""
    out: dict[int, Any] = {}
    for el in ds:
        if el.tag in _PIXEL_TAGS:
            continue
        if el.VR == "SQ":
            out[el.tag] = [_snapshot(item) for item in (el.value or [])]
        else:
            v = el.value
            out[el.tag] = list(v) if isinstance(v, list | tuple) or type(v).__name__ == "MultiValue" else v
    return out


def _same(before: Any, after: Any) -> bool:
    if type(after).__name__ == "MultiValue":
        after = list(after)
    try:
        return bool(before == after)
    except Exception:  # noqa: BLE001 - incomparable values count as changed
        return False


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == b"" or (isinstance(value, list) and not value)


_DUMMY = {"DA": "19000101", "TM": "000000", "DT": "19000101000000", "PN": "ANONYMOUS", "UI": "",
          "AS": "000Y", "CS": "ANON", "AE": "ANON"}


def _dummy(vr: str) -> Any:
    if vr in _DUMMY:
        return _DUMMY[vr]
    if vr in ("US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "IS", "DS", "AT"):
        return 0 if vr not in ("IS", "DS") else "0"
    if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        return b""
    return "ANONYMIZED"


class Deidentifier:
    """Applies the Basic Profile; one instance keeps one UID / ID / date mapping for a session.

    Reuse the same instance for every dataset of a study (or of several studies that must stay
    linked). ``seed`` (a secret) makes the mapping reproducible across processes: the same seed
    maps the same UID to the same pseudonym; without it a random seed is drawn.
    """

    def __init__(self, seed: str | None = None) -> None:
        from medfm._optional import optional_import

        optional_import("dicognito")
        from dicognito.anonymizer import Anonymizer

        self.seed = seed or secrets.token_hex(16)
        self._anonymizer = Anonymizer(seed=self.seed)
        self.table = profile_table()

    def deidentify(self, ds: Any) -> AuditEntry:
        """De-identify ``ds`` (a pydicom Dataset) in place; returns what was removed/replaced/emptied."""
        pydicom = _pydicom()
        entry = AuditEntry(sop_class_uid=str(getattr(ds, "SOPClassUID", "")))
        entry.burned_in_annotation = str(ds.get("BurnedInAnnotation", "")).upper() == "YES"
        meta = getattr(ds, "file_meta", None)
        if meta is None:
            ds.file_meta = meta = pydicom.dataset.FileMetaDataset()
        pixel_bytes = ds.PixelData if "PixelData" in ds else None
        before = _snapshot(ds)
        meta_before = _snapshot(meta)

        n_private = sum(1 for _ in _iter_private(ds))
        ds.remove_private_tags()  # profile: private attributes are removed (no retain option)
        entry.private_removed = n_private
        for tag in _META_DROP:
            if tag in meta:
                del meta[tag]
                entry.removed.append(_name(tag))
        self._anonymizer.anonymize(ds)
        self._apply_table(ds, before, entry)
        self._apply_table(meta, meta_before, entry)
        self._mark(ds)
        if pixel_bytes is not None and ds.PixelData is not pixel_bytes and ds.PixelData != pixel_bytes:
            raise InputError("de-identification changed pixel data (a bug in the profile pass)")
        for lst in (entry.removed, entry.replaced, entry.emptied):
            lst[:] = sorted(set(lst))
        return entry

    def _apply_table(self, ds: Any, before: dict[int, Any], entry: AuditEntry) -> None:
        for el in list(ds):
            tag = int(el.tag)
            if tag in _PIXEL_TAGS or tag not in ds:
                continue
            action = self.table.action(tag)
            old = before.get(tag)
            if el.VR == "SQ":
                if action is not None and action.startswith("X") and action != "X/Z/U*":
                    del ds[tag]
                    entry.removed.append(_name(tag))
                    continue
                if action == "Z":  # zero-length: a sequence with no items
                    if el.value:
                        el.value = []
                        entry.emptied.append(_name(tag))
                    continue
                olds = old if isinstance(old, list) else []
                for i, item in enumerate(el.value or []):
                    self._apply_table(item, olds[i] if i < len(olds) else {}, entry)
                continue
            changed = tag not in before or not _same(old, el.value)
            if action is None:
                if tag in before and not _same(old, el.value):
                    entry.replaced.append(_name(tag))
                continue
            if action == "X" or (action.startswith("X") and not changed and action != "X/Z/U*"):
                del ds[tag]
                entry.removed.append(_name(tag))
            elif changed:
                entry.replaced.append(_name(tag))
            elif _empty(el.value) or action in ("U", "X/Z/U*"):
                continue  # empty already, or a class UID that identifies nothing
            elif "Z" in action:
                el.value = None
                entry.emptied.append(_name(tag))
            else:  # D: a dummy of the same VR
                el.value = _dummy(el.VR)
                entry.replaced.append(_name(tag))

    @staticmethod
    def _mark(ds: Any) -> None:
        pydicom = _pydicom()
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "Basic Application Confidentiality Profile (medfm, dicognito)"
        seq = []
        for value, meaning in _CODES:
            item = pydicom.dataset.Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            seq.append(item)
        ds.DeidentificationMethodCodeSequence = seq


def _iter_private(ds: Any) -> Iterable[Any]:
    for el in ds:
        if el.tag.is_private:
            yield el
        elif el.VR == "SQ":
            for item in el.value or []:
                yield from _iter_private(item)


def read_dicom_dataset(path: str | Path) -> Any:
    """Read one DICOM file whole, or raise InputError naming it (not DICOM, truncated)."""
    pydicom = _pydicom()
    p = Path(path)
    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(p)
            if "PixelData" in ds:
                _ = ds.PixelData  # force reading the value: a truncated file fails here
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, pydicom.errors.InvalidDicomError):
            msg = "no DICOM header: the 'DICM' prefix is missing"
        raise InputError(f"{p}: not a readable DICOM file ({msg})") from exc
    if any("End of file reached" in str(w.message) for w in caught):
        raise InputError(f"{p}: truncated DICOM file (ends inside the pixel data)")
    if not ds.get("SOPInstanceUID"):
        raise InputError(f"{p}: not a DICOM instance (no SOPInstanceUID)")
    check_complete(ds, str(p))
    return ds


def check_complete(ds: Any, where: str) -> None:
    """Raise InputError when uncompressed pixel data is shorter than rows x columns x frames needs."""
    if "PixelData" not in ds or ds.file_meta.get("TransferSyntaxUID") is None:
        return
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return
    try:
        n = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.get("NumberOfFrames", 1) or 1)
        need = (n * int(ds.BitsAllocated) + 7) // 8
    except (AttributeError, TypeError, ValueError):
        return
    if len(ds.PixelData) < need:
        raise InputError(f"{where}: truncated DICOM file ({len(ds.PixelData)} of {need} pixel bytes)")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_out(inp: Path, out: Path, force: bool) -> None:
    ri, ro = inp.resolve(), out.resolve()
    if ro == ri or (inp.is_dir() and ri in ro.parents):
        raise OutputError(f"{out}: the output may not be the input or inside it ({inp})")
    if inp.is_file() and ro == ri.parent:
        raise OutputError(f"{out}: the output may not be the input's own folder")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputError(f"{out}: exists and is not empty (use --force to write into it)")


def write_dataset(ds: Any, path: Path) -> None:
    """Write ``ds`` to ``path`` atomically (temporary file, fsync, rename, folder fsync): never a half file."""
    from medfm._paths import atomic_path

    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def deidentify_folder(
    inp: str | Path,
    out: str | Path,
    *,
    deidentifier: Deidentifier | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """De-identify a DICOM file or every DICOM file under a folder into ``out``.

    Output files are named ``out/<new SeriesInstanceUID>/<new SOPInstanceUID>.dcm`` (input
    names may hold patient names). Never writes into the input; refuses a non-empty ``out``
    unless ``force``. Non-DICOM files inside a folder are skipped and counted; a single
    non-DICOM input file is refused. Returns the audit record (also written to
    ``out/deid_audit.json``).
    """
    inp, out = Path(inp), Path(out)
    if not inp.exists():
        raise InputError(f"{inp}: no such file or folder")
    _check_out(inp, out, force)
    files = [inp] if inp.is_file() else sorted(p for p in inp.rglob("*") if p.is_file())
    deid = deidentifier or Deidentifier()
    entries: list[dict[str, Any]] = []
    skipped = failed = 0
    written: set[str] = set()
    for p in files:
        try:
            ds = read_dicom_dataset(p)
        except InputError:
            if inp.is_file():
                raise
            skipped += 1
            continue
        try:
            entry = deid.deidentify(ds)
        except Exception as exc:  # noqa: BLE001 - a value dicognito cannot handle: that file is not exported
            if inp.is_file():
                raise InputError(f"{p}: cannot de-identify ({type(exc).__name__}: {str(exc)[:120]})") from exc
            failed += 1
            continue
        rel = Path(str(ds.get("SeriesInstanceUID", "") or "no-series")) / f"{ds.SOPInstanceUID}.dcm"
        n = 2
        while str(rel) in written:  # two inputs with one SOP instance UID (copies, re-encodings): keep both
            rel = rel.with_name(f"{ds.SOPInstanceUID}_{n}.dcm")
            n += 1
        written.add(str(rel))
        write_dataset(ds, out / rel)
        entry.source_sha256, entry.output = _sha256(p), str(rel)
        entries.append(entry.to_dict())
        if progress:
            progress(str(rel))
    if not entries:
        raise InputError(f"{inp}: no DICOM files found ({skipped} other files)")
    import dicognito

    from medfm import __version__

    audit = {
        "profile": PROFILE,
        "options": [c[1] for c in _CODES[1:]],
        "table": f"dicom-anonymizer {TABLE_VERSION} (PS3.15 Table E.1-1)",
        "versions": {"medfm": __version__, "dicognito": dicognito.__version__, "pydicom": _pydicom().__version__},
        "n_files": len(entries),
        "n_skipped_not_dicom": skipped,
        "n_failed": failed,
        "entries": entries,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "deid_audit.json").write_text(json.dumps(audit, indent=1))
    return audit
