"""Interactive segmentation sessions behind the REST service: images in, prompted masks out.

``SegmentationService`` holds one promptable model (a zoo card with the ``segmenter``
capability, e.g. SAM / MedSAM) and the images and volumes uploaded to it. Prompts go to one 2D
slice at a time; the image encoder runs once per slice (its embedding is kept, least recently
used first out), and every box or point prompt then only runs the prompt encoder and mask
decoder, which is what makes clicking in the viewer interactive. Plain Python, no web
framework: ``medfm.serve.app`` wraps it in FastAPI.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import tempfile
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import InputError
from medfm.io import Image, read_image
from medfm.io.window import display_uint8, percentile_range, window_range
from medfm.models.base import ModelAdapter
from medfm.tasks.segmentation.promptable import check_box, check_points

log = logging.getLogger("medfm.serve")  # image ids and sizes only: never names, paths or header values


@dataclass
class Session:
    """One uploaded image or volume: its pixels (C, Z, H, W) (Z = 1 for a 2D image) as read
    (HU for CT), pixel spacing and the display window used for every slice."""

    id: str
    name: str
    volume: np.ndarray  # (C, Z, H, W)
    spacing: tuple[float, float] | None  # mm per pixel (y, x); None when the file holds none (PNG)
    window: tuple[float, float] | None  # (low, high) mapped to 0..255 for display; None: uint8 as is
    slice_mm: float | None = None  # mm between slices of a volume with known spacing
    modality: str | None = None  # "CT", "MR", ... when the file says (CT slices are HU: models window them)

    @property
    def depth(self) -> int:
        return int(self.volume.shape[1])

    def check_slice(self, z: int | None) -> int:
        """``z`` (default: the middle slice) if this image has it, else InputError."""
        if z is None:
            return self.depth // 2
        if not 0 <= int(z) < self.depth:
            what = f"slice {z} is outside the volume (0..{self.depth - 1})" if self.depth > 1 else f"a 2D image has no slice {z}"
            raise InputError(f"{self.name}: {what}")
        return int(z)

    def slice_array(self, z: int) -> np.ndarray:
        return self.volume[:, z]

    def describe(self) -> dict[str, Any]:
        c, d, h, w = self.volume.shape
        return {
            "id": self.id,
            "name": self.name,
            "width": w,
            "height": h,
            "channels": c,
            "depth": d,
            "slice": d // 2,  # the slice prompts go to when they name none
            "spacing_mm": list(self.spacing) if self.spacing else None,
        }


def display_window(image: Image, volume: np.ndarray) -> tuple[float, float] | None:
    """What maps to 0..255 on screen: the file's VOI window when it has one (DICOM), nothing for
    uint8, else the 1st..99th percentile of the whole image (the same for every slice)."""
    window = image.meta.get("window")
    if volume.dtype == np.uint8 and window is None:
        return None
    if window is not None:
        return window_range(float(window[0]), float(window[1]))
    lo, hi = percentile_range(volume)
    return lo, (hi if hi > lo else lo + 1.0)


def display_png(array: np.ndarray, window: tuple[float, float] | None) -> bytes:
    """8-bit PNG of a (C, H, W) slice (grey, or RGB when C = 3) through ``window``."""
    from PIL import Image as PILImage

    arr = np.asarray(array)
    if arr.shape[0] not in (1, 3):
        arr = arr[:1]
    if window is None:
        out = arr.astype(np.uint8)
    else:
        out = display_uint8(arr, *window)
    pil = PILImage.fromarray(np.ascontiguousarray(out[0] if out.shape[0] == 1 else np.moveaxis(out, 0, -1)))
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


BOMB_MIN_VOXELS = 2**24  # below this an image is small enough whatever its compression ratio


class TooLarge(InputError):
    """An upload, or what it expands to, is over one of the service's limits (HTTP 413)."""


def _zip_entries(data: bytes | bytearray) -> int | None:
    """The member count an archive's end-of-central-directory record declares, read before
    ``zipfile`` parses (and holds in memory) one object per member; None when not found (zip64)."""
    tail = bytes(data[-(65536 + 22):])
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return None
    n = int.from_bytes(tail[at + 10 : at + 12], "little")
    return None if n == 0xFFFF else n


def _unsafe_member(filename: str) -> bool:
    """A member path that would leave the folder it is extracted to: absolute, a drive, or ``..``."""
    path = filename.replace("\\", "/")
    return path.startswith("/") or (len(path) > 1 and path[1] == ":") or ".." in path.split("/")


