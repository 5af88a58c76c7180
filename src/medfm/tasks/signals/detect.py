"""Beat (QRS) detection scored beat by beat against reference annotations (ANSI/AAMI EC57).

The record is split in time: the first ``dev_s`` seconds (5 min, the learning period that EC57
and PhysioNet's ``bxb`` exclude from scoring) choose the detector among ``candidates`` (best
F1, ties to the smaller mean timing error, then to the earlier candidate); the rest of the record is
scored for the default detector and for the chosen one, so the reported number never saw the
data it was chosen on.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfm.data.signals import DETECTORS, detect_rpeaks
from medfm.errors import ConfigError
from medfm.io.signal import Signal, read_signal
from medfm.metrics.beats import EC57_WINDOW_S, BeatMatch, match_beats_in
from medfm.results import MetricValue, Record, make_provenance


@dataclass
class DetectConfig:
    """``lead`` to detect on (None: the first channel); ``default`` detector; ``candidates``
    compared on the first ``dev_s`` seconds; ``window_s`` the matching window."""

    lead: str | None = None
    default: str = "neurokit"
    candidates: tuple[str, ...] = ("neurokit", "pantompkins1985", "hamilton2002", "elgendi2010", "kalidas2017",
                                   "rodrigues2021")
    dev_s: float = 300.0
    window_s: float = EC57_WINDOW_S

    def __post_init__(self) -> None:
        bad = [m for m in (self.default, *self.candidates) if m not in DETECTORS]
        if bad:
            raise ConfigError(f"detect: unknown detector(s) {bad}; expected among {sorted(DETECTORS)}")
        if self.dev_s < 0 or self.window_s <= 0:
            raise ConfigError("detect: dev_s >= 0 and window_s > 0 required")


@dataclass
class DetectionResult:
    """Per detector: R-peaks over the whole record and the EC57 match on the dev / test parts;
    ``chosen`` the detector selected on dev."""

    record: str
    fs: float
    lead: str
    peaks: dict[str, np.ndarray]
    dev: dict[str, BeatMatch]
    test: dict[str, BeatMatch]
    chosen: str
    seconds: dict[str, float] = field(default_factory=dict)


def record_checksum(sig: Signal) -> str:
    """sha256 over the record's files (header, signal and annotation files beside it)."""
    header = Path(sig.meta.get("path", ""))
    h = hashlib.sha256()
    if header.is_file():
        for f in sorted(header.parent.glob(header.stem + ".*")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def run_detection(sig: Signal, cfg: DetectConfig | None = None) -> DetectionResult:
    """Run the default and candidate detectors on one lead of ``sig`` and score them (needs beat annotations)."""
    cfg = cfg or DetectConfig()
    if sig.annotations is None:
        raise ConfigError(f"{sig.meta.get('path', 'signal')}: detection scoring needs reference annotations")
    lead = cfg.lead or sig.channels[0]
    x = sig.channel(lead)
    ref = sig.annotations.beats().sample
    dev_end = int(round(cfg.dev_s * sig.fs))
    methods = list(dict.fromkeys([cfg.default, *cfg.candidates]))
    peaks, dev, test, secs = {}, {}, {}, {}
    for m in methods:
        t0 = time.perf_counter()
        peaks[m] = detect_rpeaks(x, sig.fs, m)
        secs[m] = round(time.perf_counter() - t0, 3)
        dev[m] = match_beats_in(ref, peaks[m], sig.fs, 0, dev_end, cfg.window_s)
        test[m] = match_beats_in(ref, peaks[m], sig.fs, dev_end, None, cfg.window_s)

    def rank(m: str) -> tuple[float, float, int]:
        s = dev[m].scores
        f1 = s["f1"] if math.isfinite(s["f1"]) else -1.0
        err = s["mean_abs_error_ms"] if math.isfinite(s["mean_abs_error_ms"]) else math.inf
        return (-f1, err, methods.index(m))

    chosen = min(cfg.candidates or (cfg.default,), key=rank)
    return DetectionResult(str(sig.meta.get("record") or sig.meta.get("path", "")), sig.fs, lead, peaks, dev, test,
                           chosen, secs)


def detection_records(res: DetectionResult, cfg: DetectConfig, dataset: str, checksum: str | None = None) -> list[Record]:
    """One Record per (detector, part) for the default and the chosen detector: Se, +P, F1, counts."""
    out = []
    for role, m in (("default", cfg.default), ("chosen_on_dev", res.chosen)):
        for split, matches in (("dev", res.dev), ("test", res.test)):
            bm = matches[m]
            metrics = {k: MetricValue(float(v)) for k, v in bm.scores.items()}
            out.append(Record(
                dataset=dataset, split=split, model=f"neurokit2/{m}", protocol="beat_detection_ec57",
                metrics=metrics, n=int(len(bm.ref)), seconds=res.seconds.get(m, 0.0),
                provenance=make_provenance(cfg, data_checksum=checksum, role=role, lead=res.lead),
                extra={"role": role, "window_s": bm.window_s},
            ))
    return out


def load_record(record: str | Path, data_dir: str | Path | None = None, annotations: str | None = "atr") -> Signal:
    """Read ``record`` (absolute, or relative to the data location, e.g. ``ecg_physionet/mitdb/100``)."""
    from medfm._paths import data_dir as resolve

    p = Path(record).expanduser()
    if not p.is_absolute() and not (p.exists() or p.with_name(p.name + ".hea").exists()):
        p = resolve(data_dir)[0] / p
    return read_signal(p, annotations=annotations)


def summary(res: DetectionResult, cfg: DetectConfig) -> dict[str, Any]:
    """Plain numbers for the CLI: Se / +P / F1 of the default and the chosen detector on dev and test."""
    def row(bm: BeatMatch) -> dict[str, Any]:
        s = bm.scores
        return {"sensitivity": s["sensitivity"], "positive_predictivity": s["positive_predictivity"], "f1": s["f1"],
                "tp": bm.tp, "fn": bm.fn, "fp": bm.fp, "mean_abs_error_ms": s["mean_abs_error_ms"]}

    return {
        "record": res.record, "lead": res.lead, "fs": res.fs, "window_ms": cfg.window_s * 1000,
        "dev_part": f"first {cfg.dev_s:g} s", "test_part": f"after {cfg.dev_s:g} s",
        "default": cfg.default, "chosen_on_dev": res.chosen,
        "detectors": {m: {"dev": row(res.dev[m]), "test": row(res.test[m]), "seconds": res.seconds[m]} for m in res.dev},
    }
