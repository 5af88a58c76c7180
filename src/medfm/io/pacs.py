"""Talk to a PACS: DICOMweb (QIDO-RS search, WADO-RS retrieve, STOW-RS store) with ``dicomweb-client``
and DIMSE (C-ECHO, C-FIND, C-GET, C-MOVE, C-STORE) with ``pynetdicom``.

Every call has a bounded timeout; a PACS that is down, answers an HTTP error or refuses an association
raises :class:`PacsError` (one line naming the address and the problem). Retrieved series are written
into a hidden staging folder and moved into place only when complete, so a failure leaves nothing half-stored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from medfm.errors import InputError, MedfmError, OutputError

DEFAULT_TIMEOUT = 30.0
DEFAULT_CALLING_AET = "MEDFM"
# pynetdicom logs refused associations at ERROR; the caller gets a PacsError instead (one line, no log noise).
logging.getLogger("pynetdicom").addHandler(logging.NullHandler())
logging.getLogger("pynetdicom").propagate = False


class PacsError(MedfmError):
    """The PACS could not be reached, refused the request or answered an error (names the address)."""


# ---------------------------------------------------------------------------------------------
# Addresses
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DicomWebLocation:
    """A DICOMweb root (``http(s)://host:port/dicom-web``) and optionally one study / series in it."""

    base: str
    study: str | None = None
    series: str | None = None
    auth: tuple[str, str] | None = field(default=None, repr=False)  # user:password@ of the URL (never printed)

    @property
    def url(self) -> str:
        u = self.base
        if self.study:
            u += f"/studies/{self.study}"
            if self.series:
                u += f"/series/{self.series}"
        return u


@dataclass(frozen=True)
class DimseNode:
    """A DICOM application entity reachable over the network: AE title, host, port."""

    host: str
    port: int
    aet: str = "ANY-SCP"

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"


def is_dicomweb_url(text: str | os.PathLike) -> bool:
    """True for ``dicomweb://``, ``dicomwebs://``, ``http://`` and ``https://`` addresses."""
    return str(text).split("://", 1)[0].lower() in {"dicomweb", "dicomwebs", "http", "https"} and "://" in str(text)


def parse_dicomweb_url(text: str) -> DicomWebLocation:
    """``dicomweb://HOST:PORT/dicom-web/studies/UID/series/UID`` (or http(s)://, dicomwebs:// = https) -> location."""
    parts = urlsplit(str(text))
    scheme = {"dicomweb": "http", "dicomwebs": "https", "http": "http", "https": "https"}.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise InputError(f"{_public(parts) if parts.hostname else str(text).split('@')[-1]}: not a DICOMweb address "
                         "(expected dicomweb://HOST:PORT/ROOT[/studies/UID[/series/UID]])")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise InputError(f"{str(text).split('@')[-1]}: bad port ({exc})") from None
    segs = [s for s in parts.path.split("/") if s]
    study = series = None
    if "studies" in segs:
        i = segs.index("studies")
        rest = segs[i + 1:]
        root = segs[:i]
        if not rest:
            raise InputError(f"{_public(parts)}: 'studies' must be followed by a StudyInstanceUID")
        study = rest[0]
        if len(rest) >= 2:
            if rest[1] != "series" or len(rest) < 3:
                raise InputError(f"{_public(parts)}: expected .../studies/UID/series/UID")
            series = rest[2]
            if len(rest) > 3:
                raise InputError(f"{_public(parts)}: instance-level addresses are not supported; give a series")
        for uid in (study, series):
            try:
                check_uid(uid)
            except InputError as exc:
                raise InputError(f"{_public(parts)}: {exc}") from None
    else:
        root = segs
    base = _public(parts, "/" + "/".join(root) if root else "")
    auth = (unquote(parts.username or ""), unquote(parts.password or "")) if parts.username else None
    return DicomWebLocation(base=base, study=study, series=series, auth=auth)


def _public(parts: Any, path: str | None = None) -> str:
    """The URL without user:password (what messages and results may show)."""
    scheme = {"dicomweb": "http", "dicomwebs": "https"}.get(parts.scheme.lower(), parts.scheme.lower())
    host = parts.hostname if ":" not in (parts.hostname or "") else f"[{parts.hostname}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return f"{scheme}://{netloc}" + (parts.path if path is None else path)


def parse_dimse_address(text: str) -> DimseNode:
    """``dimse://AET@HOST:PORT`` or ``AET@HOST:PORT`` or ``HOST:PORT`` -> node."""
    t = str(text)
    if t.lower().startswith("dimse://"):
        t = t[len("dimse://"):]
    aet = "ANY-SCP"
    if "@" in t:
        aet, t = t.rsplit("@", 1)
    host, sep, port = t.rpartition(":")
    if not sep or not host or not port.isdigit() or not (0 < int(port) < 65536):
        raise InputError(f"{text}: not a DIMSE address (expected AET@HOST:PORT)")
    if not aet or len(aet) > 16:
        raise InputError(f"{text}: AE title must be 1 to 16 characters")
    return DimseNode(host=host, port=int(port), aet=aet)


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def _dataset_row(ds: Any, keys: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for k in keys:
        v = ds.get(k)
        if v is None or v == "":
            row[k] = None
        elif hasattr(v, "__iter__") and not isinstance(v, (str, bytes)) and v.__class__.__name__ == "MultiValue":
            row[k] = "\\".join(str(x) for x in v)
        else:
            row[k] = str(v)
    return row


STUDY_KEYS = ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "AccessionNumber", "StudyDescription",
              "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
SERIES_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
               "NumberOfSeriesRelatedInstances")
# Search filters a user may give (QIDO-RS query keys / C-FIND identifiers).
STUDY_FILTERS = ("PatientID", "PatientName", "StudyDate", "AccessionNumber", "ModalitiesInStudy", "StudyInstanceUID",
                 "StudyDescription")
SERIES_FILTERS = ("Modality", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription")


def check_uid(uid: str | None, what: str = "UID") -> str | None:
    """``uid`` when it is a DICOM UID (digits and dots, at most 64 characters) or None; else InputError."""
    if uid is None:
        return None
    u = str(uid)
    if not u or len(u) > 64 or not all(p.isdigit() for p in u.split(".")):
        raise InputError(f"'{u}' is not a DICOM {what} (digits and dots, at most 64 characters)")
    return u


def _check_filters(filters: dict[str, str] | None, allowed: Sequence[str]) -> dict[str, str]:
    out = {k: v for k, v in (filters or {}).items() if v not in (None, "")}
    bad = sorted(set(out) - set(allowed))
    if bad:
        raise InputError(f"unknown search filter(s) {', '.join(bad)}; use {', '.join(allowed)}")
    return out


def _collect_files(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")))
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    if not files:
        raise InputError("no files to store")
    return files


def read_dicom_files(paths: Iterable[str | Path]) -> list[Any]:
    """Read every DICOM file in ``paths`` (files or folders) in full; a non-DICOM file is an InputError."""
    import pydicom

    out = []
    for f in _collect_files(paths):
        try:
            ds = pydicom.dcmread(f)
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types for a non-DICOM file
            raise InputError(f"{f}: not a DICOM file ({type(exc).__name__}: {exc})") from None
        if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
            raise InputError(f"{f}: DICOM file without SOPClassUID/SOPInstanceUID; cannot be stored")
        out.append(ds)
    return out


class _Staging:
    """Files written into ``out/.medfm-partial-*`` and moved into ``out`` only by ``commit``."""

    def __init__(self, out_dir: Path, overwrite: bool) -> None:
        self.out_dir = Path(out_dir)
        self.overwrite = overwrite
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise OutputError(f"{self.out_dir}: exists and is not a folder")
        self.created = not self.out_dir.exists()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=".medfm-partial-", dir=self.out_dir))
        self.names: list[str] = []

    def save(self, ds: Any) -> None:
        name = f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(self.tmp / name, enforce_file_format=True)
        self.names.append(name)

    def commit(self) -> list[Path]:
        clashes = [n for n in self.names if (self.out_dir / n).exists()]
        if clashes and not self.overwrite:
            self.abort()
            raise OutputError(f"{self.out_dir / clashes[0]}: exists; pass --force to replace it")
        out = []
        for n in sorted(self.names):
            os.replace(self.tmp / n, self.out_dir / n)
            out.append(self.out_dir / n)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return out

    def abort(self) -> None:
        """Drop the staged files (and the output folder when this run created it and it is empty)."""
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.created:
            with contextlib.suppress(OSError):
                self.out_dir.rmdir()


# ---------------------------------------------------------------------------------------------
# DICOMweb
# ---------------------------------------------------------------------------------------------


class DicomWeb:
    """A DICOMweb server (QIDO-RS / WADO-RS / STOW-RS) with bounded timeouts and one-line errors."""

    def __init__(self, base: str | DicomWebLocation, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Credentials: ``user:password@`` in the URL (HTTP basic) or a bearer token in ``MEDFM_PACS_TOKEN``."""
        import requests
        from dicomweb_client.api import DICOMwebClient

        loc = base if isinstance(base, DicomWebLocation) else parse_dicomweb_url(base)
        self.base = loc.base
        session = requests.Session()
        if loc.auth:
            session.auth = loc.auth
        elif os.environ.get("MEDFM_PACS_TOKEN"):
            session.headers["Authorization"] = f"Bearer {os.environ['MEDFM_PACS_TOKEN']}"
        self.client = DICOMwebClient(url=self.base, session=session, timeout=(min(10.0, timeout), timeout))
        self.client.set_http_retry_params(retry=False)  # bounded: one try, the caller decides

    def _call(self, what: str, fn, *args, **kwargs):
        import requests

        try:
            return fn(*args, **kwargs)
        except requests.exceptions.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else "?"
            reason = exc.response.reason if exc.response is not None else ""
            if code == 404:
                raise PacsError(f"{self.base}: {what}: not found on the PACS (HTTP 404)") from None
            raise PacsError(f"{self.base}: {what}: the PACS answered HTTP {code} {reason}".rstrip()) from None
        except requests.exceptions.Timeout:
            raise PacsError(f"{self.base}: {what}: no answer within the timeout") from None
        except requests.exceptions.ConnectionError as exc:
            raise PacsError(f"{self.base}: {what}: cannot connect ({_root_cause(exc)})") from None
        except requests.exceptions.RequestException as exc:
            raise PacsError(f"{self.base}: {what}: {type(exc).__name__}: {exc}") from None
        except ValueError as exc:  # undecodable answer (not DICOM JSON / multipart)
            raise PacsError(f"{self.base}: {what}: the answer is not valid DICOMweb ({exc})") from None

    def search_studies(self, filters: dict[str, str] | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """QIDO-RS studies matching ``filters`` (DICOM keywords: PatientID, StudyDate=20030101-20031231, ...)."""
        import pydicom

        f = _check_filters(filters, STUDY_FILTERS)
        res = self._call("search studies", self.client.search_for_studies, search_filters=f, limit=limit,
                         fields=list(STUDY_KEYS))
        return [_dataset_row(pydicom.Dataset.from_json(r), STUDY_KEYS) for r in res]

    def search_series(self, study: str | None = None, filters: dict[str, str] | None = None,
                      limit: int | None = None) -> list[dict[str, Any]]:
        """QIDO-RS series (of one study when ``study`` is given) matching ``filters`` (Modality, ...)."""
        import pydicom

        f = _check_filters(filters, SERIES_FILTERS)
        check_uid(study, "StudyInstanceUID")
        res = self._call("search series", self.client.search_for_series, study_instance_uid=study, search_filters=f,
                         limit=limit, fields=list(SERIES_KEYS))
        return [_dataset_row(pydicom.Dataset.from_json(r), SERIES_KEYS) for r in res]

    def retrieve_series(self, study: str, series: str, out_dir: str | Path, overwrite: bool = False) -> list[Path]:
        """WADO-RS one series into ``out_dir`` as ``<SOPInstanceUID>.dcm`` files (all or nothing)."""
        check_uid(study, "StudyInstanceUID"), check_uid(series, "SeriesInstanceUID")
        what = f"retrieve series {series} of study {study}"
        datasets = self._call(what, self.client.retrieve_series, study, series)
        if not datasets:
            raise PacsError(f"{self.base}: {what}: the series has no instances")
        stage = _Staging(Path(out_dir), overwrite)
        try:
            for ds in datasets:
                stage.save(ds)
        except Exception:
            stage.abort()
            raise
        return stage.commit()

    def retrieve_study(self, study: str, out_dir: str | Path, overwrite: bool = False) -> list[Path]:
        """Every series of a study into ``out_dir/<SeriesInstanceUID>/`` (each series all or nothing)."""
        rows = self.search_series(check_uid(study, "StudyInstanceUID"))
        if not rows:
            raise PacsError(f"{self.base}: study {study}: not found on the PACS (no series)")
        files: list[Path] = []
        for r in rows:
            files += self.retrieve_series(study, r["SeriesInstanceUID"], Path(out_dir) / r["SeriesInstanceUID"], overwrite)
        return files

    def store(self, datasets: Sequence[Any]) -> dict[str, Any]:
        """STOW-RS the datasets (grouped per study); raises PacsError when any instance was refused."""
        by_study: dict[str, list[Any]] = {}
        for ds in datasets:
            by_study.setdefault(str(ds.StudyInstanceUID), []).append(ds)
        stored = 0
        for study, group in by_study.items():
            resp = self._call(f"store {len(group)} instance(s) of study {study}", self.client.store_instances,
                              group, study_instance_uid=study)
            failed = resp.get("FailedSOPSequence") if resp is not None else None
            if failed:
                uids = ", ".join(str(it.get("ReferencedSOPInstanceUID", "?")) for it in failed)
                raise PacsError(f"{self.base}: store: the PACS refused {len(failed)} instance(s): {uids}")
            stored += len(group)
        return {"stored": stored, "studies": sorted(by_study)}


def _root_cause(exc: BaseException) -> str:
    """The innermost reason of a requests/urllib3 connection error, e.g. 'Connection refused'."""
    seen = exc
    for _ in range(10):
        nxt = seen.__cause__ or seen.__context__ or (seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None)
        if nxt is None or nxt is seen:
            break
        seen = nxt
    text = str(seen)
    for key in ("Connection refused", "Name or service not known", "No route to host", "timed out",
                "Temporary failure in name resolution", "Connection reset"):
        if key in text:
            return key
    return text.split(": ")[-1][:120] or type(seen).__name__


# ---------------------------------------------------------------------------------------------
# DIMSE
# ---------------------------------------------------------------------------------------------


def _ae(calling_aet: str, timeout: float) -> Any:
    from pynetdicom import AE

    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.connection_timeout = min(timeout, 10.0)
    ae.maximum_pdu_size = 0
    return ae


def _associate(ae: Any, node: DimseNode, what: str, **kwargs) -> Any:
    assoc = ae.associate(node.host, node.port, ae_title=node.aet, **kwargs)
    if not assoc.is_established:
        why = ("association rejected (check the AE titles)" if assoc.is_rejected
               else "cannot associate (connection refused, down or unreachable)")
        raise PacsError(f"{node}: {what}: {why}")
    return assoc


def _status_ok(status: Any) -> bool:
    return status is not None and "Status" in status and int(status.Status) in (0x0000,)


def _pending(status: Any) -> bool:
    return status is not None and "Status" in status and int(status.Status) in (0xFF00, 0xFF01)


def _status_text(status: Any) -> str:
    if status is None or "Status" not in status:
        return "no answer (timeout or connection lost)"
    return f"status 0x{int(status.Status):04X}"


def echo(node: DimseNode, calling_aet: str = DEFAULT_CALLING_AET, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """C-ECHO; returns {'node', 'status', 'seconds'}; PacsError when the node does not answer success."""
    import time

    from pynetdicom.sop_class import Verification

    ae = _ae(calling_aet, timeout)
    ae.add_requested_context(Verification)
    t0 = time.perf_counter()
    assoc = _associate(ae, node, "C-ECHO")
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    if not _status_ok(status):
        raise PacsError(f"{node}: C-ECHO: {_status_text(status)}")
    return {"node": str(node), "status": "success", "seconds": round(time.perf_counter() - t0, 4)}


def find(node: DimseNode, level: str = "STUDY", filters: dict[str, str] | None = None, study: str | None = None,
         calling_aet: str = DEFAULT_CALLING_AET, timeout: float = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
    """C-FIND (Study Root) at STUDY or SERIES level; returns one row per match, same keys as the DICOMweb search."""
    from pydicom import Dataset
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

    level = level.upper()
    keys, allowed = (STUDY_KEYS, STUDY_FILTERS) if level == "STUDY" else (SERIES_KEYS, SERIES_FILTERS)
    if level not in ("STUDY", "SERIES"):
        raise InputError(f"C-FIND level must be STUDY or SERIES, got {level}")
    f = _check_filters(filters, allowed)
    check_uid(study, "StudyInstanceUID")
    if level == "SERIES" and not study:
        raise InputError("a series search over DIMSE needs the study UID (--study)")
    q = Dataset()
    q.QueryRetrieveLevel = level
    for k in keys:
        setattr(q, k, f.get(k, ""))
    if study:
        q.StudyInstanceUID = study
    ae = _ae(calling_aet, timeout)
    ae.add_requested_context(FIND)
    assoc = _associate(ae, node, "C-FIND")
    rows = []
    try:
        for status, ident in assoc.send_c_find(q, FIND):
            if _pending(status) and ident is not None:
                rows.append(_dataset_row(ident, keys))
            elif not _status_ok(status):
                raise PacsError(f"{node}: C-FIND: {_status_text(status)}")
    finally:
        if assoc.is_established:
            assoc.release()
    return rows


def _storage_contexts() -> list[Any]:
    """Storage SOP classes offered when receiving (C-GET / C-MOVE): pynetdicom's list (120; an association takes 128)."""
    from pynetdicom import StoragePresentationContexts

    return list(StoragePresentationContexts)[:126]


def _store_handler(stage: _Staging, errors: list[str]):
    lock = threading.Lock()

    def handle(event: Any) -> int:
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            with lock:
                stage.save(ds)
            return 0x0000
        except Exception as exc:  # noqa: BLE001 - a file we cannot write: refuse it (the sender sees a failure status)
            errors.append(f"{type(exc).__name__}: {exc}")
            return 0xA700

    return handle


def get_series(node: DimseNode, study: str, series: str, out_dir: str | Path, overwrite: bool = False,
               calling_aet: str = DEFAULT_CALLING_AET, timeout: float = DEFAULT_TIMEOUT) -> list[Path]:
    """C-GET one series into ``out_dir`` over the same association (no routing set up on the PACS needed)."""
    from pynetdicom import build_role, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

    check_uid(study, "StudyInstanceUID"), check_uid(series, "SeriesInstanceUID")
    ae = _ae(calling_aet, timeout)
    ae.add_requested_context(GET)
    roles = []
    for c in _storage_contexts():
        ae.add_requested_context(c.abstract_syntax)
        roles.append(build_role(c.abstract_syntax, scp_role=True))
    stage = _Staging(Path(out_dir), overwrite)
    errors: list[str] = []
    try:
        assoc = _associate(ae, node, "C-GET", ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, _store_handler(stage, errors))])
        q = _series_query(study, series)
        last = _last_status(assoc, assoc.send_c_get(q, GET))
        _check_retrieve(node, "C-GET", last, stage, errors, study, series)
    except Exception:
        stage.abort()
        raise
    return stage.commit()


