"""The viewer's PACS side: find a study on a DICOMweb PACS, open one of its series, store masks back.

``add_pacs_routes(app, service, "dicomweb://host:port/dicom-web")`` adds, under ``/pacs``:

- ``GET  /pacs``: ``{"url": DICOMweb root}`` (the viewer shows its PACS panel when this answers)
- ``GET  /pacs/studies?PatientID=&StudyDate=&AccessionNumber=&StudyDescription=&ModalitiesInStudy=&limit=``:
  QIDO-RS studies (patient name and ID left out when the service de-identifies)
- ``GET  /pacs/studies/{study}/series``: the study's series (QIDO-RS)
- ``POST /pacs/open`` ``{"study": UID, "series": UID}``: WADO-RS retrieve, then read exactly as an
  upload of the series (same limits, same de-identification); answers as ``POST /images``, plus
  ``study`` and ``series``
- ``POST /pacs/store/{image_id}?segment=NAME``: body = a zip of ``mask_slice_NNN.png`` (what the
  viewer downloads); written as a DICOM-SEG referencing the source series (highdicom) and sent
  back with STOW-RS; answers the SEG's UIDs and the slices it covers

A PACS that is down or answers an error is 502, an unknown study or series 404, bad masks 400;
each with one line in ``detail``. Only routes are added: the app's guard (token, Host, CSRF,
body limits) covers them like every other route.
"""

# no "from __future__ import annotations": FastAPI reads the endpoint annotations at runtime
import io
import re
import shutil
import tempfile
import threading
import uuid
import weakref
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from medfm._optional import optional_import
from medfm.errors import InputError
from medfm.io.pacs import STUDY_FILTERS, DicomWeb, PacsError
from medfm.serve.service import SegmentationService, open_upload_zip

MASK_NAME = re.compile(r"mask_slice_(\d{1,5})\.png")
PHI_KEYS = ("PatientName", "PatientID")  # left out of study lists when the service de-identifies


def check_uid(uid: str, what: str) -> str:
    """A DICOM UID (digits and dots, at most 64 characters) before it goes into a PACS URL, else InputError."""
    if not (0 < len(uid) <= 64 and re.fullmatch(r"[0-9]+(\.[0-9]+)*", uid)):
        raise InputError(f"{what}: {uid[:80]!r} is not a DICOM UID")
    return uid


class NotFound(LookupError):
    """An image, study or series that is not there (answered 404)."""


def _stored_zip(files: list[Path]) -> bytes:
    """The files of one retrieved series as a zip (stored, no compression): read like an upload."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for f in files:
            zf.write(f, f.name)
    return buf.getvalue()


def read_mask_zip(data: bytes, shape: tuple[int, int, int], name: str = "masks") -> np.ndarray:
    """A zip of ``mask_slice_NNN.png`` (0 / 255, one per slice with a mask) -> (Z, H, W) bool.
    Each member's name, size and PNG header are checked before it is decoded."""
    from PIL import Image as PILImage

    z, h, w = shape
    out = np.zeros(shape, dtype=bool)
    try:
        with open_upload_zip(data, name, holds="mask") as (zf, members):
            if len(members) > z:
                raise InputError(f"{name}: {len(members)} masks for a volume of {z} slices")
            for m in members:
                found = MASK_NAME.fullmatch(m.filename)
                if not found or not 0 <= int(found[1]) < z:
                    raise InputError(f"{name}: {m.filename!r} is not mask_slice_NNN.png with NNN in 0..{z - 1}")
                limit = 4 * h * w + 2**16  # a PNG of an 8-bit (H, W) mask is never that large
                png = b""
                if m.file_size <= limit:  # as declared; then read at most limit + 1 bytes, whatever the header claims
                    with zf.open(m) as f:
                        png = f.read(limit + 1)
                if m.file_size > limit or len(png) > limit:
                    raise InputError(f"{name}: {m.filename} unpacks to more than {limit} bytes, too large for a {w}x{h} mask")
                with PILImage.open(io.BytesIO(png)) as im:
                    if im.format != "PNG" or im.size != (w, h):
                        raise InputError(f"{name}: {m.filename} is a {im.format} of {im.size[0]}x{im.size[1]}, not a {w}x{h} PNG")
                    out[int(found[1])] = np.asarray(im.convert("L")) > 127
    except OSError as exc:  # PIL: not a PNG / truncated
        raise InputError(f"{name}: a mask is not a readable PNG ({exc})") from None
    return out


