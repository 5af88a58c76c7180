"""``medfm deid`` in-process: output, audit, refusals with one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

pytest.importorskip("dicognito")

from medfm.cli.main import main


@pytest.fixture
def CT(shared_data: Path) -> Path:
    return shared_data / "dicom_ct3slice_seg" / "ct"


def test_deid_folder(CT: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["deid", str(CT), str(out), "--seed", "s1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_files"] == 3
    files = sorted(out.rglob("*.dcm"))
    assert len(files) == 3
    src = pydicom.dcmread(sorted(CT.glob("*.dcm"))[0])
    ds = pydicom.dcmread(files[0])
    assert ds.PatientName != src.PatientName and ds.PatientIdentityRemoved == "YES"
    audit = (out / "deid_audit.json").read_text()
    assert str(src.PatientID) not in audit and str(src.StudyInstanceUID) not in audit
    # same seed, new run -> same pseudonyms (a second export of the same study links up)
    out2 = tmp_path / "out2"
    assert main(["deid", str(CT), str(out2), "--seed", "s1"]) == 0
    assert "deid: 3 files" in capsys.readouterr().out
    assert sorted(p.relative_to(out2) for p in out2.rglob("*.dcm")) == sorted(p.relative_to(out) for p in files)


def test_deid_refusals(CT: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    note = tmp_path / "report.txt"
    note.write_text("not dicom")
    assert main(["deid", str(note), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "report.txt: not a readable DICOM file" in err[0]
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.dcm").write_bytes(sorted(CT.glob("*.dcm"))[0].read_bytes())
    assert main(["deid", str(src), str(src / "sub")]) == 2
    assert "inside" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    assert main(["deid", str(src), str(busy)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["deid", str(src), str(busy), "--force"]) == 0
    assert (busy / "keep.txt").exists() and len(list(busy.rglob("*.dcm"))) == 1
