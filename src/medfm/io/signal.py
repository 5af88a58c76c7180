"""Physiological signals in: WFDB records and annotations, DICOM waveforms, EDF/EDF+/BDF.

Every reader returns :class:`Signal`: samples (C, T) float32 in physical units (e.g. mV),
one sampling rate, lead names and units per channel, the start time when the file has one,
and annotations (sample index + symbol) where the format stores them. Readers wrap ``wfdb``,
``pydicom`` and ``pyedflib`` (extra ``signals``); bad files raise :class:`InputError`
naming the file.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfm._optional import optional_import
from medfm.errors import InputError

# MIT-BIH beat annotation codes (physionet.org/physiobank/annotations.shtml); other codes mark
# rhythm changes, noise or comments and are not beats.
BEAT_SYMBOLS: frozenset[str] = frozenset("NLRBAaJSVrFejnE/fQ?")

WFDB_SUFFIXES = (".hea", ".dat", ".mat")
EDF_SUFFIXES = (".edf", ".bdf", ".rec")


@dataclass
class Annotations:
    """Events on a signal: ``sample`` (N,) int64 indices into the time axis, ``symbol`` (N,)
    codes (MIT-BIH beat codes such as N, A, V; '+' rhythm change), ``aux`` free text per event."""

    sample: np.ndarray
    symbol: np.ndarray
    aux: np.ndarray | None = None
    source: str = ""

    def __post_init__(self) -> None:
        self.sample = np.asarray(self.sample, dtype=np.int64)
        self.symbol = np.asarray(self.symbol, dtype=str)
        if self.sample.shape != self.symbol.shape:
            raise InputError(f"annotations {self.source}: {self.sample.size} samples but {self.symbol.size} symbols")
        if self.aux is not None:
            self.aux = np.asarray(self.aux, dtype=str)

    def beats(self) -> Annotations:
        """Only the beat annotations (codes in ``BEAT_SYMBOLS``), in time order."""
        keep = np.isin(self.symbol, list(BEAT_SYMBOLS))
        order = np.argsort(self.sample[keep], kind="stable")
        return Annotations(self.sample[keep][order], self.symbol[keep][order],
                           None if self.aux is None else self.aux[keep][order], self.source)

    def counts(self) -> dict[str, int]:
        """Number of events per symbol, most frequent first."""
        values, n = np.unique(self.symbol, return_counts=True)
        return {str(v): int(c) for v, c in sorted(zip(values, n), key=lambda t: -t[1])}

    def __len__(self) -> int:
        return int(self.sample.size)


@dataclass
class Signal:
    """A multichannel recording: ``data`` (C, T) float32 in physical ``units`` per channel,
    sampled at ``fs`` Hz; ``channels`` lead names (e.g. 'MLII', 'V5', 'II'); ``start_time``
    of sample 0 when the file records it; ``meta`` format details and header comments."""

    data: np.ndarray
    fs: float
    channels: tuple[str, ...]
    units: tuple[str, ...]
    start_time: _dt.datetime | _dt.time | None = None
    annotations: Annotations | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data, dtype=np.float32)
        if self.data.ndim != 2:
            raise InputError(f"signal {self.meta.get('path', '')}: data must be (channels, time), got shape {self.data.shape}")
        self.channels = tuple(str(c) for c in self.channels)
        self.units = tuple(str(u) for u in self.units)
        if len(self.channels) != self.data.shape[0] or len(self.units) != self.data.shape[0]:
            raise InputError(f"signal {self.meta.get('path', '')}: {self.data.shape[0]} channels but "
                             f"{len(self.channels)} names and {len(self.units)} units")
        if not self.fs > 0:
            raise InputError(f"signal {self.meta.get('path', '')}: sampling rate must be positive, got {self.fs}")

    @property
    def n_channels(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.data.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / float(self.fs)

    def channel(self, name: str | int) -> np.ndarray:
        """One channel (T,) by lead name (case-insensitive) or index."""
        if isinstance(name, int):
            return self.data[name]
        lowered = [c.lower() for c in self.channels]
        if name.lower() not in lowered:
            raise InputError(f"signal {self.meta.get('path', '')}: no lead '{name}'; leads are {list(self.channels)}")
        return self.data[lowered.index(name.lower())]


# --------------------------------------------------------------------------------------
# WFDB
# --------------------------------------------------------------------------------------
def _wfdb_record_name(path: str | Path) -> tuple[Path, str]:
    """``path`` (record name with or without .hea/.dat) -> (header path, record name for wfdb)."""
    p = Path(path)
    if p.suffix.lower() in WFDB_SUFFIXES:
        p = p.with_suffix("")
    header = p.with_name(p.name + ".hea")
    if not header.is_file():
        raise InputError(f"{path}: no WFDB header {header.name} next to it")
    return header, str(p)


# bytes per sample of the common WFDB storage formats (212: two 12-bit samples in 3 bytes)
_FMT_BYTES: dict[str, float] = {"8": 1, "80": 1, "16": 2, "61": 2, "160": 2, "212": 1.5, "24": 3, "32": 4,
                                "310": 4 / 3, "311": 4 / 3}


def _check_wfdb_files(wfdb: Any, header: Path, name: str) -> None:
    """Parse the header and check that each signal file is as long as the header declares, so a
    truncated download is reported as such (wfdb itself fails with a broadcasting error)."""
    try:
        hdr = wfdb.rdheader(name)
    except Exception as exc:
        raise InputError(f"{header}: not a valid WFDB header ({type(exc).__name__}: {exc})") from exc
    if not hdr.n_sig or not hdr.file_name:
        return
    if hdr.sig_len is None:
        return
    per_file: dict[str, list[int]] = {}
    for i, fname in enumerate(hdr.file_name):
        per_file.setdefault(fname, []).append(i)
    for fname, idx in per_file.items():
        fmt = str(hdr.fmt[idx[0]])
        if fname.endswith(".mat") or fmt not in _FMT_BYTES or fname == "-":
            continue
        f = header.parent / fname
        if not f.is_file():
            raise InputError(f"{header}: signal file {fname} not found beside the header")
        offset = int(hdr.byte_offset[idx[0]] or 0) if hdr.byte_offset else 0
        need = offset + int(np.ceil(hdr.sig_len * len(idx) * _FMT_BYTES[fmt]))
        have = f.stat().st_size
        if have < need - 1:  # format 212 may drop the last half byte
            raise InputError(f"{f}: holds {have} bytes but {header.name} declares {hdr.sig_len} samples x {len(idx)} "
                             f"signals in format {fmt} ({need} bytes): truncated")


def read_wfdb(path: str | Path, channels: list[str] | None = None, annotations: str | None = None) -> Signal:
    """Read a WFDB record (``100``, ``100.hea`` or ``100.dat``) in physical units.

    ``annotations``: extension of an annotation file to attach (e.g. ``"atr"``). A header that
    wfdb cannot parse, or a signal file shorter than the header declares, raises InputError.
    """
    wfdb = optional_import("wfdb")
    header, name = _wfdb_record_name(path)
    _check_wfdb_files(wfdb, header, name)
    try:
        rec = wfdb.rdrecord(name, physical=True, return_res=32)
    except Exception as exc:  # wfdb raises ValueError, IndexError, struct errors... on bad files
        raise InputError(f"{header}: not a readable WFDB record ({type(exc).__name__}: {exc})") from exc
    if rec.p_signal is None or rec.n_sig == 0:
        raise InputError(f"{header}: the record has no signals")
    sig = np.asarray(rec.p_signal, dtype=np.float32).T
    declared = rec.sig_len
    if declared is not None and sig.shape[1] != declared:
        raise InputError(f"{header}: signal file holds {sig.shape[1]} samples per channel but the header declares {declared} (truncated?)")
    if sig.shape[1] == 0:
        raise InputError(f"{header}: the signal file holds no samples")
    start: _dt.datetime | _dt.time | None = None
    if rec.base_time is not None:
        start = _dt.datetime.combine(rec.base_date, rec.base_time) if rec.base_date is not None else rec.base_time
    out = Signal(
        data=np.nan_to_num(sig, nan=0.0), fs=float(rec.fs), channels=tuple(rec.sig_name), units=tuple(rec.units),
        start_time=start,
        meta={"format": "WFDB", "path": str(header), "record": rec.record_name, "comments": list(rec.comments or []),
              "adc_gain": [float(g) for g in (rec.adc_gain or [])], "fmt": list(rec.fmt or []),
              "missing_samples": int(np.isnan(rec.p_signal).sum())},
    )
    if annotations:
        out.annotations = read_wfdb_annotations(name, annotations)
    if channels:
        out = select_channels(out, channels)
    return out


def read_wfdb_annotations(path: str | Path, extension: str = "atr") -> Annotations:
    """Read a WFDB annotation file ``<record>.<extension>`` (e.g. MIT-BIH ``100.atr``)."""
    wfdb = optional_import("wfdb")
    p = Path(path)
    if p.suffix.lower() in WFDB_SUFFIXES or p.suffix.lower() == f".{extension}":
        p = p.with_suffix("")
    ann_file = p.with_name(f"{p.name}.{extension}")
    if not ann_file.is_file():
        raise InputError(f"{ann_file}: annotation file not found")
    try:
        ann = wfdb.rdann(str(p), extension)
    except Exception as exc:
        raise InputError(f"{ann_file}: not a readable WFDB annotation file ({type(exc).__name__}: {exc})") from exc
    return Annotations(np.asarray(ann.sample), np.asarray(ann.symbol), np.asarray(ann.aux_note), source=str(ann_file))


# --------------------------------------------------------------------------------------
# DICOM waveform
# --------------------------------------------------------------------------------------
def read_dicom_waveform(path: str | Path, group: int = 0) -> Signal:
    """Read multiplex group ``group`` of a DICOM waveform (e.g. a 12-lead ECG) with pydicom.

    Samples are scaled by pydicom's ``waveform_array`` (channel sensitivity, correction
    factor and baseline applied), units from the channel sensitivity units (usually uV).
    """
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:
        raise InputError(f"{path}: not a readable DICOM file ({exc})") from exc
    seq = ds.get("WaveformSequence")
    if not seq:
        raise InputError(f"{path}: DICOM file has no WaveformSequence (not a waveform object)")
    if not 0 <= group < len(seq):
        raise InputError(f"{path}: waveform group {group} out of range; the file has {len(seq)}")
    item = seq[group]
    try:
        arr = np.asarray(ds.waveform_array(group), dtype=np.float32)  # (samples, channels)
    except Exception as exc:
        raise InputError(f"{path}: waveform data cannot be decoded ({exc})") from exc
    names, units = [], []
    for i, ch in enumerate(item.ChannelDefinitionSequence):
        src = ch.get("ChannelSourceSequence")
        label = ch.get("ChannelLabel") or (src[0].get("CodeMeaning") if src else None) or f"ch{i}"
        names.append(str(label).replace("Lead ", "").strip())
        u = ch.get("ChannelSensitivityUnitsSequence")
        units.append(str(u[0].get("CodeValue")) if u else "")
    start = None
    if ds.get("AcquisitionDateTime"):
        try:
            start = _dt.datetime.strptime(str(ds.AcquisitionDateTime)[:14], "%Y%m%d%H%M%S")
        except ValueError:
            start = None
    return Signal(
        data=arr.T, fs=float(item.SamplingFrequency), channels=tuple(names), units=tuple(units), start_time=start,
        meta={"format": "DICOM waveform", "path": str(path), "modality": str(ds.get("Modality", "")),
              "sop_class": str(ds.get("SOPClassUID", "")), "group": group, "n_groups": len(seq),
              "group_label": str(item.get("MultiplexGroupLabel", ""))},
    )


def is_dicom_waveform(path: str | Path) -> bool:
    """True when ``path`` is a DICOM file with a WaveformSequence (reads the header only)."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["WaveformSequence"])
    except Exception:
        return False
    return "WaveformSequence" in ds