class PacsBridge:
    """Series opened from one DICOMweb PACS into ``service``; their retrieved files are kept (one
    folder per open image, as many as the service holds) so masks can be stored back as DICOM-SEG."""

    def __init__(self, service: SegmentationService, pacs: "str | DicomWeb", timeout: float = 30.0) -> None:
        self.service = service
        self.web = pacs if isinstance(pacs, DicomWeb) else DicomWeb(pacs, timeout=timeout)
        self._tmp = Path(tempfile.mkdtemp(prefix="medfm-pacs-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self._tmp, True)
        self._opened: OrderedDict[str, tuple[Path, str, str]] = OrderedDict()  # image id -> (folder, study, series)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Delete the retrieved series."""
        self._finalizer()

    def studies(self, filters: dict[str, str], limit: int = 100) -> list[dict[str, Any]]:
        rows = self.web.search_studies(filters, limit=limit)
        if getattr(self.service, "deid", False):
            rows = [{k: v for k, v in r.items() if k not in PHI_KEYS} for r in rows]
        return rows

    def series(self, study: str) -> list[dict[str, Any]]:
        rows = self.web.search_series(check_uid(study, "study"))
        if not rows:
            raise NotFound(f"study {study}: not on the PACS (no series)")
        return rows

    def open(self, study: str, series: str) -> dict[str, Any]:
        """Retrieve one series and add it to the service as an upload of its files would be."""
        check_uid(study, "study"), check_uid(series, "series")
        folder = self._tmp / uuid.uuid4().hex
        try:
            files = self.web.retrieve_series(study, series, folder)
            info = self.service.add_image(_stored_zip(files), "pacs-series.zip")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        with self._lock:
            old = self._opened.pop(info["id"], None)
            if old is not None:  # the same series opened again: keep one copy
                shutil.rmtree(old[0], ignore_errors=True)
            self._opened[info["id"]] = (folder, study, series)
            held = {i["id"] for i in self.service.images()}
            for gone in [k for k in self._opened if k not in held]:  # dropped by the service: no longer needed
                shutil.rmtree(self._opened.pop(gone)[0], ignore_errors=True)
        return {**info, "study": study, "series": series}

    def store(self, image_id: str, data: bytes, segment: str = "medfm mask") -> dict[str, Any]:
        """Masks of an image opened from the PACS -> one DICOM-SEG on its series -> STOW-RS."""
        import pydicom

        from medfm.io import Image
        from medfm.io.dicom import read_dicom_series
        from medfm.io.dicom_seg import write_dicom_seg

        with self._lock:
            if image_id not in self._opened:
                raise NotFound(f"image {image_id!r} was not opened from the PACS here (open it from the PACS to store masks)")
            folder, study, series = self._opened[image_id]
        try:
            session = self.service.session(image_id)
        except KeyError:
            raise NotFound(f"no image {image_id!r} here (dropped to make room: open it again)") from None
        segment = (segment or "").strip()
        if not segment or len(segment) > 64:
            raise InputError("segment: give a name of 1 to 64 characters")
        masks = read_mask_zip(data, tuple(session.volume.shape[1:]))
        if not masks.any():
            raise InputError("the masks are empty: nothing to store")
        ref = read_dicom_series(folder)
        mask = Image(masks[None].astype(np.uint8), ref.spacing, ref.origin, ref.direction, modality="SEG")
        out = self._tmp / f"seg-{uuid.uuid4().hex}.dcm"
        try:
            write_dicom_seg(mask, folder, out, [segment])
            ds = pydicom.dcmread(out)
            self.web.store([ds])
        finally:
            out.unlink(missing_ok=True)
        return {
            "study": study,
            "series": series,
            "seg_series_instance_uid": str(ds.SeriesInstanceUID),
            "seg_sop_instance_uid": str(ds.SOPInstanceUID),
            "frames": int(ds.NumberOfFrames),
            "slices": [int(k) for k in np.flatnonzero(masks.any(axis=(1, 2)))],
            "voxels": int(masks.sum()),
        }


def add_pacs_routes(app: Any, service: SegmentationService, pacs: "str | DicomWeb", timeout: float = 30.0) -> PacsBridge:
    """Add the ``/pacs`` routes (module doc) to ``app`` for the DICOMweb PACS at ``pacs``."""
    fastapi = optional_import("fastapi")
    pydantic = optional_import("pydantic")
    bridge = PacsBridge(service, pacs, timeout=timeout)

    class OpenSeries(pydantic.BaseModel):
        study: str
        series: str

    def answer(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except NotFound as exc:
            raise fastapi.HTTPException(404, str(exc)) from None
        except PacsError as exc:
            line = str(exc).splitlines()[0]
            raise fastapi.HTTPException(404 if "(HTTP 404)" in line else 502, line) from None

    @app.get("/pacs")
    def pacs_info() -> dict[str, Any]:
        return {"url": bridge.web.base}

    @app.get("/pacs/studies")
    def pacs_studies(request: fastapi.Request, limit: int = 100) -> list[dict[str, Any]]:
        if not 1 <= limit <= 1000:
            raise InputError(f"limit must be 1..1000, got {limit}")
        filters = {k: v for k, v in request.query_params.items() if k != "limit"}
        bad = sorted(set(filters) - set(STUDY_FILTERS))
        if bad:
            raise InputError(f"unknown search filter(s) {', '.join(bad)}; use {', '.join(STUDY_FILTERS)}")
        return answer(bridge.studies, filters, limit)

    @app.get("/pacs/studies/{study}/series")
    def pacs_series(study: str) -> list[dict[str, Any]]:
        return answer(bridge.series, study)

    @app.post("/pacs/open")
    def pacs_open(body: OpenSeries) -> dict[str, Any]:
        return answer(bridge.open, body.study, body.series)

    @app.post("/pacs/store/{image_id}")
    async def pacs_store(image_id: str, request: fastapi.Request, segment: str = "medfm mask") -> dict[str, Any]:
        from starlette.concurrency import run_in_threadpool

        data = await request.body()  # bounded by the app's guard
        return await run_in_threadpool(answer, bridge.store, image_id, bytes(data), segment)

    app.state.pacs = bridge
    return bridge
