"""Signal processing wrappers (neurokit2) and beat datasets: detection on a simulated ECG, HRV on
known intervals, beat windows, and the time-disjoint N-vs-A split of MIT-BIH record 100."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("neurokit2")

from medfm.data.signals import (  # noqa: E402
    BeatDatasetConfig,
    alarm_features,
    alarm_label,
    beat_dataset,
    detect_rpeaks,
    filter_signal,
    heart_rate,
    hrv,
    resample,
    segment_beats,
)
from medfm.errors import ConfigError, InputError  # noqa: E402
from medfm.io.signal import Annotations, Signal  # noqa: E402
from medfm.metrics.beats import match_beats  # noqa: E402


def _spikes(fs: float, rr_s: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """A clean synthetic 'ECG': narrow Gaussian R waves at the given RR intervals plus baseline."""
    peaks = (np.cumsum([1.0, *rr_s]) * fs).astype(int)
    t = np.arange(int(peaks[-1] + fs))
    x = 0.2 * np.sin(2 * np.pi * 0.2 * t / fs)
    for p in peaks:
        x += np.exp(-0.5 * ((t - p) / (0.01 * fs)) ** 2)
    return x, peaks


def test_detect_rpeaks_finds_every_synthetic_beat() -> None:
    fs = 250.0
    x, peaks = _spikes(fs, [0.8, 0.75, 0.9, 0.6, 1.0] * 6)
    for method in ("neurokit", "pantompkins1985"):
        found = detect_rpeaks(x, fs, method)
        m = match_beats(peaks, found, fs)
        assert m.fn <= 1 and m.fp == 0, method  # the first beat may fall in the detector's warm-up
    with pytest.raises(ConfigError, match="unknown QRS detector"):
        detect_rpeaks(x, fs, "nope")


def test_hrv_and_heart_rate_on_known_intervals() -> None:
    fs = 100.0
    peaks = np.arange(0, 60 * fs, fs)  # RR = 1 s exactly
    out = hrv(peaks, fs)
    assert out["mean_rr_ms"] == pytest.approx(1000.0)
    assert out["sdnn_ms"] == pytest.approx(0.0, abs=1e-9) and out["rmssd_ms"] == pytest.approx(0.0, abs=1e-9)
    assert out["mean_hr_bpm"] == pytest.approx(60.0)
    alt = np.cumsum([0] + [100, 120] * 20)  # RR alternating 1.0 / 1.2 s -> successive differences 200 ms
    assert hrv(alt, fs)["rmssd_ms"] == pytest.approx(200.0)
    np.testing.assert_allclose(heart_rate(np.array([0, 100, 150]), fs), [60.0, 120.0])
    with pytest.raises(InputError):
        hrv(np.array([1, 2]), fs)


def test_filter_and_resample() -> None:
    fs = 200.0
    t = np.arange(int(10 * fs)) / fs
    x = np.sin(2 * np.pi * 0.05 * t) * 3 + np.sin(2 * np.pi * 10 * t)  # wander + 10 Hz
    y = filter_signal(x, fs, lowcut=0.5, highcut=40)
    mid = slice(400, 1600)
    np.testing.assert_allclose(y[mid], np.sin(2 * np.pi * 10 * t)[mid], atol=0.1)
    assert resample(x, fs, 100.0).shape == (1000,)
    assert filter_signal(np.stack([x, x]), fs).shape == (2, 2000)


def test_segment_beats_drops_windows_at_edges() -> None:
    x = np.arange(100, dtype=np.float32)[None]
    w, kept = segment_beats(x, np.array([2, 50, 97]), before=5, after=5)
    assert kept.tolist() == [1] and w.shape == (1, 1, 10)
    np.testing.assert_array_equal(w[0, 0], np.arange(45, 55))


def test_beat_dataset_is_time_disjoint_on_a_synthetic_record() -> None:
    fs = 250.0
    rr = [0.8] * 80
    rr[10] = rr[40] = rr[70] = 0.5  # premature beats: label 'A'
    x, peaks = _spikes(fs, rr)
    sym = np.array(["N"] * len(peaks))
    sym[[11, 41, 71]] = "A"
    sig = Signal(x[None], fs, ("MLII",), ("mV",), annotations=Annotations(peaks, sym))
    data = beat_dataset(sig, BeatDatasetConfig(fs=125.0, split_at=(0.4, 0.7)))
    assert data.x["train"].shape[1:] == (1, 250)
    assert data.t["train"].max() < data.t["val"].min() <= data.t["val"].max() < data.t["test"].min()
    assert {s: data.counts[s]["A"] for s in ("train", "val", "test")} == {"train": 1, "val": 1, "test": 1}
    # the premature beats have the short previous RR
    a = data.rr["train"][data.y["train"] == 1]
    assert a[0, 0] == pytest.approx(0.5, abs=0.01)


def test_mitdb_100_n_vs_a(shared_data: Path) -> None:
    rec = shared_data / "ecg_physionet" / "mitdb" / "100"
    if not rec.with_suffix(".hea").is_file():
        pytest.skip("ecg_physionet not in the shared data")
    from medfm.io.signal import read_wfdb

    data = beat_dataset(read_wfdb(rec, annotations="atr"))
    total = {c: sum(data.counts[s][c] for s in data.counts) for c in ("N", "A")}
    assert total["A"] == 33 and 2230 <= total["N"] <= 2239  # a few N beats at the record's ends lack a full window
    assert all(data.counts[s]["A"] >= 5 for s in ("train", "val", "test"))


def test_alarm_features_on_challenge_record(shared_data: Path) -> None:
    rec = shared_data / "ecg_physionet" / "challenge2015" / "v102s"
    if not rec.with_suffix(".hea").is_file():
        pytest.skip("ecg_physionet not in the shared data")
    from medfm.io.signal import read_wfdb

    sig = read_wfdb(rec)
    assert alarm_label(sig) == ("Ventricular_Tachycardia", False)
    f = alarm_features(sig)
    assert {"ii_beats", "v_hr_max", "ii_max_gap_s", "pleth_beats"} <= set(f)
    assert 5 <= f["v_beats"] <= 60  # 16 s of a heart beating at 20-200 bpm