def _last_status(assoc: Any, responses: Any) -> Any:
    """The last status of a C-GET / C-MOVE response stream; the association is released either way."""
    last = None
    try:
        for status, _ident in responses:
            last = status
    finally:
        if assoc.is_established:
            assoc.release()
    return last


def _series_query(study: str, series: str) -> Any:
    """The C-GET / C-MOVE identifier of one series."""
    from pydicom import Dataset

    q = Dataset()
    q.QueryRetrieveLevel = "SERIES"
    q.StudyInstanceUID = study
    q.SeriesInstanceUID = series
    return q


def _check_retrieve(node: DimseNode, what: str, last: Any, stage: _Staging, errors: list[str], study: str, series: str) -> None:
    if errors:
        raise PacsError(f"{node}: {what}: could not write a received instance ({errors[0]})")
    if last is None or "Status" not in last:
        raise PacsError(f"{node}: {what}: no answer (timeout or connection lost)")
    code = int(last.Status)
    if code != 0x0000:
        failed = int(last.get("NumberOfFailedSuboperations", 0) or 0)
        raise PacsError(f"{node}: {what}: series {series} of study {study}: status 0x{code:04X}"
                        + (f" ({failed} instance(s) failed)" if failed else ""))
    if not stage.names:
        raise PacsError(f"{node}: {what}: series {series} of study {study}: not found on the PACS (nothing received)")


