"""Fixtures for the readers: real files (shared data, pydicom's and pydicom-data's test files)
and a comparison against SimpleITK, the reference reader."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medfm.io.image import Image


def _pydicom_test_dir() -> Path:
    import pydicom.data

    return Path(pydicom.data.__file__).parent / "test_files"


def _data_store_dir() -> Path | None:
    # pydicom-data installs its files as the package ``data_store``.
    try:
        import data_store
    except ImportError:
        return None
    return Path(data_store.__file__).parent / "data"


@pytest.fixture(scope="session")
def pydicom_file() -> Callable[[str], Path]:
    """Path of a file bundled with pydicom, found on disk (never through pydicom's downloader)."""

    def get(name: str) -> Path:
        hits = sorted(_pydicom_test_dir().rglob(name))
        if not hits:
            pytest.skip(f"pydicom test file {name} not installed")
        return hits[0]

    return get


@pytest.fixture(scope="session")
def pydicom_data_file() -> Callable[[str], Path]:
    """Path of a file from the pydicom-data package (skips when the package is absent)."""

    def get(name: str) -> Path:
        root = _data_store_dir()
        if root is None:
            pytest.skip("pydicom-data is not installed (pip install pydicom-data)")
        path = root / name
        if not path.is_file():
            pytest.skip(f"pydicom-data file {name} not present")
        return path

    return get


@pytest.fixture(scope="session")
def ct_series(shared_data: Path) -> Path:
    path = shared_data / "dicom_ct3slice_seg" / "ct"
    if not path.is_dir():
        pytest.skip("dicom_ct3slice_seg not in the shared data")
    return path


def sitk_expected(sitk_image: Any) -> dict[str, Any]:
    """SimpleITK's reading expressed in medfm's frame: array (C, Z, Y, X), (z, y, x) order."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(sitk_image)
    arr = np.moveaxis(arr, -1, 0) if sitk_image.GetNumberOfComponentsPerPixel() > 1 else arr[None]
    dim = sitk_image.GetDimension()
    return {
        "array": arr,
        "spacing": np.asarray(sitk_image.GetSpacing())[::-1],
        "origin": np.asarray(sitk_image.GetOrigin())[::-1],
        "direction": np.asarray(sitk_image.GetDirection()).reshape(dim, dim),
    }


def _flip_to(ours: Image, direction_ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Our array/origin/direction with axes flipped where the reference axis points the other way.

    Two readers may describe the same voxels with an axis reversed (e.g. slice order along
    +normal vs -normal); flipping the axis and moving the origin to its other end makes the
    descriptions comparable voxel by voxel.
    """
    arr, direction = ours.array, ours.direction.copy()
    origin_xyz = np.asarray(ours.origin[::-1], dtype=float)
    spacing_xyz = np.asarray(ours.spacing[::-1], dtype=float)
    for axis in range(3):
        if float(direction[:, axis] @ direction_ref[:, axis]) < 0:
            n = arr.shape[3 - axis]
            origin_xyz = origin_xyz + direction[:, axis] * spacing_xyz[axis] * (n - 1)
            direction[:, axis] = -direction[:, axis]
            arr = np.flip(arr, axis=3 - axis)
    return arr, origin_xyz[::-1], direction


@pytest.fixture(scope="session")
def assert_matches_sitk() -> Callable[..., None]:
    """Check an Image against SimpleITK's reading of the same file(s): shape, geometry, values.

    ``allow_flip``: accept an axis described in the opposite direction (same voxels in space).
    ``check_z_spacing``: False for single slices, where readers pick the slab thickness differently.
    ``value_atol``: for lossy codecs decoded by different libraries.
    """

    def check(
        ours: Image,
        sitk_image: Any,
        allow_flip: bool = False,
        check_z_spacing: bool = True,
        value_atol: float = 0.0,
    ) -> None:
        exp = sitk_expected(sitk_image)
        if ours.ndim == 2:
            # SimpleITK reads a 2D DICOM as one 3D slice: compare the in-plane part.
            assert exp["array"].shape[1] == 1
            np.testing.assert_allclose(ours.spacing, exp["spacing"][1:], rtol=1e-6)
            np.testing.assert_allclose(ours.array.astype(np.float64), exp["array"][:, 0].astype(np.float64), atol=value_atol)
            return
        arr, origin, direction = _flip_to(ours, exp["direction"]) if allow_flip else (ours.array, np.asarray(ours.origin), ours.direction)
        assert arr.shape == exp["array"].shape
        np.testing.assert_allclose(direction, exp["direction"], atol=1e-6)
        np.testing.assert_allclose(origin, exp["origin"], atol=1e-4)
        sp = slice(None) if check_z_spacing else slice(1, None)
        np.testing.assert_allclose(np.asarray(ours.spacing)[sp], exp["spacing"][sp], rtol=1e-6)
        np.testing.assert_allclose(arr.astype(np.float64), exp["array"].astype(np.float64), atol=value_atol)

    return check
