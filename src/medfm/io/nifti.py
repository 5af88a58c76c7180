"""NIfTI read/write with nibabel, converted between NIfTI's RAS affine and medfm's LPS frame.

Reading never resamples or flips voxels: NIfTI data indexed [i, j, k(, t)] becomes the
array (C, Z, Y, X) with x = i, y = j, z = k (C = t, or 1), and the affine is converted to
LPS (negate the first two world rows) and split into spacing, origin and direction. This is
what SimpleITK does, so a NIfTI and the DICOM series it came from give the same Image.
``meta['nifti']`` keeps the source affine, qform/sform codes and units so that
``write_nifti`` restores the source header geometry exactly.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import InputError, OutputError
from medfm.io.geometry import LPS_TO_RAS, geometry_from_affine_lps
from medfm.io.image import Image

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def _nib() -> Any:
    import nibabel

    return nibabel


def _load(path: Path) -> Any:
    """nibabel image; files whose name lacks .nii/.nii.gz are parsed from their bytes."""
    nib = _nib()
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        return nib.load(str(path))
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    cls = nib.Nifti2Image if raw[4:8] == b"n+2\x00" else nib.Nifti1Image
    return cls.from_bytes(raw)


def read_nifti(path: str | Path) -> Image:
    """Read a .nii / .nii.gz file: 3D -> (1, Z, Y, X); 4D (or 5D vector) -> channels (T, Z, Y, X).

    Scaled data (scl_slope / scl_inter) is returned as float; otherwise the stored dtype.
    2D files (a single slice) are returned with Z = 1.
    """
    path = Path(path)
    nib = _nib()
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        img = _load(path)
        data = np.asarray(img.dataobj)
    except Exception as exc:
        # nibabel's messages can span lines ("... - could the file be damaged?"): one line here
        raise InputError(f"{path}: not a readable NIfTI file ({type(exc).__name__}: {' '.join(str(exc).split())})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(f"{path}: is a {type(img).__name__}, not NIfTI")
    if data.ndim < 2 or data.ndim > 5:
        raise InputError(f"{path}: NIfTI with {data.ndim} dimensions is not supported (2 to 5)")
    while data.ndim < 3:
        data = data[..., None]
    if data.ndim == 5:
        if data.shape[3] != 1:
            raise InputError(f"{path}: 5D NIfTI with time and vector axes ({data.shape}) is not supported")
        data = data[:, :, :, 0, :]
    if data.ndim == 3:
        data = data[..., None]
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    array = np.ascontiguousarray(np.transpose(data, (3, 2, 1, 0)))  # (i, j, k, c) -> (c, k, j, i)
    affine_ras = np.asarray(img.affine, dtype=float)
    spacing, origin, direction = geometry_from_affine_lps(LPS_TO_RAS @ affine_ras)
    header = img.header
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    units = header.get_xyzt_units()
    meta = {
        "path": str(path),
        "format": "nifti",
        "frame": "patient",
        "nifti": {
            "affine": affine_ras.tolist(),
            "qform": None if qform is None else np.asarray(qform).tolist(),
            "qform_code": int(qcode),
            "sform": None if sform is None else np.asarray(sform).tolist(),
            "sform_code": int(scode),
            "xyzt_units": list(units),
            "dtype": str(header.get_data_dtype()),
            "version": 2 if isinstance(img, nib.Nifti2Image) else 1,
            "zooms": [float(z) for z in header.get_zooms()],
        },
    }
    intent = header.get_intent()[0]
    modality = "SEG" if intent == "label" else "OT"
    return Image(array, spacing, origin, direction, modality, meta)


def _affine_ras_from_image(image: Image) -> np.ndarray:
    spacing = image.spacing if image.ndim == 3 else (1.0, *image.spacing)
    origin = image.origin if image.ndim == 3 else (0.0, *image.origin)
    aff = np.eye(4)
    aff[:3, :3] = image.direction @ np.diag(spacing[::-1])
    aff[:3, 3] = origin[::-1]
    return LPS_TO_RAS @ aff


def write_nifti(image: Image, path: str | Path, overwrite: bool = False) -> Path:
    """Write an Image as NIfTI (.nii or .nii.gz), restoring the source header geometry.

    When ``image.meta['nifti']`` holds a source affine that matches the image's geometry,
    that affine and its qform/sform codes are written unchanged (exact round trip);
    otherwise the affine is built from spacing/origin/direction (codes: scanner). Channels
    become the 4th axis. Refuses an existing ``path`` unless ``overwrite``.
    """
    from medfm._paths import atomic_path

    nib = _nib()
    path = Path(path)
    if not str(path).endswith(NIFTI_SUFFIXES):
        raise OutputError(f"{path}: NIfTI file names end with .nii or .nii.gz")
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: exists; pass overwrite=True (--force) to replace it")
    array = image.array if image.ndim == 3 else image.array[:, None]
    data = np.transpose(array, (3, 2, 1, 0))  # (c, k, j, i) -> (i, j, k, c)
    if data.shape[3] == 1:
        data = data[..., 0]
    if data.dtype == bool:
        data = data.astype(np.uint8)
    affine = _affine_ras_from_image(image)
    src = image.meta.get("nifti") or {}
    qcode, scode, qform, sform = 1, 1, affine, affine
    if src.get("affine") is not None and image.ndim == 3 and np.allclose(src["affine"], affine, atol=1e-4):
        affine = np.asarray(src["affine"], dtype=float)
        qcode, scode = int(src.get("qform_code", 1)), int(src.get("sform_code", 1))
        qform = np.asarray(src["qform"]) if src.get("qform") is not None else affine
        sform = np.asarray(src["sform"]) if src.get("sform") is not None else affine
    cls = nib.Nifti2Image if src.get("version") == 2 else nib.Nifti1Image
    img = cls(np.ascontiguousarray(data), affine)
    img.header.set_data_dtype(data.dtype)
    img.set_qform(qform if qcode else None, code=qcode)
    img.set_sform(sform if scode else None, code=scode)
    zooms = src.get("zooms")
    if data.ndim == 4 and zooms is not None and len(zooms) >= 4:
        img.header.set_zooms((*img.header.get_zooms()[:3], zooms[3]))
    units = src.get("xyzt_units") or ("mm", "sec")
    img.header.set_xyzt_units(*units)
    payload = img.to_bytes()
    if str(path).endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return path
