"""Signal readers against the libraries' own values: wfdb (record, annotations), pydicom
(waveform), pyedflib (EDF written in the test); bad headers and truncated files raise InputError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medfm.errors import InputError
from medfm.io.signal import (
    describe_signal,
    is_signal_path,
    read_dicom_waveform,
    read_edf,
    read_signal,
    read_wfdb,
    read_wfdb_annotations,
)

wfdb = pytest.importorskip("wfdb")


def _write_record(folder: Path, name: str = "rec", n: int = 2000, fs: int = 250) -> np.ndarray:
    """A 2-lead WFDB record in format 16 (physical values in mV), written by wfdb itself."""
    t = np.arange(n) / fs
    sig = np.stack([np.sin(2 * np.pi * 1.2 * t), 0.5 * np.cos(2 * np.pi * 0.7 * t)], axis=1)
    wfdb.wrsamp(name, fs=fs, units=["mV", "mV"], sig_name=["II", "V"], p_signal=sig, fmt=["16", "16"],
                adc_gain=[1000.0, 1000.0], baseline=[0, 0], write_dir=str(folder), comments=["made in a test"])
    return sig


def test_wfdb_record_matches_wfdb(tmp_path: Path) -> None:
    _write_record(tmp_path)
    ours = read_signal(tmp_path / "rec.hea")
    ref = wfdb.rdrecord(str(tmp_path / "rec"))
    assert ours.data.shape == (2, 2000) and ours.fs == 250.0
    assert ours.channels == ("II", "V") and ours.units == ("mV", "mV")
    np.testing.assert_allclose(ours.data, ref.p_signal.T, atol=1e-6)
    assert ours.meta["comments"] == ["made in a test"]
    assert is_signal_path(tmp_path / "rec") and is_signal_path(tmp_path / "rec.dat")


def test_mitdb_100_and_annotations_match_wfdb(shared_data: Path) -> None:
    rec = shared_data / "ecg_physionet" / "mitdb" / "100"
    if not rec.with_suffix(".hea").is_file():
        pytest.skip("ecg_physionet not in the shared data")
    sig = read_wfdb(rec, annotations="atr")
    ref = wfdb.rdrecord(str(rec))
    ann = wfdb.rdann(str(rec), "atr")
    assert sig.channels == tuple(ref.sig_name) == ("MLII", "V5") and sig.fs == ref.fs == 360
    np.testing.assert_allclose(sig.data[:, :5000], ref.p_signal[:5000].T, atol=1e-6)
    np.testing.assert_array_equal(sig.annotations.sample, ann.sample)
    assert list(sig.annotations.symbol) == list(ann.symbol)
    beats = sig.annotations.beats()
    assert beats.counts() == {"N": 2239, "A": 33, "V": 1}  # the record's published beat counts
    again = read_wfdb_annotations(rec.with_suffix(".hea"), "atr")
    np.testing.assert_array_equal(again.sample, ann.sample)


def test_dicom_waveform_matches_pydicom() -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    path = get_testdata_file("waveform_ecg.dcm")
    if path is None:
        pytest.skip("pydicom test file waveform_ecg.dcm not available")
    sig = read_dicom_waveform(path)
    ds = pydicom.dcmread(path)
    ref = ds.waveform_array(0)
    assert sig.data.shape == (12, ref.shape[0]) and sig.fs == float(ds.WaveformSequence[0].SamplingFrequency)
    np.testing.assert_allclose(sig.data, ref.T.astype(np.float32))
    assert sig.channels[1:3] == ("II", "III") and set(sig.units) == {"uV"}
    assert is_signal_path(path)
    info = describe_signal(sig)
    assert info["format"] == "DICOM waveform" and info["duration_s"] == 10.0


def test_edf_round_trip(tmp_path: Path) -> None:
    highlevel = pytest.importorskip("pyedflib.highlevel")
    fs = 256
    x = np.stack([np.sin(np.arange(fs * 4) / 10.0) * 100, np.cos(np.arange(fs * 4) / 7.0) * 50])
    headers = highlevel.make_signal_headers(["EEG Fz", "EEG Cz"], dimension="uV", sample_frequency=fs,
                                            physical_min=-200, physical_max=200)
    path = tmp_path / "rec.edf"
    highlevel.write_edf(str(path), x, headers)
    sig = read_edf(path)
    ref, _, _ = highlevel.read_edf(str(path))
    assert sig.channels == ("EEG Fz", "EEG Cz") and sig.fs == fs and sig.units == ("uV", "uV")
    np.testing.assert_allclose(sig.data, ref, atol=1e-4)
    assert read_signal(path).n_samples == fs * 4


def test_bad_header_raises_naming_file(tmp_path: Path) -> None:
    _write_record(tmp_path)
    (tmp_path / "rec.hea").write_text("this is not a header\n")
    with pytest.raises(InputError, match=r"rec\.hea.*not a valid WFDB header"):
        read_signal(tmp_path / "rec")


def test_truncated_signal_file_raises(tmp_path: Path) -> None:
    _write_record(tmp_path)
    dat = tmp_path / "rec.dat"
    dat.write_bytes(dat.read_bytes()[:1000])
    with pytest.raises(InputError, match=r"rec\.dat.*truncated"):
        read_signal(tmp_path / "rec.hea")


def test_missing_record_and_no_waveform(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_signal(tmp_path / "nothing.edf")
    assert not is_signal_path(tmp_path / "image.png")