# --------------------------------------------------------------------------------------
# EDF / BDF
# --------------------------------------------------------------------------------------
def read_edf(path: str | Path) -> Signal:
    """Read an EDF/EDF+/BDF file with pyedflib. Channels at the most common sampling rate are
    kept (the others, e.g. a 1 Hz annotation channel, are listed in ``meta['dropped']``)."""
    pyedflib = optional_import("pyedflib")
    try:
        f = pyedflib.EdfReader(str(path))
    except Exception as exc:
        raise InputError(f"{path}: not a readable EDF/BDF file ({exc})") from exc
    try:
        n = f.signals_in_file
        if n == 0:
            raise InputError(f"{path}: EDF file has no signals")
        labels = f.getSignalLabels()
        rates = [float(f.getSampleFrequency(i)) for i in range(n)]
        values, counts = np.unique(rates, return_counts=True)
        fs = float(values[np.argmax(counts)])
        keep = [i for i in range(n) if rates[i] == fs]
        data = np.stack([f.readSignal(i) for i in keep])
        units = [f.getPhysicalDimension(i) for i in keep]
        start = f.getStartdatetime()
        ann_on, _, ann_text = f.readAnnotations()
    finally:
        f.close()
    annotations = None
    if len(ann_on):
        annotations = Annotations(np.round(np.asarray(ann_on) * fs).astype(np.int64), np.asarray(ann_text, dtype=str),
                                  source=str(path))
    return Signal(
        data=data, fs=fs, channels=tuple(labels[i] for i in keep), units=tuple(units), start_time=start,
        annotations=annotations,
        meta={"format": "EDF", "path": str(path), "dropped": [f"{labels[i]} ({rates[i]:g} Hz)" for i in range(n) if i not in keep]},
    )


