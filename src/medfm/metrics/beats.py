"""Beat-by-beat detection scoring as ANSI/AAMI EC57 (and PhysioNet's ``bxb``) define it.

A detected beat matches a reference beat when they are at most ``window_s`` apart (150 ms in
EC57); each beat matches at most once, closest pairs first. TP = matched reference beats,
FN = unmatched reference beats, FP = unmatched detections; sensitivity Se = TP / (TP + FN),
positive predictivity +P = TP / (TP + FP), F1 = 2 TP / (2 TP + FN + FP). Pure numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from medfm.errors import ConfigError

EC57_WINDOW_S = 0.150

# direction of every metric this module reports (for tables and model selection)
HIGHER_IS_BETTER: dict[str, bool | None] = {
    "sensitivity": True,
    "positive_predictivity": True,
    "f1": True,
    # counts depend on the record's length: descriptive, not ranked
    "tp": None,
    "fn": None,
    "fp": None,
    "mean_abs_error_ms": False,
}


@dataclass
class BeatMatch:
    """Result of matching detections to reference beats (sample indices).

    ``pairs`` (M, 2): (reference index, detection index) into the sorted inputs;
    ``missed``: reference beats without a detection (FN); ``extra``: detections without a
    reference beat (FP); ``errors_s``: detection minus reference time (s) per pair.
    """

    ref: np.ndarray
    det: np.ndarray
    pairs: np.ndarray
    missed: np.ndarray
    extra: np.ndarray
    errors_s: np.ndarray
    fs: float
    window_s: float
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def tp(self) -> int:
        return int(len(self.pairs))

    @property
    def fn(self) -> int:
        return int(len(self.missed))

    @property
    def fp(self) -> int:
        return int(len(self.extra))


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def match_beats(ref: np.ndarray, det: np.ndarray, fs: float, window_s: float = EC57_WINDOW_S) -> BeatMatch:
    """One-to-one matching of detected to reference beat positions (samples at ``fs`` Hz).

    Candidate pairs within ``window_s`` (inclusive) are accepted closest first; ties go to the
    earlier reference beat. Inputs are sorted; duplicates are kept as separate beats.

    >>> m = match_beats(np.array([100, 460, 820]), np.array([105, 900, 1300]), fs=360)
    >>> (m.tp, m.fn, m.fp)
    (1, 2, 2)
    """
    if not fs > 0:
        raise ConfigError(f"match_beats: fs must be positive, got {fs}")
    if not window_s >= 0:
        raise ConfigError(f"match_beats: window_s must be >= 0, got {window_s}")
    ref = np.sort(np.asarray(ref, dtype=np.int64).ravel())
    det = np.sort(np.asarray(det, dtype=np.int64).ravel())
    w = window_s * fs
    # candidate pairs: every detection in [ref - w, ref + w], found with two binary searches
    lo = np.searchsorted(det, ref - w, side="left")
    hi = np.searchsorted(det, ref + w, side="right")
    counts = hi - lo
    ri = np.repeat(np.arange(len(ref)), counts)
    di = (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)) + np.repeat(lo, counts)
    dist = np.abs(det[di] - ref[ri]) if len(ri) else np.zeros(0, dtype=np.int64)
    order = np.lexsort((di, ri, dist))
    used_r = np.zeros(len(ref), dtype=bool)
    used_d = np.zeros(len(det), dtype=bool)
    pairs: list[tuple[int, int]] = []
    for k in order:
        r, d = int(ri[k]), int(di[k])
        if not used_r[r] and not used_d[d]:
            used_r[r] = used_d[d] = True
            pairs.append((r, d))
    pairs_arr = np.asarray(sorted(pairs), dtype=np.int64).reshape(-1, 2)
    errors = (det[pairs_arr[:, 1]] - ref[pairs_arr[:, 0]]) / fs if len(pairs_arr) else np.zeros(0)
    m = BeatMatch(ref, det, pairs_arr, np.flatnonzero(~used_r), np.flatnonzero(~used_d), errors, float(fs), float(window_s))
    m.scores = beat_scores(m.tp, m.fn, m.fp)
    m.scores["mean_abs_error_ms"] = float(np.mean(np.abs(errors)) * 1000.0) if len(errors) else math.nan
    return m


def beat_scores(tp: int, fn: int, fp: int) -> dict[str, float]:
    """Se, +P and F1 from counts (NaN where a denominator is 0), plus the counts themselves."""
    return {
        "sensitivity": _ratio(tp, tp + fn),
        "positive_predictivity": _ratio(tp, tp + fp),
        "f1": _ratio(2 * tp, 2 * tp + fn + fp),
        "tp": float(tp),
        "fn": float(fn),
        "fp": float(fp),
    }


def restrict(ref: np.ndarray, det: np.ndarray, start: int, stop: int | None, margin: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Beats in the scoring interval [start, stop): reference beats inside it, detections inside it
    widened by ``margin`` samples (the matching window) so that a beat at the edge can still match;
    detections in the margin that match nothing are not counted as FP by ``match_beats_in``."""
    ref = np.asarray(ref)
    det = np.asarray(det)
    stop_ = np.inf if stop is None else stop
    return ref[(ref >= start) & (ref < stop_)], det[(det >= start - margin) & (det < stop_ + margin)]


def match_beats_in(ref: np.ndarray, det: np.ndarray, fs: float, start: int = 0, stop: int | None = None,
                   window_s: float = EC57_WINDOW_S) -> BeatMatch:
    """``match_beats`` over the interval [start, stop) in samples, as bxb's ``-f``/``-t`` do:
    reference beats inside count; a detection counts as FP only when it lies inside too."""
    margin = int(math.ceil(window_s * fs))
    r, d = restrict(ref, det, start, stop, margin)
    m = match_beats(r, d, fs, window_s)
    stop_ = np.inf if stop is None else stop
    inside = (m.det[m.extra] >= start) & (m.det[m.extra] < stop_)
    m.extra = m.extra[inside]
    m.scores.update(beat_scores(m.tp, m.fn, m.fp))
    return m