@contextmanager
def open_upload_zip(data: bytes | bytearray, name: str, max_files: int = 5000, holds: str = "files") -> Iterator[tuple[Any, list[Any]]]:
    """An uploaded zip as ``(ZipFile, its file members)``, checked before anything is read: the
    declared member count (before ``zipfile`` parses them), at least one and at most ``max_files``
    files, no ``..`` or absolute member paths. Any zip decoding error inside the block becomes one
    InputError naming ``name``; every reader of an upload goes through here."""
    import zipfile

    declared = _zip_entries(data)
    if declared is not None and declared > max_files:
        raise TooLarge(f"{name}: the zip holds {declared} files, more than {max_files}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if not members:
                raise InputError(f"{name}: the zip holds no {holds}")
            if len(members) > max_files:
                raise TooLarge(f"{name}: the zip holds {len(members)} files, more than {max_files}")
            bad = [m.filename for m in zf.infolist() if _unsafe_member(m.filename)]
            if bad:
                raise InputError(f"{name}: the zip has {len(bad)} member(s) with '..' or absolute paths (e.g. {bad[0]!r}); refused")
            yield zf, members
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError, zlib.error) as exc:
        raise InputError(f"{name}: not a readable zip ({type(exc).__name__}: {' '.join(str(exc).split())})") from None


def _unzip(data: bytes | bytearray, folder: Path, name: str, max_files: int = 5000, max_bytes: int = 2**31) -> None:
    """Extract a zip (e.g. a DICOM series) into ``folder``: regular files only, each under its own
    index, streamed in 1 MiB pieces and counted, so a decompression bomb stops at ``max_bytes``."""
    total = 0
    with open_upload_zip(data, name, max_files) as (zf, members):
        if sum(m.file_size for m in members) > max_bytes:  # declared sizes: refuse early (then count)
            raise TooLarge(f"{name}: the zip expands to more than {max_bytes} bytes")
        folder.mkdir()
        for k, m in enumerate(members):
            with zf.open(m) as src, open(folder / f"{k:05d}_{Path(m.filename).name}", "wb") as out:
                while chunk := src.read(2**20):
                    total += len(chunk)
                    if total > max_bytes:
                        raise TooLarge(f"{name}: the zip expands to more than {max_bytes} bytes")
                    out.write(chunk)


def _prod(shape: Sequence[int]) -> int:
    return int(np.prod([int(x) for x in shape], dtype=np.float64)) if len(shape) else 1


def _dicom_voxels(path: Path) -> int | None:
    """Rows x Columns x frames x samples from a DICOM header (pixels not read), None if not DICOM."""
    import pydicom

    with open(path, "rb") as f:
        head = f.read(132)
    # a preamble + "DICM", or (old files without one) a first tag in group 0002 or 0008: anything else
    # is not parsed at all (pydicom's force=True walks a file of zeros as millions of empty elements)
    if head[128:132] != b"DICM" and head[:2] not in (b"\x02\x00", b"\x08\x00"):
        return None
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - not DICOM, or unreadable: None
        return None
    if "Rows" not in ds or "Columns" not in ds:
        return None
    frames = ds.get("NumberOfFrames", 1) or 1
    return _prod([ds.Rows, ds.Columns, int(frames), ds.get("SamplesPerPixel", 1) or 1])


