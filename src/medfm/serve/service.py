"""Interactive segmentation sessions behind the REST service: images in, prompted masks out.

``SegmentationService`` holds one promptable model (a zoo card with the ``segmenter``
capability, e.g. SAM / MedSAM) and the images uploaded to it. The image encoder runs once per
image (its embedding is kept, least recently used first out); every box or point prompt then
only runs the prompt encoder and mask decoder, which is what makes clicking in the viewer
interactive. Plain Python, no web framework: ``medfm.serve.app`` wraps it in FastAPI.
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
from medfm.io.window import apply_window
from medfm.tasks.segmentation.promptable import check_box, check_points


@dataclass
class Session:
    """One uploaded image: its 2D slice (C, H, W), display rendering and cached embedding."""

    id: str
    name: str
    array: np.ndarray  # (C, H, W) as read (HU for CT)
    spacing: tuple[float, float] | None  # mm per pixel (y, x); None when the file holds none (PNG)
    slice: int | None  # the slice taken from a volume, else None
    depth: int | None  # the volume's number of slices, else None
    display: bytes  # 8-bit PNG for the viewer
    state: Any = None  # the model's image embedding (adapter-specific), None until embedded

    def describe(self) -> dict[str, Any]:
        c, h, w = self.array.shape
        return {
            "id": self.id,
            "name": self.name,
            "width": w,
            "height": h,
            "channels": c,
            "spacing_mm": list(self.spacing) if self.spacing else None,
            "slice": self.slice,
            "depth": self.depth,
        }


def display_png(image: Image, array: np.ndarray) -> bytes:
    """8-bit PNG of a (C, H, W) slice: the file's VOI window when it has one (DICOM), uint8 as
    is, anything else scaled between its 1st and 99th percentiles."""
    from PIL import Image as PILImage

    arr = np.asarray(array)
    if arr.shape[0] not in (1, 3):
        arr = arr[:1]
    window = image.meta.get("window")
    if arr.dtype == np.uint8:
        out = arr
    elif window is not None:
        out = np.round(apply_window(arr.astype(np.float32), float(window[0]), float(window[1])) * 255).astype(np.uint8)
    else:
        a = arr.astype(np.float32)
        lo, hi = np.percentile(a, [1, 99]) if a.size else (0.0, 1.0)
        hi = hi if hi > lo else lo + 1.0
        out = np.round(np.clip((a - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    pil = PILImage.fromarray(np.ascontiguousarray(out[0] if out.shape[0] == 1 else np.moveaxis(out, 0, -1)))
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def mask_png(mask: np.ndarray) -> bytes:
    """A bool (H, W) mask as an 8-bit PNG (0 / 255)."""
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(np.asarray(mask, dtype=np.uint8) * 255).save(buf, format="PNG")
    return buf.getvalue()


class SegmentationService:
    """Uploaded images and prompted masks for one promptable model (thread-safe).

    ``max_images``: embeddings kept in memory (a SAM ViT-B embedding is 4 MiB); the least
    recently used image is dropped first and must be uploaded again.
    """

    def __init__(self, model: Any, max_images: int = 16, max_bytes: int = 512 * 2**20) -> None:
        model.require("segmenter", "the segmentation service")
        if max_images < 1:
            raise InputError(f"max_images must be >= 1, got {max_images}")
        self.model = model
        self.max_images = max_images
        self.max_bytes = max_bytes
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()  # one model: prompts and embeddings run one at a time
        self._current: str | None = None  # the image whose embedding the model holds now

    @property
    def model_id(self) -> str:
        return str(self.model.card.id)

    def add_image(self, data: bytes, name: str, slice_index: int | None = None) -> dict[str, Any]:
        """Read an uploaded file (PNG/JPEG/TIFF/DICOM/NIfTI/NRRD...), keep one 2D slice (``slice_index``
        of a volume, default its middle), embed it, and describe it. The same bytes (and slice)
        uploaded again reuse the session."""
        if not data:
            raise InputError(f"{name}: the upload is empty")
        if len(data) > self.max_bytes:
            raise InputError(f"{name}: {len(data)} bytes is more than the service accepts ({self.max_bytes})")
        key = hashlib.sha256(data).hexdigest()[:16] + ("" if slice_index is None else f"-z{int(slice_index)}")
        with self._lock:
            if key in self._sessions:
                self._sessions.move_to_end(key)
                return self._sessions[key].describe()
        image = self._read(data, name)
        arr, z, depth = self._slice(image, name, slice_index)
        spacing = None
        if image.meta.get("spacing_known", True) is not False:
            spacing = (float(image.spacing[-2]), float(image.spacing[-1]))
        session = Session(key, name, arr, spacing, z, depth, display_png(image, arr))
        with self._lock:
            self._embed(session)
            self._sessions[key] = session
            while len(self._sessions) > self.max_images:
                old, _ = self._sessions.popitem(last=False)
                if old == self._current:
                    self._current = None
        return session.describe()

    @staticmethod
    def _read(data: bytes, name: str) -> Image:
        safe = Path(name.replace("\\", "/")).name or "upload"  # the file name only, never a path
        with tempfile.TemporaryDirectory(prefix="medfm-serve-") as tmp:
            path = Path(tmp) / safe
            path.write_bytes(data)
            try:
                image = read_image(path)
            except InputError as exc:
                raise InputError(str(exc).replace(str(path), name)) from None
        return image

    @staticmethod
    def _slice(image: Image, name: str, slice_index: int | None) -> tuple[np.ndarray, int | None, int | None]:
        arr = np.asarray(image.array)
        if arr.ndim == 3:
            if slice_index not in (None, 0):
                raise InputError(f"{name}: a 2D image has no slice {slice_index}")
            return arr, None, None
        depth = arr.shape[1]
        z = depth // 2 if slice_index is None else int(slice_index)
        if not 0 <= z < depth:
            raise InputError(f"{name}: slice {z} is outside the volume (0..{depth - 1})")
        return arr[:, z], (z if depth > 1 else None), (depth if depth > 1 else None)

    def _embed(self, session: Session) -> None:
        """Make ``session``'s embedding the model's current one (runs the encoder at most once)."""
        if self._current == session.id:
            return
        restore = getattr(self.model, "set_image_state", None)
        if session.state is not None and restore is not None:
            restore(session.state)
        else:
            self.model.set_image(session.array)
            keep = getattr(self.model, "image_state", None)
            session.state = keep() if keep is not None else None
        self._current = session.id

    def session(self, image_id: str) -> Session:
        with self._lock:
            if image_id not in self._sessions:
                raise KeyError(image_id)
            self._sessions.move_to_end(image_id)
            return self._sessions[image_id]

    def segment(
        self,
        image_id: str,
        box: Sequence[float] | None = None,
        points: Sequence[Sequence[float]] | None = None,
        labels: Sequence[int] | None = None,
    ) -> dict[str, Any]:
        """One mask for a box and/or points (x, y in pixels of the displayed slice; labels 1 =
        inside, 0 = outside): base64 PNG, pixel area (and mm^2 when the file gives pixel spacing),
        the model's predicted IoU and the seconds the prompt took."""
        session = self.session(image_id)
        hw = session.array.shape[-2:]
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
            self._embed(session)
            t0 = time.perf_counter()
            mask = np.asarray(
                self.model.predict(
                    boxes=None if b is None else b[None],
                    points=None if p is None else p[None],
                    point_labels=None if lab is None else lab[None],
                )
            )[0].astype(bool)
            seconds = time.perf_counter() - t0
            scores = getattr(self.model, "iou_scores", None)
            if session.state is not None:  # keep what the first prompt derived from the embedding
                session.state = self.model.image_state()
        area = int(mask.sum())
        out: dict[str, Any] = {
            "id": image_id,
            "mask_png": base64.b64encode(mask_png(mask)).decode("ascii"),
            "area_px": area,
            "score": None if scores is None else float(np.asarray(scores).reshape(-1)[0]),
            "seconds": round(seconds, 4),
        }
        if session.spacing is not None:
            out["area_mm2"] = area * session.spacing[0] * session.spacing[1]
        return out

    def images(self) -> list[dict[str, Any]]:
        with self._lock:
            return [s.describe() for s in self._sessions.values()]

    def drop(self, image_id: str) -> None:
        with self._lock:
            if image_id not in self._sessions:
                raise KeyError(image_id)
            del self._sessions[image_id]
            if self._current == image_id:
                self._current = None
