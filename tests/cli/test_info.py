"""``medfm info`` in-process: table, --json, --series-uid, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from medfm.cli.main import main


@pytest.fixture(scope="module")
def ct_dir(shared_data: Path) -> Path:
    path = shared_data / "dicom_ct3slice_seg" / "ct"
    if not path.is_dir():
        pytest.skip("dicom_ct3slice_seg not in the shared data")
    return path


def test_info_table(ct_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(ct_dir)]) == 0
    out = capsys.readouterr().out
    for text in ("CT", "1 x 3 x 512 x 512", "LPS", "float32", "-3024 .. 1381", "0.810547"):
        assert text in out


def test_info_json(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = shared_data / "msd_hippocampus" / "imagesTr" / "hippocampus_004.nii.gz"
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "nifti" and info["orientation"] == "RAS"
    assert info["shape"] == [1, 38, 52, 36] and info["spacing"] == [1.0, 1.0, 1.0]


def test_info_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.dcm"
    bad.write_text("not an image")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "broken.dcm" in err and err.startswith("medfm: error:")
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "missing: no such file or folder" in capsys.readouterr().err


def test_info_several_series_then_choose(ct_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for f in ct_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    other = generate_uid()
    ds = pydicom.dcmread(next(ct_dir.iterdir()))
    ds.SeriesInstanceUID, ds.SOPInstanceUID = other, generate_uid()
    ds.save_as(tmp_path / "other.dcm")
    assert main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds 2 series" in err and other in err
    assert main(["info", str(tmp_path), "--series-uid", other, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shape"] == [1, 1, 512, 512]


def test_info_on_a_dicom_seg(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = shared_data / "dicom_ct3slice_seg" / "seg" / "liver_seg.dcm"
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "dicom-seg" and info["modality"] == "SEG" and info["value_range"] == [0, 1]


def test_info_refuses_a_series_with_an_unreadable_file(ct_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(sorted(ct_dir.iterdir())[0], tmp_path / "01.dcm")
    (tmp_path / "IM0002").write_bytes(bytes(range(256)) * 8)  # one valid slice and one random file
    assert main(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "IM0002 (not a DICOM file)" in err and "--allow-unreadable" in err
    assert main(["info", str(tmp_path), "--allow-unreadable", "--json"]) == 0
    cap = capsys.readouterr()
    assert "warning:" in cap.err and "IM0002" in cap.err
    info = json.loads(cap.out)
    assert info["shape"] == [1, 1, 512, 512] and info["skipped_files"] == ["IM0002 (not a DICOM file)"]
