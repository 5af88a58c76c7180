"""``read_image``: one entry point that picks the reader from the file's content, then its name."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

from medfm.errors import ConfigError, InputError
from medfm.io.dicom import is_dicom_seg, read_dicom, read_dicom_series
from medfm.io.image import Image
from medfm.io.itk import ITK_SUFFIXES, read_itk
from medfm.io.nifti import read_nifti
from medfm.io.raster import RASTER_SUFFIXES, read_raster


def _sniff(path: Path) -> str | None:
    """Format from the first bytes, or None when they say nothing."""
    try:
        with open(path, "rb") as f:
            head = f.read(352)
    except OSError as exc:
        raise InputError(f"{path}: cannot open ({exc.strerror or exc})") from exc
    if not head:
        raise InputError(f"{path}: file is empty")
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n") or head.startswith(b"\xff\xd8\xff") or head.startswith(b"BM"):
        return "raster"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"NRRD"):
        return "itk"
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"n+2\x00") or head[4:12] == b"n+2\x00\r\n\x1a\n":
        return "nifti"
    if head.startswith(b"\x1f\x8b"):
        try:
            with gzip.open(path, "rb") as g:
                inner = g.read(352)
        except (OSError, EOFError):
            return None
        if len(inner) >= 348 and inner[344:348] in (b"n+1\x00", b"n+2\x00"):
            return "nifti"
    if head.startswith(b"PK\x03\x04"):
        return "npz"
    return None


def read_image(path: str | Path, **kw: Any) -> Image:
    """Read any supported medical image into medfm's Image (frame documented in medfm.io.image).

    A folder is read as one DICOM series (``series_uid=`` picks one of several); files are
    recognised by content, then by suffix: DICOM, NIfTI (.nii/.nii.gz), NRRD/MetaImage
    (SimpleITK), PNG/JPEG/BMP/TIFF. Extra keyword arguments go to the chosen reader.
    Unknown or unreadable input raises InputError naming the file.

    >>> img = read_image("ct_series_folder/")  # doctest: +SKIP
    >>> img.array.shape, img.spacing            # doctest: +SKIP
    ((1, 3, 512, 512), (1.0, 0.8105, 0.8105))
    """
    path = Path(path).expanduser()
    if path.is_dir():
        return read_dicom_series(path, **kw)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    if kw:
        raise ConfigError(f"{path}: option(s) {', '.join(sorted(kw))} only apply to a DICOM series folder")
    kind = _sniff(path)
    name = path.name.lower()
    if kind is None:
        if name.endswith((".nii", ".nii.gz")):
            kind = "nifti"
        elif name.endswith(ITK_SUFFIXES):
            kind = "itk"
        elif name.endswith(RASTER_SUFFIXES):
            kind = "raster"
        elif name.endswith((".dcm", ".dicom", ".ima")) or "." not in name:
            kind = "dicom-nopreamble"
    if kind == "npz":
        raise InputError(f"{path}: is a zip/npz archive, not an image; MedMNIST archives are read with read_medmnist_npz")
    if kind in ("raster", "tiff"):
        if kind == "tiff" and not name.endswith((".tif", ".tiff")):
            raise InputError(f"{path}: TIFF content with a non-TIFF name; rename it to .tif")
        return read_raster(path)
    if kind == "nifti":
        return read_nifti(path)
    if kind == "itk":
        return read_itk(path)
    if kind == "dicom":
        if is_dicom_seg(path):
            # On its own grid; read_dicom_seg(path, reference) aligns it to the series.
            from medfm.io.dicom_seg import read_dicom_seg

            return read_dicom_seg(path)
        return read_dicom(path)
    if kind == "dicom-nopreamble":
        # Old files without the 128-byte preamble: let pydicom decide; its error names the file.
        return read_dicom(path)
    raise InputError(
        f"{path}: unrecognised image format (expected DICOM, NIfTI .nii/.nii.gz, NRRD/MHA, PNG, JPEG or TIFF)"
    )
