"""DICOM-SEG read (highdicom) aligned to its series, checked against the NRRD label map; write round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medfm.errors import InputError, OutputError
from medfm.io import read_dicom_seg, read_dicom_series, write_dicom_seg


@pytest.fixture(scope="module")
def seg_case(shared_data: Path) -> dict[str, Path]:
    root = shared_data / "dicom_ct3slice_seg"
    if not root.is_dir():
        pytest.skip("dicom_ct3slice_seg not in the shared data")
    return {"ct": root / "ct", "seg": root / "seg" / "liver_seg.dcm", "nrrd": root / "nrrd" / "liver_seg.nrrd"}


@pytest.fixture(scope="module")
def ct(seg_case):
    return read_dicom_series(seg_case["ct"])


def test_seg_equals_nrrd_label_map_voxel_for_voxel(seg_case, ct) -> None:
    seg = read_dicom_seg(seg_case["seg"], ct)
    nrrd = sitk.ReadImage(str(seg_case["nrrd"]))
    expected = sitk.GetArrayFromImage(nrrd)
    assert seg.array.shape == (1, *expected.shape) and seg.array.dtype == np.uint8
    np.testing.assert_array_equal(seg.array[0], expected)
    assert expected.sum() > 1000  # the liver is really there
    # Same grid as the NRRD and as the CT.
    np.testing.assert_allclose(seg.origin, np.asarray(nrrd.GetOrigin())[::-1], atol=1e-3)
    np.testing.assert_allclose(seg.spacing, np.asarray(nrrd.GetSpacing())[::-1], atol=1e-5)
    np.testing.assert_allclose(seg.direction, np.asarray(nrrd.GetDirection()).reshape(3, 3))
    assert seg.meta["segment_names"] == {1: "Liver"}
    assert seg.origin == ct.origin and seg.spacing == ct.spacing


def test_seg_with_reference_given_as_folder(seg_case, ct) -> None:
    by_folder = read_dicom_seg(seg_case["seg"], seg_case["ct"])
    np.testing.assert_array_equal(by_folder.array, read_dicom_seg(seg_case["seg"], ct).array)


def test_write_seg_reads_back_aligned(seg_case, ct, tmp_path: Path) -> None:
    labels = np.zeros(ct.array.shape, dtype=np.uint8)
    labels[0, 0, 10:40, 20:60] = 1  # first slice (lowest z): a box
    labels[0, 2, 100:110, 200:230] = 2  # last slice: another label
    mask = ct.with_array(labels, modality="SEG", meta={})
    out = write_dicom_seg(mask, seg_case["ct"], tmp_path / "pred_seg.dcm", ["Tumour", "Cyst"])
    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG" and [s.SegmentLabel for s in ds.SegmentSequence] == ["Tumour", "Cyst"]
    back = read_dicom_seg(out, ct)
    np.testing.assert_array_equal(back.array, labels)
    assert back.meta["segment_names"] == {1: "Tumour", 2: "Cyst"}
    # The SEG frames reference the CT slices they lie on.
    refs = {f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID for f in ds.PerFrameFunctionalGroupsSequence}
    assert refs == {ct.meta["sop_instance_uids"][0], ct.meta["sop_instance_uids"][2]}
    with pytest.raises(OutputError, match="exists"):
        write_dicom_seg(mask, seg_case["ct"], out, ["Tumour", "Cyst"])


def test_write_seg_refuses_bad_masks(seg_case, ct, tmp_path: Path) -> None:
    wrong_shape = ct.with_array(np.zeros((1, 2, 512, 512), dtype=np.uint8))
    with pytest.raises(InputError, match="shape"):
        write_dicom_seg(wrong_shape, seg_case["ct"], tmp_path / "a.dcm", ["x"])
    labels = np.zeros(ct.array.shape, dtype=np.uint8)
    labels[0, 1, 5, 5] = 3
    with pytest.raises(InputError, match="label 3 but only 1 segment"):
        write_dicom_seg(ct.with_array(labels), seg_case["ct"], tmp_path / "b.dcm", ["x"])
    shifted = ct.with_array(np.zeros(ct.array.shape, dtype=np.uint8), origin=(0.0, 0.0, 0.0))
    with pytest.raises(InputError, match="geometry"):
        write_dicom_seg(shifted, seg_case["ct"], tmp_path / "c.dcm", ["x"])
    assert not any(tmp_path.iterdir())


def test_seg_on_the_wrong_reference(seg_case, pydicom_file) -> None:
    with pytest.raises(InputError, match="liver_seg.dcm"):
        read_dicom_seg(seg_case["seg"], pydicom_file("CT_small.dcm"))


def test_not_a_seg(seg_case, ct) -> None:
    ct_file = sorted(seg_case["ct"].iterdir())[0]
    with pytest.raises(InputError, match=ct_file.name):
        read_dicom_seg(ct_file, ct)


def test_seg_on_its_own_grid(seg_case, assert_matches_sitk) -> None:
    from medfm.io import describe, read_image

    own = read_image(seg_case["seg"])  # no reference: the SEG's own frames and geometry
    assert own.modality == "SEG" and own.meta["segment_names"] == {1: "Liver"}
    # Same grid and voxels as the NRRD label map (slices stacked along row x column).
    assert_matches_sitk(own, sitk.ReadImage(str(seg_case["nrrd"])))
    assert describe(own)["orientation"] is not None
