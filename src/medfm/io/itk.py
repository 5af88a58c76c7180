"""Formats read through SimpleITK (NRRD, MetaImage, ...) and conversions to/from sitk.Image.

SimpleITK orders spacing/origin as (x, y, z) and arrays as (z, y, x[, c]); medfm orders them
(z, y, x) and (C, Z, Y, X). Both use LPS and the same direction matrix (columns = axes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import InputError
from medfm.io.image import Image

ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


def _sitk() -> Any:
    import SimpleITK

    return SimpleITK


def from_sitk(sitk_image: Any, meta: dict[str, Any] | None = None, modality: str = "OT") -> Image:
    """Convert a 2D or 3D ``SimpleITK.Image`` (scalar or vector pixels) to an Image."""
    sitk = _sitk()
    dim = sitk_image.GetDimension()
    if dim not in (2, 3):
        raise InputError(f"{(meta or {}).get('path', 'image')}: {dim}D images are not supported (2D or 3D)")
    arr = sitk.GetArrayFromImage(sitk_image)
    if sitk_image.GetNumberOfComponentsPerPixel() > 1:
        arr = np.moveaxis(arr, -1, 0)
    else:
        arr = arr[None]
    spacing = tuple(sitk_image.GetSpacing())[::-1]
    origin = tuple(sitk_image.GetOrigin())[::-1]
    d = np.asarray(sitk_image.GetDirection(), dtype=float).reshape(dim, dim)
    direction = np.eye(3)
    direction[:dim, :dim] = d
    return Image(np.ascontiguousarray(arr), spacing, origin, direction, modality, dict(meta or {}))


def to_sitk(image: Image) -> Any:
    """Convert an Image to ``SimpleITK.Image`` (channels > 1 become vector pixels)."""
    sitk = _sitk()
    arr = image.array
    if image.channels == 1:
        out = sitk.GetImageFromArray(arr[0])
    else:
        out = sitk.GetImageFromArray(np.moveaxis(arr, 0, -1), isVector=True)
    out.SetSpacing(tuple(float(s) for s in image.spacing[::-1]))
    out.SetOrigin(tuple(float(o) for o in image.origin[::-1]))
    dim = image.ndim
    out.SetDirection(tuple(float(v) for v in image.direction[:dim, :dim].ravel()))
    return out


def read_itk(path: str | Path) -> Image:
    """Read NRRD / MetaImage (.nrrd, .nhdr, .mha, .mhd) or any other SimpleITK format."""
    path = Path(path)
    sitk = _sitk()
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        img = sitk.ReadImage(str(path))
    except Exception as exc:
        first = str(exc).strip().splitlines()
        raise InputError(f"{path}: SimpleITK cannot read it ({first[-1] if first else type(exc).__name__})") from exc
    fmt = path.name.split(".", 1)[-1].lower() if "." in path.name else "itk"
    return from_sitk(img, {"path": str(path), "format": fmt, "frame": "patient"})
