"""Figures a clinician reads for beat detection: the ECG strip with reference and detected
beats marked (misses and false detections highlighted), and the per-beat timing errors.

Each function writes a PNG (matplotlib, Agg backend) and returns its path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfm.io.signal import Signal
from medfm.metrics.beats import BeatMatch


def _figure(width: float, height: float, rows: int = 1):  # -> (Figure, list[Axes])
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    axes = [fig.add_subplot(rows, 1, i + 1) for i in range(rows)]
    return fig, axes


def worst_window(match: BeatMatch, fs: float, length_s: float, n_samples: int) -> float:
    """Start (s) of the ``length_s`` strip holding the most errors (misses + false detections);
    the start of the scored part when there are none."""
    errs = np.concatenate([match.ref[match.missed], match.det[match.extra]]) / fs
    if len(errs) == 0:
        return float(match.ref[0] / fs) if len(match.ref) else 0.0
    best = max(errs, key=lambda t: int(np.sum((errs >= t - length_s / 2) & (errs < t + length_s / 2))))
    return float(np.clip(best - length_s / 2, 0, max(0.0, n_samples / fs - length_s)))


def plot_strip(sig: Signal, lead: str, match: BeatMatch, path: str | Path, start_s: float | None = None,
               length_s: float = 10.0, rows: int = 1, title: str = "") -> Path:
    """ECG strip(s) of ``lead`` from ``start_s`` (default: where the errors are) with reference
    beats (grey ticks above), matched detections (green dots), missed reference beats (red X)
    and false detections (orange triangles); 0.2 s / 0.5 mV grid as on ECG paper."""
    x = sig.channel(lead)
    fs = sig.fs
    if start_s is None:
        start_s = worst_window(match, fs, length_s * rows, sig.n_samples)
    fig, axes = _figure(12, 2.6 * rows, rows)
    matched_det = match.det[match.pairs[:, 1]] if len(match.pairs) else np.zeros(0, dtype=np.int64)
    for r, ax in enumerate(axes):
        a = int((start_s + r * length_s) * fs)
        b = min(sig.n_samples, int((start_s + (r + 1) * length_s) * fs))
        t = np.arange(a, b) / fs
        ax.plot(t, x[a:b], color="black", lw=0.7)
        top = float(np.max(x[a:b])) if b > a else 1.0

        def inside(s: np.ndarray) -> np.ndarray:
            return s[(s >= a) & (s < b)]

        ref_in = inside(match.ref)
        ax.vlines(ref_in / fs, top + 0.15, top + 0.35, color="grey", lw=1, label="reference beat")
        if sig.annotations is not None:  # label beats other than normal with their code (A, V, ...)
            beats = sig.annotations.beats()
            odd = (beats.sample >= a) & (beats.sample < b) & (beats.symbol != "N")
            for s_, c_ in zip(beats.sample[odd], beats.symbol[odd]):
                ax.text(s_ / fs, top + 0.4, str(c_), ha="center", va="bottom", fontsize=8, color="tab:purple")
        det_in = inside(matched_det)
        ax.plot(det_in / fs, x[det_in], "o", ms=4, color="tab:green", label="detected (matched)")
        miss = inside(match.ref[match.missed])
        ax.plot(miss / fs, x[miss], "x", ms=9, mew=2, color="tab:red", label="missed (FN)")
        extra = inside(match.det[match.extra])
        ax.plot(extra / fs, x[extra], "^", ms=7, color="tab:orange", label="false detection (FP)")
        ax.set_xlim(a / fs, b / fs)
        ax.set_xticks(np.arange(np.ceil(a / fs / 0.2) * 0.2, b / fs, 0.2), minor=True)
        ax.grid(True, which="both", color="#f4b6b6", lw=0.4)
        ax.set_ylabel(f"{lead} ({sig.units[sig.channels.index(lead)] if lead in sig.channels else ''})")
        if r == 0:
            ax.set_title(title or f"{sig.meta.get('record', '')}: {match.tp} matched, {match.fn} missed, "
                         f"{match.fp} false (window {match.window_s * 1000:.0f} ms)", fontsize=9)
            ax.legend(loc="lower right", fontsize=7, ncol=4)
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def plot_beat_errors(match: BeatMatch, path: str | Path, title: str = "") -> Path:
    """Per-beat timing error (detected minus reference, ms) against time, with the misses and
    false detections as ticks along the bottom, and a histogram of the errors beside it."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.2), dpi=110)
    gs = fig.add_gridspec(1, 4)
    ax = fig.add_subplot(gs[0, :3])
    hx = fig.add_subplot(gs[0, 3])
    fs = match.fs
    t = match.ref[match.pairs[:, 0]] / fs / 60 if len(match.pairs) else np.zeros(0)
    err = match.errors_s * 1000
    ax.plot(t, err, ".", ms=2, color="tab:blue", label="matched beat")
    lim = match.window_s * 1000
    ax.axhline(lim, color="grey", ls="--", lw=0.7)
    ax.axhline(-lim, color="grey", ls="--", lw=0.7)
    ax.plot(match.ref[match.missed] / fs / 60, np.full(match.fn, -lim), "x", color="tab:red", ms=8, label=f"missed ({match.fn})")
    ax.plot(match.det[match.extra] / fs / 60, np.full(match.fp, lim), "^", color="tab:orange", ms=7,
            label=f"false ({match.fp})")
    ax.set_xlabel("time (min)")
    ax.set_ylabel("detected - reference (ms)")
    ax.set_ylim(-lim * 1.15, lim * 1.15)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(title or "per-beat timing error", fontsize=9)
    hx.hist(err, bins=np.arange(-lim, lim + 5.0, 5.0), orientation="horizontal", color="tab:blue")
    hx.set_xscale("symlog")
    hx.set_ylim(-lim * 1.15, lim * 1.15)
    hx.set_xlabel("beats")
    hx.set_yticklabels([])
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
