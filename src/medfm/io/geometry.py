"""Geometry helpers shared by the readers: orientation codes, affines, describe().

Frame (see medfm.io.image): spacing/origin in (z, y, x) order; ``direction`` columns are the
LPS directions of the array's x, y and z axes. An affine here is the 4x4 matrix that maps
voxel indices (x, y, z, 1) to patient coordinates, in LPS unless its name says RAS.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medfm.io.image import Image

# Flipping the first two world axes turns LPS into RAS and back.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# Letter each LPS axis points toward, for the positive and the negative sign.
_POSITIVE = "LPS"
_NEGATIVE = "RAI"


def orientation_code(direction: np.ndarray, ndim: int = 3) -> str:
    """Three-letter code of where the x, y, z array axes point (e.g. 'LPS', 'RAS').

    Letters name the anatomical direction each axis *increases toward* (the convention of
    nibabel's ``aff2axcodes`` and ITK's DICOMOrientImageFilter); oblique axes get the
    closest letter. ``ndim=2`` gives the two in-plane letters.
    """
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    # Greedy global assignment (as nibabel's io_orientation): take the largest |cosine| left,
    # pair that array axis with that world axis, remove both, repeat. Oblique axes then never
    # share a letter.
    weights = np.abs(d[:, :ndim]).copy()
    world_of = [0] * ndim
    for _ in range(ndim):
        world, axis = np.unravel_index(int(np.argmax(weights)), weights.shape)
        world_of[int(axis)] = int(world)
        weights[world, :] = -1.0
        weights[:, axis] = -1.0
    letters = []
    for axis, world in enumerate(world_of):
        letters.append(_POSITIVE[world] if d[world, axis] >= 0 else _NEGATIVE[world])
    return "".join(letters)


def affine_lps(image: Image) -> np.ndarray:
    """4x4 affine (LPS) of a 3D image: voxel (x, y, z, 1) -> patient mm."""
    if image.ndim != 3:
        raise ValueError("affine_lps needs a 3D image")
    aff = np.eye(4)
    aff[:3, :3] = image.direction @ np.diag(image.spacing[::-1])
    aff[:3, 3] = image.origin[::-1]
    return aff


def geometry_from_affine_lps(affine: np.ndarray) -> tuple[tuple[float, float, float], tuple[float, float, float], np.ndarray]:
    """Split a 4x4 LPS affine into (spacing_zyx, origin_zyx, direction)."""
    affine = np.asarray(affine, dtype=float)
    cols = affine[:3, :3]
    spacing_xyz = np.linalg.norm(cols, axis=0)
    spacing_xyz[spacing_xyz == 0] = 1.0
    direction = cols / spacing_xyz
    spacing = tuple(float(s) for s in spacing_xyz[::-1])
    origin = tuple(float(o) for o in affine[:3, 3][::-1])
    return spacing, origin, direction  # type: ignore[return-value]


def has_patient_geometry(image: Image) -> bool:
    """True when spacing/origin/direction locate the image in patient space (not pixel units)."""
    return image.meta.get("frame", "patient") == "patient"


def describe(image: Image) -> dict[str, Any]:
    """Summary used by ``medfm info``: modality, shape, dtype, spacing, origin, orientation, range.

    ``orientation`` is a code like 'LPS' (see ``orientation_code``), or None when the image
    has no patient geometry (plain photos, projection images without position). Values are
    plain Python types, ready for JSON.
    """
    arr = image.array
    finite = arr[np.isfinite(arr)] if np.issubdtype(arr.dtype, np.floating) else arr
    vmin = finite.min().item() if finite.size else None
    vmax = finite.max().item() if finite.size else None
    patient = has_patient_geometry(image)
    info: dict[str, Any] = {
        "path": image.meta.get("path"),
        "format": image.meta.get("format"),
        "modality": image.modality,
        "shape": [int(s) for s in arr.shape],
        "channels": image.channels,
        "spatial_dims": image.ndim,
        "dtype": str(arr.dtype),
        "spacing": [round(s, 6) for s in image.spacing],
        "spacing_unit": "mm" if image.meta.get("spacing_known", patient) else "pixel",
        "origin": [round(o, 6) for o in image.origin],
        "orientation": orientation_code(image.direction, image.ndim) if patient else None,
        "value_range": [vmin, vmax],
    }
    window = image.meta.get("window")
    if window is not None:
        info["window"] = [float(window[0]), float(window[1])]
    return info


def geometry_differences(a: Image, b: Image) -> list[str]:
    """What differs between the grids of ``a`` and ``b`` (empty when they match), each item
    naming ``a``'s value first: shape, spacing (rtol 1e-3), origin (1% of ``b``'s smallest
    spacing), direction. Used wherever a mask must sit voxel-for-voxel on another image."""
    if a.spatial_shape != b.spatial_shape:
        return [f"shape {a.spatial_shape} vs {b.spatial_shape}"]
    problems = []
    if not np.allclose(a.spacing, b.spacing, rtol=1e-3, atol=1e-5):
        problems.append(f"spacing {a.spacing} vs {b.spacing} mm")
    if not np.allclose(a.origin, b.origin, atol=1e-2 * max(min(b.spacing), 1e-3)):
        problems.append(f"origin {a.origin} vs {b.origin} mm")
    if not np.allclose(a.direction, b.direction, atol=1e-4):
        problems.append("direction differs")
    return problems