# --------------------------------------------------------------------------------------
# Dispatch and summary
# --------------------------------------------------------------------------------------
def is_signal_path(path: str | Path) -> bool:
    """True when ``path`` looks like a signal: a WFDB header / signal file (or record name with a
    .hea beside it), an EDF/BDF file, or a DICOM waveform object."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in EDF_SUFFIXES or suffix == ".hea":
        return True
    if suffix in (".dat", ".mat") and p.with_suffix(".hea").is_file():
        return True
    if not p.exists() and p.with_name(p.name + ".hea").is_file():
        return True
    if p.is_file() and suffix in (".dcm", ".dicom", ""):
        return is_dicom_waveform(p)
    return False


def read_signal(path: str | Path, annotations: str | None = None) -> Signal:
    """Read any supported signal file (see ``is_signal_path``); ``annotations`` is the WFDB
    annotation extension to attach (e.g. "atr"), ignored for other formats."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in EDF_SUFFIXES:
        if not p.is_file():
            raise InputError(f"{path}: file not found")
        return read_edf(p)
    if suffix in WFDB_SUFFIXES or (not p.exists() and p.with_name(p.name + ".hea").is_file()):
        return read_wfdb(p, annotations=annotations)
    if p.is_file():
        return read_dicom_waveform(p)
    raise InputError(f"{path}: not found (give a WFDB record or .hea, an EDF/BDF file or a DICOM waveform)")