def move_series(node: DimseNode, study: str, series: str, out_dir: str | Path, move_aet: str, move_port: int,
                listen_host: str = "127.0.0.1", overwrite: bool = False, calling_aet: str = DEFAULT_CALLING_AET,
                timeout: float = DEFAULT_TIMEOUT) -> list[Path]:
    """C-MOVE one series to a storage SCP started here as ``move_aet`` on ``listen_host:move_port``.

    The PACS must know ``move_aet`` (its address is configured there, e.g. Orthanc's ``/modalities``).
    """
    from pynetdicom import evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MOVE

    check_uid(study, "StudyInstanceUID"), check_uid(series, "SeriesInstanceUID")
    stage = _Staging(Path(out_dir), overwrite)
    errors: list[str] = []
    scp_ae = _ae(move_aet, timeout)
    for c in _storage_contexts():
        scp_ae.add_supported_context(c.abstract_syntax)
    try:
        try:
            server = scp_ae.start_server((listen_host, int(move_port)), block=False,
                                         evt_handlers=[(evt.EVT_C_STORE, _store_handler(stage, errors))])
        except OSError as exc:
            raise PacsError(f"cannot listen on {listen_host}:{move_port} for C-MOVE ({exc.strerror or exc})") from None
        try:
            ae = _ae(calling_aet, timeout)
            ae.add_requested_context(MOVE)
            assoc = _associate(ae, node, "C-MOVE")
            q = _series_query(study, series)
            last = _last_status(assoc, assoc.send_c_move(q, move_aet, MOVE))
        finally:
            server.shutdown()
        _check_retrieve(node, "C-MOVE", last, stage, errors, study, series)
    except Exception:
        stage.abort()
        raise
    return stage.commit()


def c_store(node: DimseNode, datasets: Sequence[Any], calling_aet: str = DEFAULT_CALLING_AET,
            timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """C-STORE the datasets (each in its own transfer syntax); PacsError naming the first refused instance."""
    ae = _ae(calling_aet, timeout)
    pairs = sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets})
    if len(pairs) > 128:
        raise InputError(f"{len(pairs)} SOP class / transfer syntax pairs; one association takes at most 128")
    for sop, ts in pairs:
        ae.add_requested_context(sop, [ts])
    assoc = _associate(ae, node, "C-STORE")
    stored = 0
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            if not _status_ok(status) and not (status is not None and "Status" in status and int(status.Status) in (0xB000, 0xB007, 0xB006)):
                raise PacsError(f"{node}: C-STORE {ds.SOPInstanceUID}: {_status_text(status)}")
            stored += 1
    finally:
        if assoc.is_established:
            assoc.release()
    return {"stored": stored, "studies": sorted({str(ds.StudyInstanceUID) for ds in datasets})}
