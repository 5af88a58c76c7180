"""Seeded, optionally stratified, percentile bootstrap confidence intervals.

Resampling scheme (documented so that anyone can reproduce an interval with plain numpy)::

    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(stratify == v) for v in np.unique(stratify)]   # one group without stratify
    for b in range(n_boot):
        idx = np.concatenate([g[rng.integers(0, len(g), size=len(g))] for g in groups])
        stat_b = metric_fn(y_true[idx], scores[idx])

Stratifying by class keeps every class's count fixed in every resample, so a metric such as
AUROC stays defined. A resample where the metric is undefined (``metric_fn`` returns NaN or
raises ``ValueError``) is skipped and counted; the interval is the ``(1 - ci) / 2`` and
``1 - (1 - ci) / 2`` percentiles (numpy's linear interpolation) of the remaining statistics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from medfm.errors import ConfigError, InputError

MetricFn = Callable[[np.ndarray, np.ndarray], float]

# A CI drawn from fewer valid resamples than this share of n_boot would be biased toward the
# resamples where the metric happens to be defined, so it is not reported.
MIN_VALID_SHARE = 0.5


@dataclass(frozen=True)
class BootstrapCI:
    """Percentile interval and how many resamples went into it (``low``/``high`` None: no CI)."""

    low: float | None
    high: float | None
    n_valid: int
    n_skipped: int


def resample_indices(n: int, n_boot: int, seed: int, stratify: np.ndarray | None = None):
    """Yield ``n_boot`` index arrays (length ``n``) following the module's resampling scheme."""
    rng = np.random.default_rng(seed)
    if stratify is None:
        groups = [np.arange(n)]
    else:
        stratify = np.asarray(stratify)
        if stratify.shape[0] != n:
            raise InputError(f"bootstrap: stratify has {stratify.shape[0]} entries for {n} samples")
        groups = [np.flatnonzero(stratify == v) for v in np.unique(stratify)]
    for _ in range(n_boot):
        yield np.concatenate([g[rng.integers(0, len(g), size=len(g))] for g in groups])


def _safe(fn: MetricFn, y: np.ndarray, s: np.ndarray) -> float:
    try:
        v = float(fn(y, s))
    except ValueError:
        return math.nan
    return v


def bootstrap_cis(
    metric_fns: Mapping[str, MetricFn],
    y_true: np.ndarray,
    scores: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    stratify: np.ndarray | None = None,
    ci: float = 0.95,
) -> dict[str, BootstrapCI]:
    """Intervals for several metrics computed on the same resamples (one pass over the data).

    ``y_true`` and ``scores`` are indexed along axis 0; each ``metric_fn(y, s) -> float``.
    """
    if not 0.0 < ci < 1.0:
        raise ConfigError(f"bootstrap: ci must be in (0, 1), got {ci}")
    if n_boot < 0:
        raise ConfigError(f"bootstrap: n_boot must be >= 0, got {n_boot}")
    y_true = np.asarray(y_true)
    scores = np.asarray(scores)
    n = y_true.shape[0]
    if n == 0:
        raise InputError("bootstrap: no samples")
    if scores.shape[0] != n:
        raise InputError(f"bootstrap: {n} labels but {scores.shape[0]} score rows")
    stats: dict[str, list[float]] = {name: [] for name in metric_fns}
    skipped = dict.fromkeys(metric_fns, 0)
    for idx in resample_indices(n, n_boot, seed, stratify):
        yb, sb = y_true[idx], scores[idx]
        for name, fn in metric_fns.items():
            v = _safe(fn, yb, sb)
            if math.isfinite(v):
                stats[name].append(v)
            else:
                skipped[name] += 1
    alpha = (1.0 - ci) / 2.0
    out: dict[str, BootstrapCI] = {}
    for name, vals in stats.items():
        if n_boot == 0 or len(vals) < max(2, MIN_VALID_SHARE * n_boot):
            out[name] = BootstrapCI(None, None, len(vals), skipped[name])
            continue
        lo, hi = np.percentile(np.asarray(vals), [100.0 * alpha, 100.0 * (1.0 - alpha)])
        out[name] = BootstrapCI(float(lo), float(hi), len(vals), skipped[name])
    return out


def bootstrap_ci(
    metric_fn: MetricFn,
    y_true: np.ndarray,
    scores: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    stratify: np.ndarray | None = None,
    ci: float = 0.95,
) -> BootstrapCI:
    """Percentile bootstrap interval of ``metric_fn(y_true, scores)``.

    >>> import numpy as np
    >>> y = np.array([0, 0, 1, 1]); s = np.array([0.1, 0.4, 0.35, 0.8])
    >>> r = bootstrap_ci(lambda a, b: float(np.mean((b > 0.5) == a)), y, s, n_boot=200, stratify=y)
    >>> r.low <= r.high
    True
    """
    return bootstrap_cis({"m": metric_fn}, y_true, scores, n_boot, seed, stratify, ci)["m"]
