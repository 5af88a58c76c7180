"""Photos and exported slices: PNG / JPEG / BMP with Pillow, TIFF with tifffile.

Rasters carry no patient geometry: spacing is 1 pixel (``meta['spacing_known'] = False``)
unless the caller knows better (e.g. HC18's pixel size from its CSV).
Grayscale -> 1 channel, colour -> 3 (alpha dropped); 8- and 16-bit depths are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import InputError, OutputError
from medfm.io.image import Image

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _channels_first(arr: np.ndarray, path: Path) -> np.ndarray:
    """(Y, X) -> (1, Y, X); (Y, X, 2|4) drops alpha; (Y, X, 3) -> (3, Y, X)."""
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3 and arr.shape[-1] in (1, 2, 3, 4):
        keep = {1: 1, 2: 1, 3: 3, 4: 3}[arr.shape[-1]]
        return np.ascontiguousarray(np.moveaxis(arr[..., :keep], -1, 0))
    raise InputError(f"{path}: unsupported raster layout {arr.shape} (expected a 2D grey or colour image)")


def _read_tiff(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        arr = series.asarray()
        axes = series.axes
    meta: dict[str, Any] = {"tiff_axes": axes}
    if arr.ndim == 3 and axes[-1] in "SC" and arr.shape[-1] in (1, 2, 3, 4):
        return _channels_first(arr, path), meta
    if arr.ndim == 3 and axes[-1] not in "SC":
        # A page stack (Z, Y, X): one channel, pages along z.
        return arr[None], meta
    return _channels_first(arr, path), meta


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        im.load()
        mode = im.mode
        if mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif mode == "1":
            im = im.convert("L")
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        elif mode == "PA":
            im = im.convert("LA")
        arr = np.asarray(im)
    if mode in ("I;16", "I;16B", "I;16L"):
        arr = arr.astype(np.uint16)
    return arr


def read_raster(path: str | Path) -> Image:
    """Read PNG / JPEG / BMP (Pillow) or TIFF (tifffile, incl. 16-bit and page stacks).

    Returns (C, Y, X) with C = 1 (grey) or 3 (RGB; alpha dropped), source dtype kept;
    a multi-page grey TIFF gives (1, Z, Y, X).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    meta: dict[str, Any] = {"path": str(path), "frame": "image", "spacing_known": False}
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            arr, extra = _read_tiff(path)
            meta.update(extra, format="tiff")
        else:
            raw = _read_pillow(path)
            arr = _channels_first(raw, path)
            meta["format"] = path.suffix.lower().lstrip(".").replace("jpg", "jpeg") or "raster"
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from exc
    nd = arr.ndim - 1
    return Image(arr, (1.0,) * nd, (0.0,) * nd, np.eye(3), "OT", meta)


def write_png(array_or_image: np.ndarray | Image, path: str | Path, overwrite: bool = False) -> Path:
    """Write a 2D image as PNG.

    Accepts an Image or an array (Y, X) or channel-first (C, Y, X) with C = 1 or 3. dtypes:
    bool -> 0/255; uint8 as is; uint16 kept 16-bit for grey; other integers if they fit
    uint8 (labels); floats in [0, 1] -> round(255 x) (use ``apply_window`` first for HU).
    Refuses an existing ``path`` unless ``overwrite``.
    """
    from PIL import Image as PILImage

    from medfm._paths import atomic_path

    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: exists; pass overwrite=True (--force) to replace it")
    arr = array_or_image.array if isinstance(array_or_image, Image) else np.asarray(array_or_image)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] not in (1, 3):
        raise InputError(f"write_png needs (Y, X) or (C, Y, X) with C in (1, 3), got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
            raise InputError("write_png: float values must lie in [0, 1]; window them first (medfm.io.apply_window)")
        arr = np.round(arr * 255).astype(np.uint8)
    elif arr.dtype == np.uint16 and arr.shape[0] == 1:
        pass
    elif arr.dtype.kind in "iu":
        if arr.min() < 0 or arr.max() > 255:
            raise InputError(f"write_png: integer values {arr.min()}..{arr.max()} do not fit 8 bits (uint16 only for grey)")
        arr = arr.astype(np.uint8)
    else:
        raise InputError(f"write_png: unsupported dtype {arr.dtype}")
    # Pillow picks "L" for uint8, "I;16" for uint16 and "RGB" for (Y, X, 3) uint8.
    im = PILImage.fromarray(np.ascontiguousarray(arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)))
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
    return path
