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
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import InputError
from medfm.io import Image, read_image
from medfm.io.window import display_uint8, percentile_range, window_range
from medfm.models.base import ModelAdapter
from medfm.tasks.segmentation.promptable import check_box, check_points


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


def _unzip(data: bytes, folder: Path, name: str, max_files: int = 5000) -> None:
    """Extract a zip (e.g. a DICOM series) into ``folder``: regular files only, each under its
    own index (member paths are never used, so nothing lands outside ``folder``)."""
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if not members:
                raise InputError(f"{name}: the zip holds no files")
            if len(members) > max_files:
                raise InputError(f"{name}: the zip holds {len(members)} files, more than {max_files}")
            folder.mkdir()
            for k, m in enumerate(members):
                (folder / f"{k:05d}_{Path(m.filename).name}").write_bytes(zf.read(m))
    except zipfile.BadZipFile as exc:
        raise InputError(f"{name}: not a readable zip ({exc})") from None


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
    """

    def __init__(
        self, model: ModelAdapter, max_images: int = 16, max_bytes: int = 512 * 2**20, max_embeddings: int = 64
    ) -> None:
        model.require("segmenter", "the segmentation service")
        if max_images < 1 or max_embeddings < 1:
            raise InputError(f"max_images and max_embeddings must be >= 1, got {max_images}, {max_embeddings}")
        self.model = model
        self.max_images = max_images
        self.max_embeddings = max_embeddings
        self.max_bytes = max_bytes
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._states: OrderedDict[tuple[str, int], Any] = OrderedDict()  # (image id, slice) -> embedding
        self._lock = threading.Lock()  # one model: prompts and embeddings run one at a time
        self._current: tuple[str, int] | None = None  # the slice whose embedding the model holds now
        self._calls_seen = model.encoder_calls  # the model's encoder runs as last seen

    @property
    def model_id(self) -> str:
        return str(self.model.card.id)

    def add_image(self, data: bytes, name: str) -> dict[str, Any]:
        """Read an uploaded file (PNG/JPEG/TIFF/DICOM/NIfTI/NRRD...), embed its middle slice (the
        others when first prompted) and describe it. The same bytes uploaded again reuse it."""
        if not data:
            raise InputError(f"{name}: the upload is empty")
        if len(data) > self.max_bytes:
            raise InputError(f"{name}: {len(data)} bytes is more than the service accepts ({self.max_bytes})")
        key = hashlib.sha256(data).hexdigest()[:16]
        with self._lock:
            if key in self._sessions:
                self._sessions.move_to_end(key)
                return self._sessions[key].describe()
        image = self._read(data, name)
        volume = np.asarray(image.array)
        volume = volume[:, None] if volume.ndim == 3 else volume
        spacing, slice_mm = None, None
        if image.meta.get("spacing_known", True) is not False:
            spacing = (float(image.spacing[-2]), float(image.spacing[-1]))
            slice_mm = float(image.spacing[0]) if len(image.spacing) == 3 else None
        session = Session(key, name, volume, spacing, display_window(image, volume), slice_mm, image.modality)
        with self._lock:
            self._embed(session, session.check_slice(None))  # first: an image the model refuses is not kept
            self._sessions[key] = session
            while len(self._sessions) > self.max_images:
                old, _ = self._sessions.popitem(last=False)
                for k in [k for k in self._states if k[0] == old]:
                    del self._states[k]
                if self._current is not None and self._current[0] == old:
                    self._current = None
        return session.describe()

    @staticmethod
    def _read(data: bytes, name: str) -> Image:
        """Read one uploaded file, or a .zip holding one DICOM series (the browser sends one file)."""
        safe = Path(name.replace("\\", "/")).name or "upload"  # the file name only, never a path
        with tempfile.TemporaryDirectory(prefix="medfm-serve-") as tmp:
            path = Path(tmp) / safe
            if data[:4] == b"PK\x03\x04":
                path = Path(tmp) / "series"
                _unzip(data, path, name)
            else:
                path.write_bytes(data)
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

    def images(self) -> list[dict[str, Any]]:
        with self._lock:
            return [s.describe() for s in self._sessions.values()]

    def drop(self, image_id: str) -> None:
        with self._lock:
            if image_id not in self._sessions:
                raise KeyError(image_id)
            del self._sessions[image_id]
            for k in [k for k in self._states if k[0] == image_id]:
                del self._states[k]
            if self._current is not None and self._current[0] == image_id:
                self._current = None
