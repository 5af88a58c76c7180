"""``medfm datasets list | show | verify`` in-process; bad input gives exit 2, one line, no changes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medfm.cli.main import main


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("medfm: error: ")
    return err[0]


def test_list_json(capsys: pytest.CaptureFixture[str], shared_data: Path) -> None:
    assert main(["datasets", "list", "--json", "--data-dir", str(shared_data)]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert len(rows) >= 64
    assert rows["breastmnist"]["present"] is True and rows["pathmnist_224"]["present"] is False
    assert rows["hc18"]["task"] == "segmentation"


def test_list_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets", "list"]) == 0
    assert "breastmnist_224" in capsys.readouterr().out


def test_show(capsys: pytest.CaptureFixture[str], shared_data: Path) -> None:
    assert main(["datasets", "show", "adrenalmnist3d_64", "--json", "--data-dir", str(shared_data)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["present"] is True and info["ndim"] == 3
    assert info["local_files"]["adrenalmnist3d_64.npz"] == str(shared_data / "adrenalmnist3d" / "adrenalmnist3d_64.npz")
    assert info["files"][0]["md5"] == "17721accfe9fb005146a47d33bc54b2f"
    assert main(["datasets", "show", "hc18", "--data-dir", str(shared_data)]) == 0
    out = capsys.readouterr().out
    assert "CC BY 4.0" in out and str(shared_data / "hc18_fetal_head") in out


def test_show_folder_and_bundled(capsys: pytest.CaptureFixture[str], shared_data: Path) -> None:
    assert main(["datasets", "show", str(shared_data / "msd_hippocampus"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["task"] == "segmentation" and info["present"] is True
    assert info["options"]["split"]["method"] == "fixed-seed, case-level"
    assert main(["datasets", "show", "hc18_fetal_head"]) == 2
    assert "Did you mean 'hc18'" in _one_error_line(capsys)


def test_verify_one(capsys: pytest.CaptureFixture[str], shared_data: Path) -> None:
    assert main(["datasets", "verify", "breastmnist", "--json", "--data-dir", str(shared_data)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["status"] == "ok" and r["counts"] == {"train": 546, "val": 78, "test": 156}


def test_verify_all_no_read(capsys: pytest.CaptureFixture[str], shared_data: Path) -> None:
    assert main(["datasets", "verify", "--no-read", "--json", "--data-dir", str(shared_data)]) == 0
    results = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert results["pathmnist"]["status"] == "absent"
    for name in ("breastmnist", "retinamnist", "adrenalmnist3d", "adrenalmnist3d_64", "hc18", "msd_hippocampus"):
        assert results[name]["status"] == "ok", results[name]


@pytest.mark.slow
def test_verify_all_reads_the_shared_data(capsys: pytest.CaptureFixture[str], shared_data: Path) -> None:
    assert main(["datasets", "verify", "--data-dir", str(shared_data)]) == 0
    out = capsys.readouterr().out
    assert "absent" in out and "hc18" in out


# ---------------------------------------------------------------- bad input: exit 2, one line, nothing changed

def test_checksum_mismatch(capsys: pytest.CaptureFixture[str], shared_data: Path, tmp_path: Path) -> None:
    (tmp_path / "breastmnist").mkdir()
    bad = tmp_path / "breastmnist" / "breastmnist.npz"
    data = bytearray((shared_data / "breastmnist" / "breastmnist.npz").read_bytes())
    data[-100] ^= 0xFF
    bad.write_bytes(bytes(data))
    before = _snapshot(tmp_path)
    assert main(["datasets", "verify", "breastmnist", "--data-dir", str(tmp_path)]) == 2
    line = _one_error_line(capsys)
    assert str(bad) in line and "750601b1f35ba3300ea97c75c52ff8f6" in line and "mismatch" in line
    assert _snapshot(tmp_path) == before
    # without NAME: reported in the table, error line on stderr, still exit 2
    assert main(["datasets", "verify", "--no-read", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "breastmnist" in err and "mismatch" in err
    assert _snapshot(tmp_path) == before


def test_missing_offline(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    before = _snapshot(tmp_path)
    assert main(["datasets", "verify", "dermamnist_64", "--data-dir", str(tmp_path)]) == 2
    line = _one_error_line(capsys)
    assert "https://zenodo.org/records/10519652/files/dermamnist_64.npz?download=1" in line
    assert str(tmp_path / "dermamnist" / "dermamnist_64.npz") in line
    assert _snapshot(tmp_path) == before


def test_unknown_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets", "show", "retinamnst"]) == 2
    assert "Did you mean 'retinamnist'" in _one_error_line(capsys)
    assert main(["datasets", "verify", "adrenalmnist3d_46"]) == 2
    assert "Did you mean" in _one_error_line(capsys)


def test_mask_geometry_mismatch(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 7), np.float32), np.eye(4)), str(tmp_path / "imagesTr" / "x.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((5, 6, 8), np.uint8), np.eye(4)), str(tmp_path / "labelsTr" / "x.nii.gz"))
    before = _snapshot(tmp_path)
    assert main(["datasets", "verify", str(tmp_path)]) == 2
    line = _one_error_line(capsys)
    assert str(tmp_path / "imagesTr" / "x.nii.gz") in line and str(tmp_path / "labelsTr" / "x.nii.gz") in line
    assert _snapshot(tmp_path) == before


def test_empty_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["datasets", "verify", str(empty)]) == 2
    assert "no images found" in _one_error_line(capsys)
    assert list(empty.iterdir()) == []


def test_corrupt_file_in_folder_dataset(capsys: pytest.CaptureFixture[str], shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "msd_hippocampus"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for sub in ("imagesTr", "labelsTr"):
        shutil.copy(shared_data / "msd_hippocampus" / sub / "hippocampus_004.nii.gz", root / sub)
    (root / "labelsTr" / "hippocampus_004.nii.gz").write_bytes(b"not a nifti")
    before = _snapshot(tmp_path)
    assert main(["datasets", "verify", "msd_hippocampus", "--data-dir", str(tmp_path)]) == 2
    assert "hippocampus_004.nii.gz" in _one_error_line(capsys)
    assert _snapshot(tmp_path) == before
