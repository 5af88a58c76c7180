"""De-identification (PS3.15 Basic Profile) on pydicom's and pydicom-data's files and the shared CT series."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files

pytest.importorskip("dicognito")
pytest.importorskip("dicomanonymizer")

from medfm.errors import InputError, OutputError
from medfm.io.deid import (
    Deidentifier,
    deidentify_folder,
    profile_table,
    read_dicom_dataset,
)

# Attributes of PS3.15 Table E.1-1 enumerated here independently of the table medfm loads: their
# original values must not appear anywhere in the output (by keyword; action in the table).
IDENTIFYING = [
    "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientAddress", "OtherPatientIDs",
    "OtherPatientNames", "PatientMotherBirthName", "PatientTelephoneNumbers", "MilitaryRank", "EthnicGroup",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "ReferringPhysicianName",
    "ReferringPhysicianAddress", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy", "OperatorsName",
    "RequestingPhysician", "PhysiciansOfRecord", "AccessionNumber", "StudyID", "StationName",
    "DeviceSerialNumber", "StudyDescription", "SeriesDescription", "ImageComments", "AdditionalPatientHistory",
    "PatientComments", "StudyComments", "AdmissionID", "IssuerOfPatientID", "ProtocolName", "RequestAttributesSequence",
    "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "StudyTime", "AcquisitionDateTime",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID", "ReferencedSOPInstanceUID",
    "PatientAge", "PatientSize", "PatientWeight", "Occupation", "RTPlanName", "ContentCreatorName",
]
# X: must be gone entirely
REMOVED = ["PatientAddress", "OtherPatientIDs", "OtherPatientNames", "InstitutionAddress", "ImageComments",
           "AdditionalPatientHistory", "PatientComments", "AdmissionID", "StudyDescription", "SeriesDescription",
           "PerformingPhysicianName", "NameOfPhysiciansReadingStudy", "RequestingPhysician", "PatientAge",
           "PatientSize", "PatientWeight", "Occupation", "MilitaryRank", "EthnicGroup", "RequestAttributesSequence"]


def _files() -> list[str]:
    return sorted(get_testdata_files())


def _readable(path: str) -> pydicom.Dataset | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            if "PixelData" in ds:
                _ = ds.PixelData
    except Exception:  # noqa: BLE001 - pydicom's test files include deliberately broken ones
        return None
    return ds if "SOPInstanceUID" in ds else None


def _originals(ds: pydicom.Dataset, keywords: list[str]) -> set[str]:
    """String forms (>= 4 characters, not class UIDs) of the identifying attributes, at any depth."""
    found: set[str] = set()

    def visit(d: pydicom.Dataset, el: pydicom.DataElement) -> None:
        if el.keyword in keywords and el.VR != "SQ" and el.value not in (None, ""):
            values = el.value if isinstance(el.value, pydicom.multival.MultiValue) else [el.value]
            for v in values:
                s = str(v).strip()
                if len(s) >= 4 and not s.startswith("1.2.840.10008."):
                    found.add(s)

    ds.walk(visit)
    return found


def _all_strings(ds: pydicom.Dataset) -> set[str]:
    out: set[str] = set()

    def visit(d: pydicom.Dataset, el: pydicom.DataElement) -> None:
        if el.VR in ("SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN"):
            return
        values = el.value if isinstance(el.value, pydicom.multival.MultiValue) else [el.value]
        out.update(str(v).strip() for v in values)

    ds.walk(visit)
    ds.file_meta.walk(visit)
    return out


def _keywords(ds: pydicom.Dataset) -> set[str]:
    kws: set[str] = set()
    ds.walk(lambda d, el: kws.add(el.keyword))
    return kws


def test_every_bundled_file_loses_the_profile_attributes() -> None:
    """pydicom's test files and pydicom-data's (data_store): no identifying value, X attribute or private tag survives."""
    files = _files()
    assert any("data_store" in f for f in files), "pydicom-data is not installed"
    deid = Deidentifier(seed="test")
    table = profile_table()
    n = 0
    for f in files:
        ds = _readable(f)
        if ds is None:
            continue
        before = _originals(ds, IDENTIFYING)
        # a value that the profile keeps elsewhere (Manufacturer 'OFFIS' = InstitutionName 'OFFIS') is no leak
        kept = _originals(ds, sorted(_keywords(ds) - set(IDENTIFYING)))
        pixels = ds.PixelData if "PixelData" in ds else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            entry = deid.deidentify(ds)
        left = (before - kept) & _all_strings(ds)
        assert not left, f"{f}: identifying values survive: {sorted(left)[:3]}"
        assert not (_keywords(ds) & set(REMOVED)), f"{f}: {sorted(_keywords(ds) & set(REMOVED))}"
        x_left = []
        ds.walk(lambda d, el: x_left.append(el.keyword) if table.action(int(el.tag)) == "X" else None)
        assert not x_left, f"{f}: X attributes survive: {x_left}"
        privates = []
        ds.walk(lambda d, el: privates.append(el.tag) if el.tag.is_private else None)
        assert not privates, f"{f}: private tags survive"
        if pixels is not None:
            assert ds.PixelData == pixels, f"{f}: pixel data changed"
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        text = json.dumps(entry.to_dict())
        assert not any(v in text for v in before), f"{f}: the audit holds a value"
        n += 1
    assert n > 150  # most of the ~260 files are readable instances


def test_study_uids_are_consistent_and_references_remapped(tmp_path: Path, shared_data: Path) -> None:
    """CT series + its DICOM-SEG: one new StudyInstanceUID, the SEG references the new CT UIDs."""
    CT = shared_data / "dicom_ct3slice_seg"
    src = tmp_path / "in"
    src.mkdir()
    for p in sorted((CT / "ct").glob("*.dcm")) + [CT / "seg" / "liver_seg.dcm"]:
        (src / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    orig_ct = [pydicom.dcmread(p) for p in sorted((CT / "ct").glob("*.dcm"))]
    orig_seg = pydicom.dcmread(CT / "seg" / "liver_seg.dcm")
    audit = deidentify_folder(src, tmp_path / "out")
    assert audit["n_files"] == 4
    out = [pydicom.dcmread(p) for p in sorted((tmp_path / "out").rglob("*.dcm"))]
    cts = [d for d in out if d.Modality == "CT"]
    (seg,) = [d for d in out if d.Modality == "SEG"]
    assert len({d.StudyInstanceUID for d in out}) == 1
    assert out[0].StudyInstanceUID != orig_ct[0].StudyInstanceUID
    assert len({d.SeriesInstanceUID for d in cts}) == 1
    assert len({d.FrameOfReferenceUID for d in out}) == 1
    new_ct_uids = {d.SOPInstanceUID for d in cts}
    refs = {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert refs == new_ct_uids
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == cts[0].SeriesInstanceUID
    assert not ({d.SOPInstanceUID for d in orig_ct} & new_ct_uids)
    # pixel data: same bytes as the source slice with the same position
    by_pos = {tuple(d.ImagePositionPatient): d for d in orig_ct}
    for d in cts:
        assert d.PixelData == by_pos[tuple(d.ImagePositionPatient)].PixelData
        np.testing.assert_array_equal(d.pixel_array, by_pos[tuple(d.ImagePositionPatient)].pixel_array)
    assert seg.PixelData == orig_seg.PixelData
    # the medfm reader still reads the de-identified series as one volume
    from medfm.io.dicom import read_dicom_series

    img = read_dicom_series(tmp_path / "out" / str(cts[0].SeriesInstanceUID))
    assert img.array.shape[-3] == 3
    saved = json.loads((tmp_path / "out" / "deid_audit.json").read_text())
    assert saved["n_files"] == 4 and "PatientName" in saved["entries"][0]["replaced"]
    assert str(orig_ct[0].PatientName) not in (tmp_path / "out" / "deid_audit.json").read_text()


def test_same_seed_same_mapping_across_sessions() -> None:
    a, b, c = Deidentifier(seed="k1"), Deidentifier(seed="k1"), Deidentifier(seed="k2")
    uids = []
    for deid in (a, b, c):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        deid.deidentify(ds)
        uids.append((ds.StudyInstanceUID, ds.SOPInstanceUID, ds.PatientID))
    assert uids[0] == uids[1] and uids[0] != uids[2]


def test_refusals(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.dcm").write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    with pytest.raises(OutputError, match="inside"):
        deidentify_folder(src, src / "out")
    with pytest.raises(OutputError, match="inside|input"):
        deidentify_folder(src, src)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    with pytest.raises(OutputError, match="not empty"):
        deidentify_folder(src, busy)
    text = tmp_path / "notes.txt"
    text.write_text("PATIENT DOE^JOHN\n")
    with pytest.raises(InputError, match="notes.txt: not a readable DICOM file"):
        deidentify_folder(text, tmp_path / "o2")
    assert not (tmp_path / "o2").exists()
    data = (src / "a.dcm").read_bytes()
    trunc = tmp_path / "trunc.dcm"
    trunc.write_bytes(data[: len(data) - 5000])
    with pytest.raises(InputError, match="trunc.dcm"):
        read_dicom_dataset(trunc)
    # in a folder a non-DICOM file is skipped and counted, the input is left as it was
    (src / "readme.txt").write_text("hello")
    audit = deidentify_folder(src, tmp_path / "o3")
    assert audit["n_files"] == 1 and audit["n_skipped_not_dicom"] == 1
    assert (src / "a.dcm").read_bytes() == data


def test_nested_sequences_and_private_tags() -> None:
    """Inside sequences too: Z sequences emptied, X sequences removed, names in kept sequences replaced, private tags gone."""
    from pydicom.dataset import Dataset

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    issuer = Dataset()
    issuer.LocalNamespaceEntityID = "ST-MARY-HOSPITAL"
    ds.IssuerOfTheContainerIdentifierSequence = [issuer]  # Z
    req = Dataset()
    req.RequestedProcedureID = "REQ-12345"
    ds.RequestAttributesSequence = [req]  # X
    item = Dataset()
    item.PersonName = "SMITH^ROBERT"
    item.ValueType = "PNAME"
    item.add_new(0x00091001, "LO", "private note ROBERT")
    ds.ContentSequence = [item]  # D: kept, its content cleaned
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    ds.SourceImageSequence = [ref]  # X/Z/U*: kept, UIDs remapped
    sop = ds.SOPInstanceUID
    entry = Deidentifier(seed="n").deidentify(ds)
    assert len(ds.IssuerOfTheContainerIdentifierSequence) == 0
    assert "RequestAttributesSequence" not in ds
    assert str(ds.ContentSequence[0].PersonName) != "SMITH^ROBERT"
    assert not any(el.tag.is_private for el in ds.ContentSequence[0])
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID != sop
    assert "IssuerOfTheContainerIdentifierSequence" in entry.emptied
    assert "RequestAttributesSequence" in entry.removed
    assert "ROBERT" not in json.dumps(entry.to_dict())


def test_folder_with_duplicate_uids_and_no_series_uid(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    (src / "a.dcm").write_bytes(ct)
    (src / "copy_of_a.dcm").write_bytes(ct)  # same SOP instance UID
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.SeriesInstanceUID
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(src / "no_series.dcm")
    audit = deidentify_folder(src, tmp_path / "out", deidentifier=Deidentifier(seed="d"))
    outs = sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*.dcm"))
    assert audit["n_files"] == 3 and len(outs) == 3 and audit["n_failed"] == 0
    assert sum(p.parts[0] == "no-series" for p in outs) == 1
