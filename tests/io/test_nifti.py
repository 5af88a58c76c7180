"""NIfTI read/write against SimpleITK and nibabel on real MSD volumes."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medfm.errors import InputError, OutputError
from medfm.io import orientation_code, read_dicom_series, read_nifti, write_nifti

CASES = ["hippocampus_004", "hippocampus_006", "hippocampus_014"]


@pytest.fixture(scope="module")
def hippo(shared_data: Path) -> Path:
    root = shared_data / "msd_hippocampus"
    if not (root / "imagesTr").is_dir():
        pytest.skip("msd_hippocampus not in the shared data")
    return root


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("folder", ["imagesTr", "labelsTr"])
def test_msd_volumes_match_simpleitk(hippo: Path, case: str, folder: str, assert_matches_sitk) -> None:
    path = hippo / folder / f"{case}.nii.gz"
    img = read_nifti(path)
    assert img.channels == 1 and img.ndim == 3
    assert_matches_sitk(img, sitk.ReadImage(str(path)))
    # The code names where the axes point, as nibabel says for the RAS affine.
    assert orientation_code(img.direction) == "".join(nib.aff2axcodes(nib.load(path).affine))
    if folder == "labelsTr":
        assert img.array.dtype == np.uint8 and set(np.unique(img.array)) <= {0, 1, 2}


@pytest.mark.parametrize("case", CASES[:2])
def test_round_trip_keeps_affine_header_and_data(hippo: Path, case: str, tmp_path: Path) -> None:
    for folder in ("imagesTr", "labelsTr"):
        src = hippo / folder / f"{case}.nii.gz"
        out = write_nifti(read_nifti(src), tmp_path / f"{folder}_{case}.nii.gz")
        a, b = nib.load(src), nib.load(out)
        np.testing.assert_array_equal(a.affine, b.affine)
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        assert a.get_data_dtype() == b.get_data_dtype()
        for key in ("qform_code", "sform_code"):
            assert a.header[key] == b.header[key]
        np.testing.assert_array_equal(a.header.get_sform(), b.header.get_sform())
        assert a.header.get_xyzt_units() == b.header.get_xyzt_units()


def test_oblique_4d_to_channels_and_back(tmp_path: Path, assert_matches_sitk) -> None:
    path = Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"
    if not path.is_file():
        pytest.skip("nibabel test data not installed")
    img = read_nifti(path)
    src = nib.load(path)
    assert img.array.shape == (2, 24, 96, 128)  # (t, k, j, i)
    np.testing.assert_array_equal(img.array[1], np.asarray(src.dataobj)[..., 1].T)
    # Spatial geometry equals SimpleITK's (its 4D image carries time as a 4th axis).
    s = sitk.ReadImage(str(path))
    d4 = np.asarray(s.GetDirection()).reshape(4, 4)
    np.testing.assert_allclose(img.direction, d4[:3, :3], atol=1e-6)
    np.testing.assert_allclose(img.origin[::-1], s.GetOrigin()[:3], atol=1e-4)
    np.testing.assert_allclose(img.spacing[::-1], s.GetSpacing()[:3], rtol=1e-5)
    out = write_nifti(img, tmp_path / "four.nii")
    back = nib.load(out)
    np.testing.assert_array_equal(back.affine, src.affine)
    np.testing.assert_array_equal(np.asarray(back.dataobj), np.asarray(src.dataobj))
    assert back.header.get_zooms() == pytest.approx(src.header.get_zooms())


def test_big_endian_file_is_native(tmp_path: Path) -> None:
    path = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
    if not path.is_file():
        pytest.skip("nibabel test data not installed")
    img = read_nifti(path)
    assert img.array.dtype.isnative and img.array.dtype == np.int16
    assert orientation_code(img.direction) == "".join(nib.aff2axcodes(nib.load(path).affine))


def test_dicom_series_written_as_nifti_keeps_geometry(ct_series: Path, tmp_path: Path) -> None:
    ct = read_dicom_series(ct_series)
    out = write_nifti(ct, tmp_path / "ct.nii.gz")
    # SimpleITK reads our NIfTI at the same place as it reads the DICOM series.
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(ct_series)))
    s_dcm, s_nii = reader.Execute(), sitk.ReadImage(str(out))
    np.testing.assert_allclose(s_nii.GetOrigin(), s_dcm.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(s_nii.GetSpacing(), s_dcm.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(s_nii.GetDirection(), s_dcm.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(s_nii), sitk.GetArrayFromImage(s_dcm).astype(np.float32))
    back = read_nifti(out)
    np.testing.assert_array_equal(back.array, ct.array)
    np.testing.assert_allclose(back.origin, ct.origin, atol=1e-4)


def test_bad_nifti_files(hippo: Path, tmp_path: Path) -> None:
    data = (hippo / "imagesTr" / "hippocampus_004.nii.gz").read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.nii.gz"):
        read_nifti(cut)
    junk = tmp_path / "junk.nii"
    junk.write_bytes(gzip.compress(b"x" * 10))
    with pytest.raises(InputError, match="junk.nii"):
        read_nifti(junk)
    with pytest.raises(InputError, match="no such file"):
        read_nifti(tmp_path / "absent.nii.gz")


def test_truncated_uncompressed_nifti_error_is_one_line(hippo: Path, tmp_path: Path) -> None:
    # nibabel says "Expected N bytes, got M bytes from ...\n - could the file be damaged?"
    raw = gzip.decompress((hippo / "imagesTr" / "hippocampus_004.nii.gz").read_bytes())
    cut = tmp_path / "cut.nii"
    cut.write_bytes(raw[:2000])
    with pytest.raises(InputError, match=r"cut.nii: not a readable NIfTI file .*damaged") as info:
        read_nifti(cut)
    assert "\n" not in str(info.value)


def test_write_refuses_to_overwrite(hippo: Path, tmp_path: Path) -> None:
    img = read_nifti(hippo / "labelsTr" / "hippocampus_004.nii.gz")
    out = write_nifti(img, tmp_path / "l.nii.gz")
    before = out.read_bytes()
    with pytest.raises(OutputError, match="exists"):
        write_nifti(img, out)
    assert out.read_bytes() == before
    with pytest.raises(OutputError, match=r"\.nii"):
        write_nifti(img, tmp_path / "l.png")
