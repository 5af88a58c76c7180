"""read_image dispatch (by content, then name), describe(), orientation codes vs SimpleITK and nibabel."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medfm.errors import ConfigError, InputError
from medfm.io import Image, describe, from_sitk, orientation_code, read_image, read_itk, to_sitk


def test_dispatch_by_content_and_suffix(shared_data: Path, pydicom_file, tmp_path: Path) -> None:
    ct = read_image(shared_data / "dicom_ct3slice_seg" / "ct")
    assert ct.meta["format"] == "dicom-series" and ct.array.shape == (1, 3, 512, 512)
    assert read_image(shared_data / "msd_hippocampus" / "imagesTr" / "hippocampus_004.nii.gz").meta["format"] == "nifti"
    assert read_image(shared_data / "dicom_ct3slice_seg" / "nrrd" / "liver_seg.nrrd").meta["format"] == "nrrd"
    assert read_image(shared_data / "hc18_fetal_head" / "training_set" / "000_HC.png").meta["format"] == "png"
    # Content wins over a misleading or missing name.
    shutil.copy(pydicom_file("CT_small.dcm"), tmp_path / "scan.png")
    assert read_image(tmp_path / "scan.png").meta["format"] == "dicom"
    shutil.copy(shared_data / "msd_hippocampus" / "imagesTr" / "hippocampus_004.nii.gz", tmp_path / "volume")
    assert read_image(tmp_path / "volume").meta["format"] == "nifti"
    # An old DICOM file without the preamble is found through its name.
    assert read_image(pydicom_file("rtdose.dcm")).modality == "RTDOSE"


def test_nrrd_and_mha_match_simpleitk(shared_data: Path, tmp_path: Path, assert_matches_sitk) -> None:
    path = shared_data / "dicom_ct3slice_seg" / "nrrd" / "liver_seg.nrrd"
    img = read_itk(path)
    assert_matches_sitk(img, sitk.ReadImage(str(path)))
    sitk.WriteImage(to_sitk(img), str(tmp_path / "liver.mha"))
    back = read_image(tmp_path / "liver.mha")
    assert_matches_sitk(back, sitk.ReadImage(str(path)))


def test_sitk_conversion_round_trip_vector_and_2d() -> None:
    rng = np.random.default_rng(0)
    img = Image(rng.random((3, 4, 5, 6)).astype(np.float32), (2.0, 0.5, 0.7), (1.0, 2.0, 3.0), np.diag([-1.0, 1.0, -1.0]))
    back = from_sitk(to_sitk(img))
    np.testing.assert_array_equal(back.array, img.array)
    assert back.spacing == img.spacing and back.origin == img.origin
    np.testing.assert_array_equal(back.direction, img.direction)
    flat = Image(rng.random((1, 4, 5)).astype(np.float32), (0.3, 0.4))
    s = to_sitk(flat)
    assert s.GetDimension() == 2 and s.GetSpacing() == (0.4, 0.3)
    np.testing.assert_array_equal(from_sitk(s).array, flat.array)


def test_unknown_and_bad_inputs(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match=r"notes.txt: unrecognised image format"):
        read_image(tmp_path / "notes.txt")
    (tmp_path / "empty.dcm").write_bytes(b"")
    with pytest.raises(InputError, match="empty.dcm: file is empty"):
        read_image(tmp_path / "empty.dcm")
    np.savez(tmp_path / "a.npz", x=np.zeros(2))
    with pytest.raises(InputError, match="read_medmnist_npz"):
        read_image(tmp_path / "a.npz")
    (tmp_path / "garbage").write_bytes(b"\x00\x01" * 300)
    with pytest.raises(InputError, match="garbage: not a DICOM file"):
        read_image(tmp_path / "garbage")
    with pytest.raises(InputError, match="no such file or folder"):
        read_image(tmp_path / "absent.nii.gz")
    (tmp_path / "fake.nrrd").write_text("not nrrd")
    with pytest.raises(InputError, match="fake.nrrd"):
        read_image(tmp_path / "fake.nrrd")


def test_options_only_for_series_folders(pydicom_file) -> None:
    with pytest.raises(ConfigError, match="series_uid"):
        read_image(pydicom_file("CT_small.dcm"), series_uid="1.2.3")


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def test_orientation_code_matches_simpleitk_and_nibabel() -> None:
    rng = np.random.default_rng(0)
    cases = [np.eye(3), np.diag([-1.0, -1.0, 1.0]), np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])]
    cases += [_random_rotation(rng) for _ in range(20)]
    for d in cases:
        code = orientation_code(d)
        assert code == sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(d.ravel().tolist())
        affine_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.block([[d, np.zeros((3, 1))], [np.zeros((1, 3)), np.ones((1, 1))]])
        assert code == "".join(nib.aff2axcodes(affine_ras))


def test_describe_fields(shared_data: Path) -> None:
    ct = read_image(shared_data / "dicom_ct3slice_seg" / "ct")
    info = describe(ct)
    assert info["modality"] == "CT" and info["shape"] == [1, 3, 512, 512] and info["dtype"] == "float32"
    assert info["orientation"] == "LPS" and info["spacing_unit"] == "mm"
    assert info["spacing"] == pytest.approx([1.0, 0.810547, 0.810547])
    assert info["value_range"] == [float(ct.array.min()), float(ct.array.max())]
    png = describe(read_image(shared_data / "hc18_fetal_head" / "training_set" / "000_HC.png"))
    assert png["orientation"] is None and png["spacing_unit"] == "pixel" and png["spatial_dims"] == 2
    nan = Image(np.array([[[np.nan, 1.0], [2.0, 3.0]]], dtype=np.float32), (1.0, 1.0))
    assert describe(nan)["value_range"] == [1.0, 3.0]
