"""Signal processing and beat-level datasets, wrapping neurokit2 (maintained ECG toolbox).

Processing: ``filter_signal`` (Butterworth band-pass), ``resample`` (neurokit2),
``detect_rpeaks`` (neurokit2's published QRS detectors: Pan-Tompkins, Hamilton, Elgendi,
...), ``heart_rate`` and ``hrv`` (time-domain HRV). Datasets: ``segment_beats`` cuts fixed
windows around beat positions; ``beat_dataset`` turns an annotated record into labelled beat
windows with a time-disjoint train / val / test split; ``alarm_features`` summarises a bedside
record (Challenge 2015) into HR / HRV / signal-quality numbers.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medfm._optional import optional_import
from medfm.errors import ConfigError, InputError
from medfm.io.signal import Signal

# neurokit2 QRS detectors (``nk.ecg_peaks(method=...)``); the cleaning step each one expects
DETECTORS: dict[str, str] = {
    "neurokit": "neurokit",
    "pantompkins1985": "pantompkins1985",
    "hamilton2002": "hamilton2002",
    "elgendi2010": "elgendi2010",
    "engzeemod2012": "engzeemod2012",
    "kalidas2017": "neurokit",
    "nabian2018": "neurokit",
    "rodrigues2021": "neurokit",
    "christov2004": "neurokit",
}


def _nk() -> Any:
    return optional_import("neurokit2")


def filter_signal(x: np.ndarray, fs: float, lowcut: float | None = 0.5, highcut: float | None = 40.0,
                  order: int = 2) -> np.ndarray:
    """Zero-phase Butterworth band-pass of (T,) or (C, T) ``x`` (Hz; None leaves that side open):
    0.5 Hz removes baseline wander, 40 Hz muscle noise and mains hum."""
    nk = _nk()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        return np.asarray(nk.signal_filter(x, sampling_rate=fs, lowcut=lowcut, highcut=highcut, order=order))
    return np.stack([filter_signal(c, fs, lowcut, highcut, order) for c in x])


def resample(x: np.ndarray, fs: float, new_fs: float) -> np.ndarray:
    """Resample (T,) or (C, T) ``x`` from ``fs`` to ``new_fs`` Hz (neurokit2, FFT method)."""
    nk = _nk()
    x = np.asarray(x, dtype=np.float64)
    if fs == new_fs:
        return x
    if x.ndim == 1:
        return np.asarray(nk.signal_resample(x, sampling_rate=int(round(fs)), desired_sampling_rate=int(round(new_fs)),
                                             method="FFT"))
    return np.stack([resample(c, fs, new_fs) for c in x])


def detect_rpeaks(x: np.ndarray, fs: float, method: str = "neurokit") -> np.ndarray:
    """R-peak sample indices (int64, sorted) of one ECG lead (T,) with neurokit2's ``method``
    (cleaned first with the filter that detector was published with)."""
    if method not in DETECTORS:
        raise ConfigError(f"unknown QRS detector '{method}'; expected one of {sorted(DETECTORS)}")
    nk = _nk()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise InputError(f"detect_rpeaks: one lead (T,) expected, got shape {x.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cleaned = nk.ecg_clean(x, sampling_rate=fs, method=DETECTORS[method])
        _, info = nk.ecg_peaks(cleaned, sampling_rate=fs, method=method, correct_artifacts=False)
    return np.unique(np.asarray(info["ECG_R_Peaks"], dtype=np.int64))


def heart_rate(peaks: np.ndarray, fs: float) -> np.ndarray:
    """Instantaneous heart rate (bpm) per RR interval: (len(peaks) - 1,)."""
    rr = np.diff(np.asarray(peaks, dtype=np.float64)) / fs
    return 60.0 / rr if len(rr) else np.zeros(0)


def hrv(peaks: np.ndarray, fs: float) -> dict[str, float]:
    """Time-domain HRV from R-peaks with neurokit2 (``hrv_time``): mean RR, SDNN, RMSSD, pNN50 (ms, %)
    and mean heart rate (bpm). Needs at least 3 beats."""
    peaks = np.asarray(peaks, dtype=np.int64)
    if len(peaks) < 3:
        raise InputError(f"hrv: needs at least 3 beats, got {len(peaks)}")
    nk = _nk()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = nk.hrv_time(peaks, sampling_rate=fs)
    row = table.iloc[0]
    return {
        "mean_rr_ms": float(row["HRV_MeanNN"]),
        "sdnn_ms": float(row["HRV_SDNN"]),
        "rmssd_ms": float(row["HRV_RMSSD"]),
        "pnn50_pct": float(row["HRV_pNN50"]),
        "mean_hr_bpm": float(np.mean(heart_rate(peaks, fs))),
    }


def segment_beats(x: np.ndarray, positions: np.ndarray, before: int, after: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows [p - before, p + after) of (C, T) ``x`` around each position -> ((N, C, before + after),
    indices of the positions kept: those whose window lies wholly inside the record)."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    positions = np.asarray(positions, dtype=np.int64)
    keep = np.flatnonzero((positions - before >= 0) & (positions + after <= x.shape[1]))
    if len(keep) == 0:
        return np.zeros((0, x.shape[0], before + after), dtype=np.float32), keep
    offsets = np.arange(-before, after)
    idx = positions[keep][:, None] + offsets[None, :]
    return np.ascontiguousarray(x[:, idx].transpose(1, 0, 2)), keep


# --------------------------------------------------------------------------------------
# Beat-level dataset (MIT-BIH style annotations)
# --------------------------------------------------------------------------------------
@dataclass
class BeatDatasetConfig:
    """Beat windows from an annotated record. ``classes``: annotation codes, one class each
    (other beats are dropped); ``lead``; band-pass then resample to ``fs`` Hz; the window runs
    ``before_s`` before to ``after_s`` after the reference beat (long enough before to hold the
    previous beat, so prematurity is visible); splits are contiguous time blocks: train up to
    ``split_at[0]`` of the record, val up to ``split_at[1]``, test the rest (time-disjoint);
    each window is standardised by the train split's mean / std."""

    classes: tuple[str, ...] = ("N", "A")
    lead: str = "MLII"
    fs: float = 120.0
    before_s: float = 1.5
    after_s: float = 0.5
    split_at: tuple[float, float] = (0.6, 0.8)
    lowcut: float = 0.5
    highcut: float = 40.0

    def __post_init__(self) -> None:
        if len(self.classes) < 2:
            raise ConfigError(f"beat dataset: need at least 2 classes, got {self.classes}")
        a, b = self.split_at
        if not 0 < a < b < 1:
            raise ConfigError(f"beat dataset: split_at must satisfy 0 < train < val < 1, got {self.split_at}")
        if self.before_s < 0 or self.after_s <= 0 or self.fs <= 0:
            raise ConfigError("beat dataset: before_s >= 0, after_s > 0 and fs > 0 required")


