"""EC57 beat matching: a hand-checked case, the window edge, the scoring interval, and agreement
with wfdb's own comparator (``wfdb.processing.compare_annotations``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medfm.metrics.beats import HIGHER_IS_BETTER, beat_scores, match_beats, match_beats_in


def test_hand_checked_case() -> None:
    # fs = 100 Hz, window 150 ms = 15 samples.
    # ref 100 <- det 110 (10 apart, match); ref 200 <- det 214 (14, match);
    # ref 300: nearest det 316 is 16 apart -> missed, det 316 false;
    # ref 400 and det 402 / 405: 402 is closer -> match, 405 false (one-to-one);
    # ref 500, 505 and det 503: 505 is closer (2 vs 3) -> match, ref 500 missed.
    ref = np.array([100, 200, 300, 400, 500, 505])
    det = np.array([110, 214, 316, 402, 405, 503])
    m = match_beats(ref, det, fs=100.0)
    assert (m.tp, m.fn, m.fp) == (4, 2, 2)
    assert m.pairs.tolist() == [[0, 0], [1, 1], [3, 3], [5, 5]]
    assert ref[m.missed].tolist() == [300, 500]
    assert det[m.extra].tolist() == [316, 405]
    assert m.scores["sensitivity"] == pytest.approx(4 / 6)
    assert m.scores["positive_predictivity"] == pytest.approx(4 / 6)
    assert m.scores["f1"] == pytest.approx(8 / 12)
    np.testing.assert_allclose(m.errors_s * 100, [10, 14, 2, -2])
    assert m.scores["mean_abs_error_ms"] == pytest.approx(70.0)


def test_window_is_inclusive_and_scaled_by_fs() -> None:
    assert match_beats([1000], [1054], fs=360.0).tp == 1   # 54 samples = 150 ms exactly
    assert match_beats([1000], [1055], fs=360.0).tp == 0
    assert match_beats([1000], [1055], fs=360.0, window_s=0.2).tp == 1


def test_empty_inputs() -> None:
    m = match_beats([], [5, 10], fs=100)
    assert (m.tp, m.fn, m.fp) == (0, 0, 2) and math.isnan(m.scores["sensitivity"])
    assert m.scores["positive_predictivity"] == 0.0
    s = beat_scores(0, 0, 0)
    assert math.isnan(s["f1"])
    assert HIGHER_IS_BETTER["sensitivity"] and HIGHER_IS_BETTER["mean_abs_error_ms"] is False


def test_scoring_interval_counts_only_inside() -> None:
    ref = np.array([50, 150, 250, 350])
    det = np.array([52, 160, 205, 248, 390, 460])
    m = match_beats_in(ref, det, fs=100.0, start=100, stop=300)
    # ref 150 <- 160, ref 250 <- 248; det 205 inside and unmatched -> FP; 52 / 390 / 460 outside
    assert (m.tp, m.fn, m.fp) == (2, 0, 1)
    # a detection just outside the interval may still match a reference beat just inside
    m2 = match_beats_in(np.array([101]), np.array([95]), fs=100.0, start=100, stop=200)
    assert (m2.tp, m2.fn, m2.fp) == (1, 0, 0)


def test_agrees_with_wfdb_comparator() -> None:
    processing = pytest.importorskip("wfdb.processing")
    rng = np.random.default_rng(0)
    ref = np.cumsum(rng.integers(200, 400, size=300))
    keep = rng.random(len(ref)) > 0.05                       # ~5% missed
    det = ref[keep] + rng.integers(-40, 41, size=keep.sum())  # jitter, some beyond 150 ms at 250 Hz
    det = np.sort(np.concatenate([det, rng.integers(0, ref[-1], size=10)]))  # false detections
    fs, w = 250.0, 0.150
    ours = match_beats(ref, det, fs, w)
    # wfdb matches when |difference| < window_width; EC57's 150 ms is inclusive: 37 samples -> 38
    comp = processing.compare_annotations(ref, det, int(w * fs) + 1)
    assert (ours.tp, ours.fn, ours.fp) == (comp.tp, comp.fn, comp.fp)
    assert ours.scores["sensitivity"] == pytest.approx(comp.sensitivity)
    assert ours.scores["positive_predictivity"] == pytest.approx(comp.positive_predictivity)
