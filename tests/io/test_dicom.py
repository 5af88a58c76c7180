"""DICOM readers against SimpleITK (GDCM) on real files, plus every bad-input path."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

from medfm.errors import InputError
from medfm.io import WINDOW_PRESETS, list_dicom_series, read_dicom, read_dicom_series


def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


# --- the real CT series -------------------------------------------------------------------


def test_ct_series_matches_simpleitk(ct_series: Path, assert_matches_sitk) -> None:
    img = read_dicom_series(ct_series)
    assert img.array.shape == (1, 3, 512, 512) and img.array.dtype == np.float32
    assert img.modality == "CT"
    assert_matches_sitk(img, _sitk_series(ct_series))
    # HU: the stored int16 minus 1024 (RescaleIntercept), air outside the body at -1024 or the -3024 padding
    assert img.array.min() == -3024.0
    assert img.spacing[0] == pytest.approx(1.0, abs=1e-6)  # from positions, not SliceThickness (1.25)
    ds = [pydicom.dcmread(f) for f in img.meta["files"]]
    # The file's window (40/400) is the default; the named CT presets come with it.
    assert img.meta["window"] == (float(ds[0].WindowCenter), float(ds[0].WindowWidth))
    assert img.meta["windows"]["file"] == img.meta["window"] and set(WINDOW_PRESETS) <= set(img.meta["windows"])
    assert [d.SOPInstanceUID for d in ds] == img.meta["sop_instance_uids"]
    assert [float(d.ImagePositionPatient[2]) for d in ds] == sorted(float(d.ImagePositionPatient[2]) for d in ds)


def test_series_order_ignores_file_names_and_instance_numbers(ct_series: Path, tmp_path: Path) -> None:
    ref = read_dicom_series(ct_series)
    files = sorted(ct_series.iterdir())
    # Scrambled names that sort in the opposite order, some without suffix; InstanceNumbers reversed too.
    names = ["zz_first", "m-middle.dcm", "a.DCM"]
    for i, (src, name) in enumerate(zip(files, names)):
        ds = pydicom.dcmread(src)
        ds.InstanceNumber = 100 - int(ds.get("InstanceNumber", i) or i)
        ds.save_as(tmp_path / name)
    (tmp_path / "README.txt").write_text("not dicom")
    img = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(img.array, ref.array)
    assert img.origin == ref.origin and img.spacing == ref.spacing
    np.testing.assert_array_equal(img.direction, ref.direction)
    assert img.meta["sop_instance_uids"] == ref.meta["sop_instance_uids"]
    assert img.meta["skipped_files"] == ["README.txt (not DICOM)"]


# --- single files, pydicom's bundled data ---------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["CT_small.dcm", "MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"],
)
def test_single_slices_match_simpleitk(name: str, pydicom_file, assert_matches_sitk) -> None:
    path = pydicom_file(name)
    img = read_dicom(path)
    assert img.array.shape[:2] == (1, 1)
    assert_matches_sitk(img, sitk.ReadImage(str(path)), check_z_spacing=False)


def test_ct_small_is_hounsfield(pydicom_file) -> None:
    path = pydicom_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    img = read_dicom(path)
    assert img.array.dtype == np.float32
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(img.array[0, 0], expected.astype(np.float32))
    assert set(WINDOW_PRESETS) <= set(img.meta["windows"])


def test_mr_window_comes_from_the_file(pydicom_file) -> None:
    path = pydicom_file("MR_small.dcm")
    ds = pydicom.dcmread(path)
    img = read_dicom(path)
    assert img.array.dtype == np.int16  # no rescale: source dtype kept
    assert img.meta["window"] == (float(ds.WindowCenter), float(ds.WindowWidth))


def test_jpeg2000_projection_image_is_2d(pydicom_file, assert_matches_sitk) -> None:
    path = pydicom_file("JPEG2000.dcm")
    img = read_dicom(path)
    assert img.ndim == 2 and img.array.shape == (1, 1024, 256)
    assert img.meta["frame"] == "image"
    assert_matches_sitk(img, sitk.ReadImage(str(path)))


def test_jpeg_baseline_rgb(pydicom_file, assert_matches_sitk) -> None:
    path = pydicom_file("SC_rgb_jpeg_dcmtk.dcm")
    img = read_dicom(path)
    assert img.array.shape == (3, 100, 100) and img.array.dtype == np.uint8
    # Lossy JPEG decoded by two different libraries: equal up to rounding of the colour transform.
    assert_matches_sitk(img, sitk.ReadImage(str(path)), value_atol=3)


def test_monochrome1_cr_is_inverted(pydicom_file, assert_matches_sitk) -> None:
    path = pydicom_file("6154")  # CR, MONOCHROME1, with RescaleSlope/Intercept and a window
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    img = read_dicom(path)
    raw = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    lo, hi = float(ds.RescaleIntercept), (2 ** int(ds.BitsStored) - 1) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(img.array[0], (lo + hi) - raw, rtol=1e-6)
    # GDCM inverts MONOCHROME1 the same way.
    assert_matches_sitk(img, sitk.ReadImage(str(path)), value_atol=1e-3)
    center = float(ds.WindowCenter[0] if isinstance(ds.WindowCenter, pydicom.multival.MultiValue) else ds.WindowCenter)
    assert img.meta["window"][0] == pytest.approx(lo + hi - center)
    assert img.spacing == (0.1, 0.1)  # ImagerPixelSpacing


# --- pydicom-data: real CR, US, enhanced CT/MR -------------------------------------------


@pytest.mark.slow
def test_cr_chest_monochrome1(pydicom_data_file, assert_matches_sitk) -> None:
    path = pydicom_data_file("RG1_UNCR.dcm")
    img = read_dicom(path)
    ds = pydicom.dcmread(path)
    assert img.modality == "CR" and img.array.shape == (1, 1955, 1841) and img.array.dtype == np.uint16
    np.testing.assert_array_equal(img.array[0], (2 ** int(ds.BitsStored) - 1) - ds.pixel_array.astype(np.int64))
    assert_matches_sitk(img, sitk.ReadImage(str(path)))


def test_ultrasound_rgb(pydicom_data_file, assert_matches_sitk) -> None:
    path = pydicom_data_file("US1_UNCR.dcm")
    img = read_dicom(path)
    assert img.modality == "US" and img.array.shape == (3, 480, 640)
    assert_matches_sitk(img, sitk.ReadImage(str(path)))


def test_enhanced_ct_frames_ordered_along_normal(pydicom_data_file, assert_matches_sitk) -> None:
    path = pydicom_data_file("eCT_Supplemental.dcm")
    img = read_dicom(path)
    assert img.modality == "CT" and img.array.shape == (1, 2, 512, 512) and img.array.dtype == np.float32
    ds = pydicom.dcmread(path)
    iop = np.asarray(ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    np.testing.assert_allclose(img.direction[:, 2], normal)
    positions = [np.asarray(f.PlanePositionSequence[0].ImagePositionPatient, dtype=float) for f in ds.PerFrameFunctionalGroupsSequence]
    first = int(np.argmin([p @ normal for p in positions]))
    assert img.meta["frame_numbers"][0] == first + 1
    np.testing.assert_allclose(img.origin[::-1], positions[first])
    assert img.meta["window"] == (49.0, 102.0)  # from the Frame VOI LUT functional group
    # GDCM stacks the same two frames with +z instead of the normal (-z): same voxels in space.
    assert_matches_sitk(img, sitk.ReadImage(str(path)), allow_flip=True)


def test_enhanced_mr_multiframe(pydicom_data_file, assert_matches_sitk) -> None:
    path = pydicom_data_file("emri_small.dcm")
    img = read_dicom(path)
    assert img.modality == "MR" and img.array.shape == (1, 10, 64, 64)
    # This file carries no plane positions: frames stay in stored order, no patient frame claimed.
    assert img.meta["frame"] == "image"
    assert_matches_sitk(img, sitk.ReadImage(str(path)), check_z_spacing=False)


def test_enhanced_mr_jpeg2000_equals_uncompressed(pydicom_data_file) -> None:
    a = read_dicom(pydicom_data_file("emri_small.dcm"))
    b = read_dicom(pydicom_data_file("emri_small_jpeg_2k_lossless.dcm"))
    np.testing.assert_array_equal(a.array, b.array)


# --- bad input ------------------------------------------------------------------------------


def test_truncated_file_names_the_file(pydicom_file, tmp_path: Path) -> None:
    src = pydicom_file("CT_small.dcm").read_bytes()
    bad = tmp_path / "half.dcm"
    bad.write_bytes(src[: len(src) // 2])
    with pytest.raises(InputError, match="half.dcm"):
        read_dicom(bad)


def test_non_dicom_file(tmp_path: Path) -> None:
    bad = tmp_path / "notes.dcm"
    bad.write_text("this is a text file, not DICOM\n" * 20)
    with pytest.raises(InputError, match=r"notes\.dcm: not a DICOM file"):
        read_dicom(bad)


def test_file_without_pixels(pydicom_file) -> None:
    path = pydicom_file("rtstruct.dcm")
    with pytest.raises(InputError, match="rtstruct.dcm: DICOM file holds no image"):
        read_dicom(path)


def test_seg_file_points_to_read_dicom_seg(shared_data: Path) -> None:
    with pytest.raises(InputError, match="read_dicom_seg"):
        read_dicom(shared_data / "dicom_ct3slice_seg" / "seg" / "liver_seg.dcm")


def _synthetic_series(src: Path, folder: Path, zs: list[float], series_uid: str | None = None) -> list[Path]:
    """Copies of one real slice at positions ``zs`` (mm along z), as one series."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    out = []
    for i, z in enumerate(zs):
        ds = pydicom.dcmread(src)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImagePositionPatient = [float(ds.ImagePositionPatient[0]), float(ds.ImagePositionPatient[1]), z]
        ds.InstanceNumber = i + 1
        path = folder / f"slice{i:02d}.dcm"
        ds.save_as(path)
        out.append(path)
    return out