@dataclass
class BeatSplits:
    """Beat windows per split: ``x[split]`` (N, 1, L) float32, ``y[split]`` (N,) class indices,
    ``rr[split]`` (N, 3) pre-RR, post-RR (s) and pre-RR / local mean RR (hand-made baseline
    features), ``t[split]`` (N,) beat times (s); ``unlabelled`` every beat window of the train
    part (for self-supervised pretraining)."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    rr: dict[str, np.ndarray]
    t: dict[str, np.ndarray]
    label_names: tuple[str, ...]
    fs: float
    source: str = ""
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


def _rr_features(beats: np.ndarray, fs: float, local: int = 10) -> np.ndarray:
    """(N, 3): previous RR, next RR (s) and previous RR / mean of the ``local`` previous RRs."""
    b = np.asarray(beats, dtype=np.float64)
    rr = np.diff(b) / fs
    pre = np.concatenate([[rr[0] if len(rr) else 1.0], rr])
    post = np.concatenate([rr, [rr[-1] if len(rr) else 1.0]])
    csum = np.concatenate([[0.0], np.cumsum(pre)])
    n = np.arange(len(pre))
    lo = np.maximum(0, n - local)
    mean_local = (csum[n] - csum[lo]) / np.maximum(n - lo, 1)
    mean_local[0] = pre[0]
    return np.stack([pre, post, pre / np.maximum(mean_local, 1e-6)], axis=1).astype(np.float32)


def beat_dataset(sig: Signal, cfg: BeatDatasetConfig | None = None) -> BeatSplits:
    """Labelled beat windows with a time-disjoint split from a record with beat annotations."""
    cfg = cfg or BeatDatasetConfig()
    if sig.annotations is None:
        raise InputError(f"{sig.meta.get('path', 'signal')}: no beat annotations attached (read it with annotations='atr')")
    beats = sig.annotations.beats()
    x = filter_signal(sig.channel(cfg.lead), sig.fs, cfg.lowcut, cfg.highcut)
    x = resample(x, sig.fs, cfg.fs)
    scale = cfg.fs / sig.fs
    pos = np.round(beats.sample * scale).astype(np.int64)
    rr = _rr_features(beats.sample, sig.fs)
    windows, kept = segment_beats(x[None], pos, int(round(cfg.before_s * cfg.fs)), int(round(cfg.after_s * cfg.fs)))
    symbols = beats.symbol[kept]
    times = beats.sample[kept] / sig.fs
    rr = rr[kept]
    duration = sig.duration_s
    bounds = (0.0, cfg.split_at[0] * duration, cfg.split_at[1] * duration, math.inf)
    labelled = np.isin(symbols, list(cfg.classes))
    y_all = np.array([cfg.classes.index(s) if s in cfg.classes else -1 for s in symbols], dtype=np.int64)
    out_x, out_y, out_rr, out_t, counts = {}, {}, {}, {}, {}
    for i, split in enumerate(("train", "val", "test")):
        m = (times >= bounds[i]) & (times < bounds[i + 1])
        sel = m & labelled
        out_x[split], out_y[split], out_rr[split], out_t[split] = windows[sel], y_all[sel], rr[sel], times[sel]
        counts[split] = {c: int((y_all[sel] == k).sum()) for k, c in enumerate(cfg.classes)}
        if split == "train":
            unlabelled = windows[m]
    mu, sd = float(out_x["train"].mean()), float(out_x["train"].std() + 1e-6)
    for split in out_x:
        out_x[split] = ((out_x[split] - mu) / sd).astype(np.float32)
    splits = BeatSplits(out_x, out_y, out_rr, out_t, tuple(cfg.classes), cfg.fs,
                        source=str(sig.meta.get("path", "")), counts=counts)
    splits.x["unlabelled"] = ((unlabelled - mu) / sd).astype(np.float32)
    for split, c in counts.items():
        short = [k for k, v in c.items() if v == 0]
        if short:
            raise InputError(f"{splits.source}: the {split} split has no beats of class(es) {short} (counts {c})")
    return splits


# --------------------------------------------------------------------------------------
# Bedside alarm records (PhysioNet/CinC Challenge 2015)
# --------------------------------------------------------------------------------------
ALARM_TYPES = ("Asystole", "Extreme_Bradycardia", "Extreme_Tachycardia", "Ventricular_Tachycardia",
               "Ventricular_Flutter_Fib")


def alarm_label(sig: Signal) -> tuple[str | None, bool | None]:
    """(alarm type, True for a true alarm) from a Challenge-2015 header's comment lines."""
    comments = [str(c).strip() for c in sig.meta.get("comments", [])]
    alarm = next((c for c in comments if c in ALARM_TYPES), None)
    verdict = next((c for c in comments if c in ("True alarm", "False alarm")), None)
    return alarm, None if verdict is None else verdict == "True alarm"


