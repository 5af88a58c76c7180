"""medfm.io.dicom_sr: a TID 1500 SR of segment volumes, referencing its SEG and the source CT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from medfm.errors import InputError, OutputError
from medfm.io import Image, read_dicom_series, write_dicom_seg
from medfm.io.dicom_sr import read_segment_volumes, write_segment_volume_sr


def test_sr_volumes_match_the_mask_and_reference_seg_and_ct(shared_data: Path, tmp_path: Path) -> None:
    ct = shared_data / "dicom_ct3slice_seg" / "ct"
    ref = read_dicom_series(ct)
    labels = np.zeros(ref.array.shape, np.uint8)
    labels[0, 0, 100:150, 200:260] = 1  # 50 x 60 voxels on slice 0
    labels[0, 1:3, 10:20, 10:15] = 2  # 2 x 10 x 5 voxels
    seg = write_dicom_seg(Image(labels, ref.spacing, ref.origin, ref.direction), ct, tmp_path / "seg.dcm", ["lesion", "vessel"])
    sr_path = write_segment_volume_sr(seg, ct, tmp_path / "sr.dcm")
    voxel = float(np.prod(ref.spacing))
    assert read_segment_volumes(sr_path) == {"segment 1: lesion": pytest.approx(3000 * voxel),
                                             "segment 2: vessel": pytest.approx(100 * voxel)}
    sr, seg_ds = pydicom.dcmread(sr_path), pydicom.dcmread(seg)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.StudyInstanceUID == seg_ds.StudyInstanceUID and sr.SeriesInstanceUID != seg_ds.SeriesInstanceUID
    evidence = {str(s.ReferencedSOPInstanceUID) for e in sr.CurrentRequestedProcedureEvidenceSequence
                for se in e.ReferencedSeriesSequence for s in se.ReferencedSOPSequence}
    assert evidence == {str(seg_ds.SOPInstanceUID), *ref.meta["sop_instance_uids"]}
    with pytest.raises(OutputError, match="exists"):
        write_segment_volume_sr(seg, ct, sr_path)
    with pytest.raises(InputError, match="not a readable DICOM SR"):
        read_segment_volumes(seg)