def decoded_voxels(path: Path) -> int | None:
    """How many voxels reading ``path`` (a file, or a folder of DICOM files) would decode, from
    headers only (DICOM, NIfTI, TIFF, PNG/JPEG/BMP, NRRD/MetaImage); None when no header says (the
    service then refuses the file: nothing is decoded whose size is not known first)."""
    import gzip

    if path.is_dir():
        counts = [_dicom_voxels(f) for f in sorted(path.iterdir()) if f.is_file()]
        return sum(c for c in counts if c) if any(counts) else None
    with open(path, "rb") as f:
        head = f.read(544)
    if head[:2] == b"\x1f\x8b":  # gzip: only a NIfTI header is looked for inside (544 bytes read)
        try:
            with gzip.open(path, "rb") as g:
                head = g.read(544)
        except (OSError, EOFError):
            return None
    if head[128:132] == b"DICM":  # before TIFF: a DICOM preamble may hold a TIFF header
        return _dicom_voxels(path)
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"n+2\x00") or head[4:12] == b"n+2\x00\r\n\x1a\n":
        import nibabel as nib

        cls = nib.Nifti2Header if head[4:8] == b"n+2\x00" or head[:4] == b"\x1c\x02\x00\x00" else nib.Nifti1Header
        try:
            header = cls.from_fileobj(io.BytesIO(head), check=False)
            return _prod(header.get_data_shape())
        except Exception:  # noqa: BLE001 - a header this peek cannot parse: None (refused)
            return None
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                return _prod(tif.series[0].shape)
        except Exception:  # noqa: BLE001 - a header this peek cannot parse: None (refused)
            return None
    if head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM")):
        from PIL import Image as PILImage

        try:
            with PILImage.open(path) as im:
                return _prod(im.size) * len(im.getbands())
        except Exception:  # noqa: BLE001 - a header this peek cannot parse: None (refused)
            return None
    if head.startswith(b"NRRD") or path.name.lower().endswith((".mha", ".mhd", ".nrrd", ".nhdr")):
        import SimpleITK as sitk

        try:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            return _prod(reader.GetSize()) * int(reader.GetNumberOfComponents())
        except Exception:  # noqa: BLE001 - a header this peek cannot parse: None (refused)
            return None
    return _dicom_voxels(path)


def _suffix(name: str) -> str:
    """The upload name's extension(s) (``.nii.gz``, ``.dcm``), which say the format and nothing else."""
    base = Path(name.replace("\\", "/")).name.lower()
    for ext in (".nii.gz", ".nii", ".dcm", ".zip", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".nrrd", ".mha"):
        if base.endswith(ext):
            return ext
    return ""


def _deidentify(path: Path, out: Path, name: str) -> Path:
    """De-identified copies (PS3.15 basic profile, ``medfm.io.deid``; one pseudonym mapping per
    upload) of the DICOM file or series folder ``path`` under ``out``; other formats carry no DICOM
    header and are returned as they are."""
    from medfm.io.deid import Deidentifier, read_dicom_dataset, write_dataset

    files = sorted(f for f in path.iterdir() if f.is_file()) if path.is_dir() else [path]
    dicom = [f for f in files if _dicom_voxels(f) is not None]
    if not dicom:
        return path
    out.mkdir()
    deid, removed = Deidentifier(), 0
    for k, f in enumerate(dicom):
        try:
            ds = read_dicom_dataset(f)
            entry = deid.deidentify(ds).to_dict()
        except InputError:
            raise InputError(f"{name}: a DICOM file in it cannot be de-identified") from None
        removed += len(entry.get("removed", ())) + len(entry.get("replaced", ())) + len(entry.get("emptied", ()))
        write_dataset(ds, out / f"{k:05d}.dcm")
    log.info("de-identified %d DICOM file(s): %d attributes removed, replaced or emptied", len(dicom), removed)
    return out if path.is_dir() else out / "00000.dcm"


def mask_png(mask: np.ndarray) -> bytes:
    """A bool (H, W) mask as an 8-bit PNG (0 / 255)."""
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(np.asarray(mask, dtype=np.uint8) * 255).save(buf, format="PNG")
    return buf.getvalue()