def alarm_features(sig: Signal, window_s: float = 16.0, method: str = "neurokit") -> dict[str, float]:
    """Features of the last ``window_s`` seconds before the alarm (the alarm sounds at 5:00 in
    Challenge-2015 records): per ECG lead (II, V) beats found, HR min / max / mean, longest RR
    gap (asystole) and HRV, and the pulsatile (PLETH) channel's beat count, so a rule or model
    can tell a true from a false alarm."""
    alarm_at = min(sig.n_samples, int(round(300 * sig.fs)))
    start = max(0, alarm_at - int(round(window_s * sig.fs)))
    feats: dict[str, float] = {}
    for lead in sig.channels:
        x = sig.channel(lead)[start:alarm_at].astype(np.float64)
        key = lead.lower()
        if lead.upper() in ("PLETH", "ABP", "RESP"):
            if lead.upper() == "RESP":
                continue
            nk = _nk()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    _, info = nk.ppg_peaks(nk.ppg_clean(x, sampling_rate=sig.fs), sampling_rate=sig.fs)
                n = len(info["PPG_Peaks"])
            except Exception:  # a flat or clipped pulse channel has no peaks
                n = 0
            feats[f"{key}_beats"] = float(n)
            continue
        try:
            peaks = detect_rpeaks(x, sig.fs, method)
        except Exception:
            peaks = np.zeros(0, dtype=np.int64)
        feats[f"{key}_beats"] = float(len(peaks))
        hr = heart_rate(peaks, sig.fs)
        feats[f"{key}_hr_min"] = float(hr.min()) if len(hr) else 0.0
        feats[f"{key}_hr_max"] = float(hr.max()) if len(hr) else 0.0
        feats[f"{key}_hr_mean"] = float(hr.mean()) if len(hr) else 0.0
        edges = np.concatenate([[0], peaks, [len(x)]])
        feats[f"{key}_max_gap_s"] = float(np.diff(edges).max() / sig.fs)
        feats[f"{key}_rmssd_ms"] = float(np.sqrt(np.mean(np.diff(np.diff(peaks) / sig.fs * 1000) ** 2))) if len(peaks) > 2 else 0.0
        feats[f"{key}_flat_share"] = float(np.mean(np.abs(np.diff(x)) < 1e-6))
    return feats