def test_missing_slice(pydicom_file, tmp_path: Path) -> None:
    _synthetic_series(pydicom_file("CT_small.dcm"), tmp_path, [0.0, 2.5, 5.0, 10.0, 12.5])  # 7.5 is missing
    with pytest.raises(InputError, match=r"missing slice: slice02.dcm and slice03.dcm are 5.000 mm apart.*2.500 mm"):
        read_dicom_series(tmp_path)


def test_irregular_spacing(pydicom_file, tmp_path: Path) -> None:
    _synthetic_series(pydicom_file("CT_small.dcm"), tmp_path, [0.0, 2.5, 5.0, 6.3, 8.8])
    with pytest.raises(InputError, match="irregular slice spacing"):
        read_dicom_series(tmp_path)


def test_regular_synthetic_series_spacing_from_positions(pydicom_file, tmp_path: Path, assert_matches_sitk) -> None:
    _synthetic_series(pydicom_file("CT_small.dcm"), tmp_path, [7.5, 0.0, 2.5, 5.0])
    img = read_dicom_series(tmp_path)
    assert img.array.shape == (1, 4, 128, 128)
    assert img.spacing[0] == pytest.approx(2.5)  # not SliceThickness / SpacingBetweenSlices (5.0)
    assert_matches_sitk(img, _sitk_series(tmp_path))


