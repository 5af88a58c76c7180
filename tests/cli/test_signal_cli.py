"""``medfm signals`` and ``medfm info`` on signals, in-process: detection with --json and --out,
HRV, and bad WFDB files (broken header, truncated signal file) as one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medfm.cli.main import main

wfdb = pytest.importorskip("wfdb")
pytest.importorskip("neurokit2")


def _write_record(folder: Path) -> Path:
    fs = 250
    t = np.arange(fs * 20) / fs
    x = sum(np.exp(-0.5 * ((t - p) / 0.01) ** 2) for p in np.arange(0.5, 20, 0.8))
    sig = np.stack([x, 0.5 * x], axis=1)
    wfdb.wrsamp("rec", fs=fs, units=["mV", "mV"], sig_name=["II", "V"], p_signal=sig, fmt=["16", "16"],
                adc_gain=[1000.0, 1000.0], baseline=[0, 0], write_dir=str(folder))
    return folder / "rec"


def test_info_on_a_wfdb_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = _write_record(tmp_path)
    assert main(["info", str(rec) + ".hea", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "signal" and info["channels"] == ["II", "V"] and info["fs_hz"] == 250
    assert info["duration_s"] == 20.0
    assert main(["info", str(rec)]) == 0
    assert "250" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["header", "truncate"])
def test_bad_wfdb_files_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str) -> None:
    rec = _write_record(tmp_path)
    if damage == "header":
        (tmp_path / "rec.hea").write_text("rec two 250 x\n")
        named = "rec.hea"
    else:
        dat = tmp_path / "rec.dat"
        dat.write_bytes(dat.read_bytes()[:5000])
        named = "rec.dat"
    for argv in (["info", str(rec) + ".hea"], ["signals", "hrv", str(rec)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and named in err and err.startswith("medfm: error:")


def test_hrv_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = _write_record(tmp_path)
    assert main(["signals", "hrv", str(rec), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mean_hr_bpm"] == pytest.approx(75.0, abs=0.5)  # beats every 0.8 s


def test_detect_command_on_mitdb_100(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not (shared_data / "ecg_physionet" / "mitdb" / "100.hea").is_file():
        pytest.skip("ecg_physionet not in the shared data")
    argv = ["signals", "detect", "--record", "ecg_physionet/mitdb/100", "--annotations", "atr",
            "--candidates", "neurokit,pantompkins1985", "--data-dir", str(shared_data), "--out", str(tmp_path / "d"),
            "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    chosen = out["detectors"][out["chosen_on_dev"]]["test"]
    assert chosen["tp"] + chosen["fn"] == 1902 and chosen["sensitivity"] >= 0.995
    for key in ("results", "strip", "beat_errors"):
        assert Path(out["files"][key]).is_file()
    doc = json.loads(Path(out["files"]["results"]).read_text())
    assert {r["protocol"] for r in doc["records"]} == {"beat_detection_ec57"}
    assert main(argv[:-1]) == 2  # --out exists and is not empty: refuse without --force
    assert "not empty" in capsys.readouterr().err