class SegmentationService:
    """Uploaded images and prompted masks for one promptable model (thread-safe).

    ``max_images``: images (or volumes) held; ``max_embeddings``: slice embeddings kept in memory
    (a SAM ViT-B embedding is 4 MiB); in both the least recently used goes first, and a dropped
    image must be uploaded again (a dropped embedding is recomputed on the next prompt).
    Limits for a service on a network (each refusal is a ``TooLarge`` / ``InputError``, HTTP 413 / 400):
    ``max_bytes`` per upload; ``max_voxels`` decoded per image (from its header, before decoding);
    ``max_held_bytes`` for all kept images together (least recently used out); ``max_zip_files`` and
    ``max_unzipped_bytes`` for a zipped series; ``max_points`` per prompt; ``max_expansion``: decoded
    voxels per uploaded byte for images over 16 Mi voxels, and unzipped bytes per zipped byte above
    64 MiB (a zero-filled bomb expands ~1000 times, a compressed CT or DICOM series a few). ``deid``:
    DICOM uploads are de-identified (``medfm.io.deid``) before they are read and kept, and their
    names are not kept. A file whose header gives no image size is refused without being decoded.
    """

    def __init__(
        self,
        model: ModelAdapter,
        max_images: int = 16,
        max_bytes: int = 512 * 2**20,
        max_embeddings: int = 64,
        *,
        max_voxels: int = 2**27,
        max_held_bytes: int = 2**31,
        max_zip_files: int = 5000,
        max_unzipped_bytes: int = 2**31,
        max_points: int = 64,
        max_expansion: int = 100,
        deid: bool = False,
    ) -> None:
        model.require("segmenter", "the segmentation service")
        if min(max_images, max_embeddings, max_bytes, max_voxels, max_held_bytes, max_zip_files, max_unzipped_bytes, max_points) < 1:
            raise InputError(f"every limit of the segmentation service must be >= 1 (max_images={max_images}, max_embeddings={max_embeddings}, ...)")
        self.model = model
        self.max_images = max_images
        self.max_embeddings = max_embeddings
        self.max_bytes = max_bytes
        self.max_voxels = max_voxels
        self.max_held_bytes = max_held_bytes
        self.max_zip_files = max_zip_files
        self.max_unzipped_bytes = max_unzipped_bytes
        self.max_points = max_points
        self.max_expansion = max_expansion
        self.deid = deid
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._states: OrderedDict[tuple[str, int], Any] = OrderedDict()  # (image id, slice) -> embedding
        self._reading = threading.BoundedSemaphore(2)
        self._lock = threading.Lock()  # one model: prompts and embeddings run one at a time
        self._current: tuple[str, int] | None = None  # the slice whose embedding the model holds now
        self._calls_seen = model.encoder_calls  # the model's encoder runs as last seen

    @property
    def model_id(self) -> str:
        return str(self.model.card.id)

    def held_bytes(self) -> int:
        """Bytes of pixel data held for all kept images."""
        with self._lock:
            return sum(s.volume.nbytes for s in self._sessions.values())

    def add_image(self, data: bytes | bytearray, name: str) -> dict[str, Any]:
        """Read an uploaded file (PNG/JPEG/TIFF/DICOM/NIfTI/NRRD...), embed its middle slice (the
        others when first prompted) and describe it. The same bytes uploaded again reuse it."""
        if not data:
            raise InputError(f"{name}: the upload is empty")
        if len(data) > self.max_bytes:
            raise TooLarge(f"{name}: {len(data)} bytes is more than the service accepts ({self.max_bytes})")
        key = hashlib.sha256(data).hexdigest()[:16]
        with self._lock:
            if key in self._sessions:
                self._sessions.move_to_end(key)
                return self._sessions[key].describe()
        t0 = time.perf_counter()
        with self._reading:  # decoding is the memory peak: a few uploads at a time
            image = self._read(data, name)
        volume = np.asarray(image.array)
        volume = volume[:, None] if volume.ndim == 3 else volume
        if volume.nbytes > self.max_held_bytes:
            raise TooLarge(f"{name}: {volume.nbytes} bytes of pixels is more than the service keeps ({self.max_held_bytes})")
        spacing, slice_mm = None, None
        if image.meta.get("spacing_known", True) is not False:
            spacing = (float(image.spacing[-2]), float(image.spacing[-1]))
            slice_mm = float(image.spacing[0]) if len(image.spacing) == 3 else None
        kept_name = f"image-{key}{_suffix(name)}" if self.deid else name  # a file name can identify a patient
        session = Session(key, kept_name, volume, spacing, display_window(image, volume), slice_mm, image.modality)
        with self._lock:
            self._embed(session, session.check_slice(None))  # first: an image the model refuses is not kept
            self._sessions[key] = session
            held = sum(s.volume.nbytes for s in self._sessions.values())
            while len(self._sessions) > self.max_images or held > self.max_held_bytes:
                old, dropped = self._sessions.popitem(last=False)
                held -= dropped.volume.nbytes
                self._forget(old)
                log.info("image %s dropped to make room (%d held, %d bytes)", old, len(self._sessions), held)
        c, d, h, w = volume.shape
        log.info("image %s: %dx%dx%d x%d %s %s, read and embedded in %.2f s", key, w, h, d, c, volume.dtype, image.modality or "-", time.perf_counter() - t0)
        return session.describe()

    def _forget(self, image_id: str) -> None:
        """Drop what is kept for an image besides its session. Call with the lock held."""
        for k in [k for k in self._states if k[0] == image_id]:
            del self._states[k]
        if self._current is not None and self._current[0] == image_id:
            self._current = None

    def _read(self, data: bytes | bytearray, name: str) -> Image:
        """Read one uploaded file, or a .zip holding one DICOM series (the browser sends one file):
        unzipped within the limits, de-identified when asked, refused when its header declares more
        than ``max_voxels`` voxels (before the pixels are decoded)."""
        safe = Path(name.replace("\\", "/")).name or "upload"  # the file name only, never a path
        with tempfile.TemporaryDirectory(prefix="medfm-serve-") as tmp:
            path = Path(tmp) / safe
            if data[:4] == b"PK\x03\x04":
                path = Path(tmp) / "series"
                # at most max_expansion bytes out per byte in (above 64 MiB): a DICOM series zips ~2-4x
                limit = min(self.max_unzipped_bytes, max(2**26, self.max_expansion * len(data)))
                _unzip(data, path, name, self.max_zip_files, limit)
            else:
                path.write_bytes(data)
            voxels = decoded_voxels(path)
            if voxels is None:  # nothing is decoded whose size is not known first
                what = "no DICOM image file" if path.is_dir() else "not an image medfm reads (DICOM, NIfTI, NRRD/MHA, PNG, JPEG, BMP, TIFF)"
                raise InputError(f"{name}: {what}, or its header is unreadable")
            if path.is_dir():  # members that are not DICOM are not handed to the series reader
                for f in path.iterdir():
                    if _dicom_voxels(f) is None:
                        f.unlink()
            if voxels > self.max_voxels:
                raise TooLarge(f"{name}: its header declares {voxels} voxels, more than the service decodes ({self.max_voxels})")
            if voxels > BOMB_MIN_VOXELS and voxels > self.max_expansion * len(data):
                raise TooLarge(
                    f"{name}: {len(data)} bytes that declare {voxels} voxels ({voxels / len(data):.0f} per byte, more than "
                    f"{self.max_expansion}): refused as a decompression bomb"
                )
            if self.deid:
                path = _deidentify(path, Path(tmp) / "deid", name)
            try:
                image = read_image(path)
            except InputError as exc:
                raise InputError(str(exc).replace(str(path), name)) from None
        return image

    def _embed(self, session: Session, z: int) -> None:
        """Make slice ``z`` of ``session`` the model's current image (the encoder runs only when its
        embedding is not kept). Call with the lock held."""
        key = (session.id, z)
        if self.model.encoder_calls != self._calls_seen:
            self._current = None  # the model embedded an image behind the service's back
        if self._current == key:
            return
        if key in self._states:
            self.model.set_image_state(self._states[key])
            self._states.move_to_end(key)
        else:
            self.model.set_image(session.slice_array(z), modality=session.modality)
            self._calls_seen = self.model.encoder_calls
            self._states[key] = self.model.image_state()
            while len(self._states) > self.max_embeddings:
                self._states.popitem(last=False)
        self._current = key

    def session(self, image_id: str) -> Session:
        with self._lock:
            if image_id not in self._sessions:
                raise KeyError(image_id)
            self._sessions.move_to_end(image_id)
            return self._sessions[image_id]

    def display(self, image_id: str, z: int | None = None) -> bytes:
        """The 8-bit PNG of slice ``z`` (default: the middle one) that the viewer draws on."""
        session = self.session(image_id)
        return display_png(session.slice_array(session.check_slice(z)), session.window)

    def segment(
        self,
        image_id: str,
        box: Sequence[float] | None = None,
        points: Sequence[Sequence[float]] | None = None,
        labels: Sequence[int] | None = None,
        z: int | None = None,
    ) -> dict[str, Any]:
        """One mask on slice ``z`` (default: the middle one) for a box and/or points (x, y in pixels
        of the slice; labels 1 = inside, 0 = outside): base64 PNG, pixel area (and mm^2 when the
        file gives pixel spacing), the model's predicted IoU and the seconds the prompt took."""
        session = self.session(image_id)
        z = session.check_slice(z)
        hw = session.volume.shape[-2:]
        if box is None and not points:
            raise InputError("give a box [x0, y0, x1, y1] and/or points [[x, y], ...]")
        self._check_prompt_size(box, points, labels)
        b = None if box is None else check_box(box, hw)
        p = lab = None
        if points:
            p = check_points(points, hw)
            lab = np.ones(len(p), dtype=int) if labels is None else np.asarray(labels, dtype=int).reshape(-1)
            if lab.size != len(p) or not np.isin(lab, (0, 1)).all():
                raise InputError(f"{len(p)} points need {len(p)} labels, each 1 (inside) or 0 (outside); got {list(labels or [])}")
        with self._lock:
            if image_id not in self._sessions:
                raise KeyError(image_id)
            self._embed(session, z)
            t0 = time.perf_counter()
            mask = np.asarray(
                self.model.predict(
                    boxes=None if b is None else b[None],
                    points=None if p is None else p[None],
                    point_labels=None if lab is None else lab[None],
                )
            )[0].astype(bool)
            seconds = time.perf_counter() - t0
            scores = self.model.iou_scores
            if (image_id, z) in self._states:  # keep what the first prompt derived from the embedding
                self._states[(image_id, z)] = self.model.image_state()
        area = int(mask.sum())
        out: dict[str, Any] = {
            "id": image_id,
            "slice": z,
            "mask_png": base64.b64encode(mask_png(mask)).decode("ascii"),
            "area_px": area,
            "score": None if scores is None else float(np.asarray(scores).reshape(-1)[0]),
            "seconds": round(seconds, 4),
        }
        if session.spacing is not None:
            out["area_mm2"] = area * session.spacing[0] * session.spacing[1]
        return out

    def propagate(
        self,
        image_id: str,
        z: int | None = None,
        box: Sequence[float] | None = None,
        points: Sequence[Sequence[float]] | None = None,
        labels: Sequence[int] | None = None,
        margin: float = 3.0,
    ) -> dict[str, Any]:
        """Segment a volume from one prompt on slice ``z``: the neighbouring slices are prompted, in
        both directions, with the previous mask's box enlarged by ``margin`` px until a mask comes
        out empty (``medfm.tasks.segmentation.promptable.propagate_3d``). Returns the key slice,
        one base64 PNG per non-empty slice, voxel count and volume in mL when the spacing is known."""
        from medfm.tasks.segmentation.promptable import propagate_3d

        session = self.session(image_id)
        z = session.check_slice(z)
        if session.depth < 2:
            raise InputError(f"{session.name}: a 2D image has no slices to propagate through; use segment")
        if box is None and not points:
            raise InputError("give a box [x0, y0, x1, y1] and/or points [[x, y], ...] on the key slice")
        self._check_prompt_size(box, points, labels)
        if not 0.0 <= margin <= 100.0:
            raise InputError(f"margin must be 0..100 pixels, got {margin}")
        with self._lock:
            if image_id not in self._sessions:
                raise KeyError(image_id)
            t0 = time.perf_counter()
            masks = propagate_3d(
                self.model, session.volume, z, box=box, points=points or None, point_labels=labels,
                margin=margin, select=lambda k: self._embed(session, k),
            )
            seconds = time.perf_counter() - t0
        voxels = int(masks.sum())
        out: dict[str, Any] = {
            "id": image_id,
            "slice": z,
            "masks": {str(k): base64.b64encode(mask_png(masks[k])).decode("ascii") for k in np.flatnonzero(masks.any(axis=(1, 2)))},
            "voxels": voxels,
            "seconds": round(seconds, 3),
        }
        if session.spacing is not None and session.slice_mm is not None:
            out["volume_ml"] = voxels * session.spacing[0] * session.spacing[1] * session.slice_mm / 1000.0
        return out

    def _check_prompt_size(self, box: Any, points: Any, labels: Any) -> None:
        """At most ``max_points`` points (and labels) and one box of 4 numbers: the model lock is held
        while a prompt runs, so one request must not hold it for long."""
        if points is not None and len(points) > self.max_points:
            raise InputError(f"{len(points)} points in one prompt, more than the service takes ({self.max_points})")
        if labels is not None and len(labels) > self.max_points:
            raise InputError(f"{len(labels)} labels in one prompt, more than the service takes ({self.max_points})")
        if box is not None and len(box) != 4:
            raise InputError(f"one box [x0, y0, x1, y1] per prompt, got {len(box)} numbers")

    def images(self) -> list[dict[str, Any]]:
        with self._lock:
            return [s.describe() for s in self._sessions.values()]

    def drop(self, image_id: str) -> None:
        with self._lock:
            if image_id not in self._sessions:
                raise KeyError(image_id)
            del self._sessions[image_id]
            self._forget(image_id)