def test_duplicate_positions(pydicom_file, tmp_path: Path) -> None:
    _synthetic_series(pydicom_file("CT_small.dcm"), tmp_path, [0.0, 2.5, 2.5, 5.0])
    with pytest.raises(InputError, match="same position"):
        read_dicom_series(tmp_path)


def test_mixed_sizes(ct_series: Path, pydicom_file, tmp_path: Path) -> None:
    for f in ct_series.iterdir():
        shutil.copy(f, tmp_path / f.name)
    uid = pydicom.dcmread(next(ct_series.iterdir()), stop_before_pixels=True).SeriesInstanceUID
    ds = pydicom.dcmread(pydicom_file("CT_small.dcm"))  # 128x128 slice forced into the 512x512 series
    ds.SeriesInstanceUID = uid
    ds.save_as(tmp_path / "intruder.dcm")
    with pytest.raises(InputError, match=r"mixed image sizes.*(intruder.dcm|512x512)"):
        read_dicom_series(tmp_path)


def test_mixed_orientations(pydicom_file, tmp_path: Path) -> None:
    paths = _synthetic_series(pydicom_file("CT_small.dcm"), tmp_path, [0.0, 2.5, 5.0])
    ds = pydicom.dcmread(paths[1])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.save_as(paths[1])
    with pytest.raises(InputError, match=r"mixed orientations.*slice01.dcm"):
        read_dicom_series(tmp_path)