def describe_signal(sig: Signal) -> dict[str, Any]:
    """Summary for ``medfm info``: format, channels, rate, duration, units, value range, annotations."""
    finite = np.isfinite(sig.data)
    info: dict[str, Any] = {
        "format": sig.meta.get("format"),
        "kind": "signal",
        "channels": list(sig.channels),
        "units": list(sig.units),
        "fs_hz": sig.fs,
        "n_samples": sig.n_samples,
        "duration_s": round(sig.duration_s, 3),
        "start_time": None if sig.start_time is None else sig.start_time.isoformat(),
        "value_range": [float(sig.data[finite].min()), float(sig.data[finite].max())] if finite.any() else [None, None],
    }
    if sig.annotations is not None:
        info["annotations"] = {"source": sig.annotations.source, "n": len(sig.annotations),
                               "counts": sig.annotations.counts()}
    for key in ("comments", "group_label", "dropped"):
        if sig.meta.get(key):
            info[key] = sig.meta[key]
    return info


def select_channels(sig: Signal, channels: list[str]) -> Signal:
    """A copy of ``sig`` holding only ``channels`` (lead names, case-insensitive), in that order."""
    lowered = [c.lower() for c in sig.channels]
    idx = []
    for c in channels:
        if c.lower() not in lowered:
            raise InputError(f"signal {sig.meta.get('path', '')}: no lead '{c}'; leads are {list(sig.channels)}")
        idx.append(lowered.index(c.lower()))
    return Signal(sig.data[idx], sig.fs, tuple(sig.channels[i] for i in idx), tuple(sig.units[i] for i in idx),
                  sig.start_time, sig.annotations, dict(sig.meta))