def test_several_series_need_a_choice(pydicom_file, tmp_path: Path) -> None:
    src = pydicom_file("CT_small.dcm")
    uid_a, uid_b = generate_uid(), generate_uid()
    _synthetic_series(src, tmp_path / "a", [0.0, 2.5, 5.0], uid_a)
    _synthetic_series(src, tmp_path / "b", [0.0, 2.5], uid_b)
    with pytest.raises(InputError, match="holds 2 series") as info:
        read_dicom_series(tmp_path)
    assert uid_a in str(info.value) and uid_b in str(info.value)
    assert [s.series_uid for s in list_dicom_series(tmp_path)] == [uid_a, uid_b]
    assert read_dicom_series(tmp_path, series_uid=uid_b).array.shape == (1, 2, 128, 128)
    with pytest.raises(InputError, match="no series with SeriesInstanceUID 1.2.3"):
        read_dicom_series(tmp_path, series_uid="1.2.3")


def test_truncated_slice_inside_a_series(ct_series: Path, tmp_path: Path) -> None:
    files = sorted(ct_series.iterdir())
    for f in files[:2]:
        shutil.copy(f, tmp_path / f.name)
    data = files[2].read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(InputError, match="cut.dcm"):
        read_dicom_series(tmp_path)


def _one_slice_and(ct_series: Path, folder: Path, name: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(sorted(ct_series.iterdir())[0], folder / "01.dcm")
    (folder / name).write_bytes(data)


def test_unreadable_file_in_a_series_is_refused_and_named(ct_series: Path, tmp_path: Path) -> None:
    # One real slice and one random file (no suffix: it could be a slice): refused, not a 1-slice volume.
    _one_slice_and(ct_series, tmp_path, "IM0002", np.random.default_rng(0).bytes(4000))
    with pytest.raises(InputError, match=r"1 file\(s\) cannot be read as DICOM: IM0002 \(not a DICOM file\).*--allow-unreadable"):
        read_dicom_series(tmp_path)
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable file\(s\): IM0002"):
        img = read_dicom_series(tmp_path, allow_unreadable=True)
    assert img.array.shape == (1, 1, 512, 512)
    assert img.meta["skipped_files"] == ["IM0002 (not a DICOM file)"]


def test_cut_header_inside_a_series_is_unreadable_not_a_non_image(ct_series: Path, tmp_path: Path) -> None:
    # A file cut inside its header parses without Rows/Columns: before, it was skipped as a "non-image object".
    data = sorted(ct_series.iterdir())[1].read_bytes()
    _one_slice_and(ct_series, tmp_path, "02.dcm", data[:700])
    with pytest.raises(InputError, match=r"02.dcm \(DICOM header ends before the image attributes.*truncated"):
        read_dicom_series(tmp_path)


def test_truncated_header_says_truncated(pydicom_file, tmp_path: Path) -> None:
    src = pydicom_file("CT_small.dcm").read_bytes()
    for n in (200, 700):
        bad = tmp_path / f"cut{n}.dcm"
        bad.write_bytes(src[:n])
        with pytest.raises(InputError, match=rf"cut{n}.dcm: DICOM header ends .*CT Image Storage.*truncated or damaged") as info:
            read_dicom(bad)
        assert "SOP class None" not in str(info.value)


def test_gaps_are_read_only_when_allowed(pydicom_file, tmp_path: Path) -> None:
    _synthetic_series(pydicom_file("CT_small.dcm"), tmp_path, [0.0, 2.5, 5.0, 10.0, 12.5])  # 7.5 is missing
    with pytest.warns(UserWarning, match=r"missing slice: slice02.dcm and slice03.dcm.*gaps allowed"):
        img = read_dicom_series(tmp_path, allow_gaps=True)
    assert img.array.shape == (1, 5, 128, 128)
    assert img.spacing[0] == pytest.approx(2.5)  # the usual step, not the mean (3.125)


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no DICOM image files"):
        read_dicom_series(tmp_path)
    with pytest.raises(InputError, match="no such folder"):
        read_dicom_series(tmp_path / "nope")
    with pytest.raises(InputError, match="is a folder"):
        read_dicom(tmp_path)


def test_rtdose_grid_offsets_and_dose_scaling(pydicom_file) -> None:
    path = pydicom_file("rtdose.dcm")  # 15 frames placed by GridFrameOffsetVector, no preamble
    ds = pydicom.dcmread(path, force=True)
    img = read_dicom(path)
    ref = sitk.ReadImage(str(path))
    assert img.array.shape == (1, 15, 10, 10)
    np.testing.assert_allclose(img.origin, np.asarray(ref.GetOrigin())[::-1], atol=1e-4)
    np.testing.assert_allclose(img.spacing, np.asarray(ref.GetSpacing())[::-1])
    # GDCM leaves stored values; medfm applies DoseGridScaling (dose in Gy).
    expected = sitk.GetArrayFromImage(ref) * float(ds.DoseGridScaling)
    np.testing.assert_allclose(img.array[0], expected, rtol=1e-6)


def test_sheared_stack_is_refused(pydicom_file, tmp_path: Path) -> None:
    paths = _synthetic_series(pydicom_file("CT_small.dcm"), tmp_path, [0.0, 2.5, 5.0, 7.5])
    for i, p in enumerate(paths):  # each slice shifted along x: a tilted-gantry stack
        ds = pydicom.dcmread(p)
        ds.ImagePositionPatient = [float(ds.ImagePositionPatient[0]) + 1.5 * i, float(ds.ImagePositionPatient[1]), 2.5 * i]
        ds.save_as(p)
    with pytest.raises(InputError, match="gantry tilt"):
        read_dicom_series(tmp_path)


def test_mixed_pixel_spacing(pydicom_file, tmp_path: Path) -> None:
    paths = _synthetic_series(pydicom_file("CT_small.dcm"), tmp_path, [0.0, 2.5, 5.0])
    ds = pydicom.dcmread(paths[2])
    ds.PixelSpacing = [0.9, 0.9]
    ds.save_as(paths[2])
    with pytest.raises(InputError, match=r"mixed pixel spacings.*slice02.dcm"):
        read_dicom_series(tmp_path)


@pytest.mark.parametrize("name", ["examples_ybr_color.dcm", "SC_rgb_rle_2frame.dcm"])
def test_multiframe_colour(name: str, pydicom_file, assert_matches_sitk) -> None:
    # A 30-frame JPEG-baseline YBR ultrasound cine and a 2-frame RLE RGB capture: frames along z, RGB channels.
    path = pydicom_file(name)
    img = read_dicom(path)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert img.array.shape == (3, int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    assert img.meta["frame"] == "image"
    assert_matches_sitk(img, sitk.ReadImage(str(path)), check_z_spacing=False)
