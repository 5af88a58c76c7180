"""Classification metrics with stratified bootstrap confidence intervals.

``compute_metrics(y_true, scores, task)`` returns ``{name: MetricValue(value, ci_low, ci_high)}``.

Inputs, by ``task``:

- ``binary``: ``y_true`` (N,) or (N, 1) in {0, 1}; ``scores`` (N,) probability of class 1 or
  (N, 2) class probabilities.
- ``multiclass`` / ``ordinal``: ``y_true`` (N,) ints in [0, C); ``scores`` (N, C) probabilities
  (rows summing to 1 within 1e-3; renormalised).
- ``multilabel``: ``y_true`` (N, C) in {0, 1}; ``scores`` (N, C) per-label probabilities.

Metrics (all higher-is-better except ``ece``, see ``HIGHER_IS_BETTER``):

- ``auroc``: binary ROC AUC; multiclass/ordinal one-vs-rest macro AUROC; multilabel macro over
  labels. Undefined (NaN) when a class has no positive or no negative.
- ``accuracy``: argmax prediction (binary: p > 0.5); multilabel: mean over labels of the
  per-label accuracy at p > 0.5 (= 1 - Hamming loss), not subset accuracy.
- ``balanced_accuracy``: mean recall over the classes present (multilabel: mean over labels).
- ``f1``: macro F1 (sklearn's default label set; multilabel: every label, 0 when undefined).
- ``ece``: expected calibration error, 15 equal-width bins, L1. Single-label tasks use the
  top-label confidence (max probability) against correctness; multilabel pools every
  (sample, label) probability against the label.
- ``qwk`` (ordinal only): Cohen's kappa with quadratic weights over the labels 0..C-1.

Point values come from scikit-learn (``ece`` from a numpy binning identical to torchmetrics'
``calibration_error``); bootstrap resamples use vectorised numpy equivalents (tested equal to
scikit-learn) because sklearn's input validation would cost ~5 s per 1000 resamples.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np

from medfm.errors import ConfigError, InputError
from medfm.metrics.bootstrap import bootstrap_cis
from medfm.results import MetricValue

TASKS = ("binary", "multiclass", "multilabel", "ordinal")
ECE_BINS = 15

HIGHER_IS_BETTER: dict[str, bool] = {
    "auroc": True,
    "accuracy": True,
    "balanced_accuracy": True,
    "f1": True,
    "ece": False,
    "qwk": True,
}

MetricFn = Callable[[np.ndarray, np.ndarray], float]


# --------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------
def _labels_1d(y: np.ndarray, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InputError(f"{where}: y_true must be (N,) class indices, got shape {y.shape}")
    if y.size and not np.all(np.equal(np.mod(y, 1), 0)):
        raise InputError(f"{where}: y_true must hold integer class indices")
    return y.astype(np.int64)


def prepare(y_true: np.ndarray, scores: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate and normalise inputs.

    Returns ``(y, s)``: single-label tasks give ``y`` (N,) int64 and ``s`` (N, C) float64 with
    rows summing to 1 (binary becomes C = 2 with ``[1 - p, p]``); multilabel gives ``y`` (N, C)
    int64 and ``s`` (N, C) float64.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown classification task '{task}'; expected one of {list(TASKS)}")
    s = np.asarray(scores, dtype=np.float64)
    where = f"metrics ({task})"
    if task == "multilabel":
        y = np.asarray(y_true)
        if y.ndim != 2 or s.ndim != 2 or y.shape != s.shape:
            raise InputError(f"{where}: y_true and scores must both be (N, C); got {y.shape} and {s.shape}")
        if y.size and not np.isin(y, (0, 1)).all():
            raise InputError(f"{where}: y_true must be 0/1 label indicators")
        y = y.astype(np.int64)
    else:
        y = _labels_1d(y_true, where)
        if task == "binary":
            if s.ndim == 2 and s.shape[1] == 1:
                s = s[:, 0]
            if s.ndim == 1:
                s = np.stack([1.0 - s, s], axis=1)
            if s.ndim != 2 or s.shape[1] != 2:
                raise InputError(f"{where}: scores must be (N,) or (N, 2), got shape {s.shape}")
        elif s.ndim != 2 or s.shape[1] < 2:
            raise InputError(f"{where}: scores must be (N, C) with C >= 2, got shape {s.shape}")
        if s.shape[0] != y.shape[0]:
            raise InputError(f"{where}: {y.shape[0]} labels but {s.shape[0]} score rows")
        if y.size and (y.min() < 0 or y.max() >= s.shape[1]):
            raise InputError(f"{where}: labels must be in [0, {s.shape[1]}), got {y.min()}..{y.max()}")
    if s.shape[0] == 0:
        raise InputError(f"{where}: no samples")
    if not np.isfinite(s).all():
        raise InputError(f"{where}: scores contain NaN or inf")
    if s.min() < -1e-6 or s.max() > 1 + 1e-6:
        raise InputError(f"{where}: scores must be probabilities in [0, 1] (got {s.min():.3g}..{s.max():.3g})")
    s = np.clip(s, 0.0, 1.0)
    if task != "multilabel":
        sums = s.sum(axis=1)
        if np.abs(sums - 1.0).max() > 1e-3:
            raise InputError(f"{where}: score rows must sum to 1 (softmax probabilities); max deviation {np.abs(sums - 1).max():.3g}")
        s = s / sums[:, None]
    return y, s


# --------------------------------------------------------------------------------------
# fast numpy metrics (used for bootstrap resamples; equal to sklearn, see tests)
# --------------------------------------------------------------------------------------
def _rank(x: np.ndarray) -> np.ndarray:
    """Ranks 1..N with ties given their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    n = len(x)
    starts = np.r_[0, np.flatnonzero(xs[1:] != xs[:-1]) + 1]
    ends = np.r_[starts[1:], n]
    avg = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(n)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _auroc_1(pos: np.ndarray, score: np.ndarray) -> float:
    n1 = int(pos.sum())
    n0 = len(pos) - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    r = _rank(score)
    return float((r[pos].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _fast_auroc_single(y: np.ndarray, s: np.ndarray) -> float:
    if s.shape[1] == 2:
        return _auroc_1(y == 1, s[:, 1])
    vals = [_auroc_1(y == c, s[:, c]) for c in range(s.shape[1])]
    return float(np.mean(vals))  # NaN if any class is undefined, as sklearn raises


def _confusion(y: np.ndarray, pred: np.ndarray, c: int) -> np.ndarray:
    return np.bincount(y * c + pred, minlength=c * c).reshape(c, c)


def _fast_accuracy_single(y: np.ndarray, s: np.ndarray) -> float:
    return float(np.mean(s.argmax(axis=1) == y))


def _fast_balanced_single(y: np.ndarray, s: np.ndarray) -> float:
    cm = _confusion(y, s.argmax(axis=1), s.shape[1])
    support = cm.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(cm)[present] / support[present]))


def _fast_f1_single(y: np.ndarray, s: np.ndarray) -> float:
    cm = _confusion(y, s.argmax(axis=1), s.shape[1])
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=1) + cm.sum(axis=0)  # 2tp + fp + fn
    used = denom > 0  # sklearn's default labels: present in y_true or y_pred
    return float(np.mean(2 * tp[used] / denom[used]))


def _ece_from(conf: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> float:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    gap = np.bincount(idx, weights=correct.astype(np.float64), minlength=n_bins) - np.bincount(
        idx, weights=conf, minlength=n_bins
    )
    return float(np.abs(gap).sum() / len(conf))


def _fast_ece_single(y: np.ndarray, s: np.ndarray) -> float:
    return _ece_from(s.max(axis=1), s.argmax(axis=1) == y)


def _fast_qwk(y: np.ndarray, s: np.ndarray) -> float:
    c = s.shape[1]
    cm = _confusion(y, s.argmax(axis=1), c).astype(np.float64)
    expected = np.outer(cm.sum(axis=1), cm.sum(axis=0)) / cm.sum()
    w = (np.arange(c)[:, None] - np.arange(c)[None, :]) ** 2
    den = (w * expected).sum()
    if den == 0:
        return math.nan
    return float(1.0 - (w * cm).sum() / den)


def _fast_auroc_ml(y: np.ndarray, s: np.ndarray) -> float:
    return float(np.mean([_auroc_1(y[:, j] == 1, s[:, j]) for j in range(y.shape[1])]))


def _fast_accuracy_ml(y: np.ndarray, s: np.ndarray) -> float:
    return float(np.mean((s > 0.5) == (y == 1)))


def _fast_balanced_ml(y: np.ndarray, s: np.ndarray) -> float:
    pred = s > 0.5
    pos = y == 1
    vals = []
    for j in range(y.shape[1]):
        recalls = [np.mean(pred[m, j] == want) for m, want in ((pos[:, j], True), (~pos[:, j], False)) if m.any()]
        vals.append(np.mean(recalls))
    return float(np.mean(vals))


def _fast_f1_ml(y: np.ndarray, s: np.ndarray) -> float:
    pred = s > 0.5
    pos = y == 1
    tp = (pred & pos).sum(axis=0).astype(np.float64)
    denom = pred.sum(axis=0) + pos.sum(axis=0)
    return float(np.mean(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)))


def _fast_ece_ml(y: np.ndarray, s: np.ndarray) -> float:
    return _ece_from(s.ravel(), y.ravel() == 1)


def fast_metric_fns(task: str) -> dict[str, MetricFn]:
    """Numpy metric functions on ``prepare``d inputs, keyed by metric name."""
    if task == "multilabel":
        return {
            "auroc": _fast_auroc_ml,
            "accuracy": _fast_accuracy_ml,
            "balanced_accuracy": _fast_balanced_ml,
            "f1": _fast_f1_ml,
            "ece": _fast_ece_ml,
        }
    fns: dict[str, MetricFn] = {
        "auroc": _fast_auroc_single,
        "accuracy": _fast_accuracy_single,
        "balanced_accuracy": _fast_balanced_single,
        "f1": _fast_f1_single,
        "ece": _fast_ece_single,
    }
    if task == "ordinal":
        fns["qwk"] = _fast_qwk
    return fns


# --------------------------------------------------------------------------------------
# reference (scikit-learn) point values
# --------------------------------------------------------------------------------------
def _reference_values(y: np.ndarray, s: np.ndarray, task: str) -> dict[str, float]:
    from sklearn import metrics as skm

    def auroc() -> float:
        try:
            if task == "multilabel":
                return float(skm.roc_auc_score(y, s, average="macro"))
            if s.shape[1] == 2:
                return float(skm.roc_auc_score(y, s[:, 1]))
            return float(skm.roc_auc_score(y, s, multi_class="ovr", average="macro", labels=np.arange(s.shape[1])))
        except ValueError:  # a class without positives or negatives
            return math.nan

    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["auroc"] = auroc()
        if task == "multilabel":
            pred = (s > 0.5).astype(np.int64)
            out["accuracy"] = float(skm.accuracy_score(y.ravel(), pred.ravel()))
            out["balanced_accuracy"] = float(
                np.mean([skm.balanced_accuracy_score(y[:, j], pred[:, j]) for j in range(y.shape[1])])
            )
            out["f1"] = float(skm.f1_score(y, pred, average="macro", zero_division=0))
            out["ece"] = _fast_ece_ml(y, s)
            return out
        pred = s.argmax(axis=1)
        out["accuracy"] = float(skm.accuracy_score(y, pred))
        out["balanced_accuracy"] = float(skm.balanced_accuracy_score(y, pred))
        out["f1"] = float(skm.f1_score(y, pred, average="macro", zero_division=0))
        out["ece"] = _fast_ece_single(y, s)
        if task == "ordinal":
            k = skm.cohen_kappa_score(y, pred, weights="quadratic", labels=np.arange(s.shape[1]))
            out["qwk"] = float(k) if np.isfinite(k) else math.nan
    return out


def metric_names(task: str) -> list[str]:
    """Names ``compute_metrics`` returns for ``task``."""
    if task not in TASKS:
        raise ConfigError(f"unknown classification task '{task}'; expected one of {list(TASKS)}")
    return list(fast_metric_fns(task))


def point_metric(name: str, y_true: np.ndarray, scores: np.ndarray, task: str) -> float:
    """One metric without a CI (fast; for model selection on a validation split). NaN if undefined."""
    y, s = prepare(y_true, scores, task)
    fns = fast_metric_fns(task)
    if name not in fns:
        raise ConfigError(f"unknown metric '{name}' for task '{task}'; expected one of {sorted(fns)}")
    try:
        return float(fns[name](y, s))
    except ValueError:
        return math.nan


def compute_metrics_detailed(
    y_true: np.ndarray,
    scores: np.ndarray,
    task: str,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> tuple[dict[str, MetricValue], dict[str, int]]:
    """As ``compute_metrics``, plus the number of skipped (undefined) resamples per metric."""
    y, s = prepare(y_true, scores, task)
    values = _reference_values(y, s, task)
    stratify = None if task == "multilabel" else y
    cis = bootstrap_cis(fast_metric_fns(task), y, s, n_boot=n_boot, seed=seed, stratify=stratify, ci=ci)
    metrics: dict[str, MetricValue] = {}
    skipped: dict[str, int] = {}
    for name, value in values.items():
        c = cis[name]
        ok = math.isfinite(value)
        metrics[name] = MetricValue(value, c.low if ok else None, c.high if ok else None)
        skipped[name] = c.n_skipped
    return metrics, skipped


def compute_metrics(
    y_true: np.ndarray,
    scores: np.ndarray,
    task: str,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, MetricValue]:
    """Every metric of ``task`` with a stratified (by class), seeded percentile bootstrap CI.

    ``n_boot=0`` gives values without intervals. A metric that is undefined on the full data
    (e.g. AUROC with one class) has value NaN and no interval.

    >>> import numpy as np
    >>> m = compute_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]), "binary", n_boot=100)
    >>> round(m["auroc"].value, 2)
    0.75
    """
    return compute_metrics_detailed(y_true, scores, task, n_boot=n_boot, seed=seed, ci=ci)[0]


# --------------------------------------------------------------------------------------
# plot data for reports
# --------------------------------------------------------------------------------------
def infer_task(y_true: np.ndarray, scores: np.ndarray) -> str:
    """binary / multiclass / multilabel from array shapes (ordinal cannot be told from shapes)."""
    y = np.asarray(y_true)
    s = np.asarray(scores)
    if y.ndim == 2 and y.shape[1] > 1:
        return "multilabel"
    if s.ndim == 1 or (s.ndim == 2 and s.shape[1] <= 2):
        return "binary"
    return "multiclass"


def _thin(n: int, max_points: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(int))


def roc_points(
    y_true: np.ndarray,
    scores: np.ndarray,
    task: str | None = None,
    label_names: tuple[str, ...] | None = None,
    max_points: int = 101,
) -> dict:
    """ROC curves for plotting: ``{"curves": [{"name", "fpr", "tpr", "auroc"}, ...]}``.

    Binary gives one curve (class 1 positive); multiclass/ordinal one-vs-rest per class;
    multilabel one per label. Each curve is thinned to at most ``max_points`` points (4 decimals).
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    task = task or infer_task(y_true, scores)
    y, s = prepare(y_true, scores, task)
    c = s.shape[1]
    names = list(label_names) if label_names else [f"class {i}" for i in range(c)]
    if task == "multilabel":
        pairs = [(names[j], y[:, j] == 1, s[:, j]) for j in range(c)]
    elif task == "binary":
        pairs = [(names[1] if len(names) > 1 else "class 1", y == 1, s[:, 1])]
    else:
        pairs = [(names[j], y == j, s[:, j]) for j in range(c)]
    curves = []
    for name, pos, sc in pairs:
        if pos.all() or not pos.any():
            continue
        fpr, tpr, _ = roc_curve(pos.astype(int), sc)
        keep = _thin(len(fpr), max_points)
        curves.append({
            "name": name,
            "fpr": [round(float(v), 4) for v in fpr[keep]],
            "tpr": [round(float(v), 4) for v in tpr[keep]],
            "auroc": float(roc_auc_score(pos.astype(int), sc)),
        })
    return {"task": task, "curves": curves}


def reliability_bins(
    y_true: np.ndarray, scores: np.ndarray, n_bins: int = ECE_BINS, task: str | None = None
) -> dict:
    """Reliability diagram data: per equal-width confidence bin, mean confidence, accuracy, count.

    Bins with no samples have ``None`` confidence/accuracy. Same confidence definition as ``ece``.
    """
    task = task or infer_task(y_true, scores)
    y, s = prepare(y_true, scores, task)
    if task == "multilabel":
        conf, correct = s.ravel(), (y.ravel() == 1)
    else:
        conf, correct = s.max(axis=1), s.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    sum_conf = np.bincount(idx, weights=conf, minlength=n_bins)
    sum_acc = np.bincount(idx, weights=correct.astype(np.float64), minlength=n_bins)
    mean_conf = [round(float(a / n), 4) if n else None for a, n in zip(sum_conf, count, strict=True)]
    mean_acc = [round(float(a / n), 4) if n else None for a, n in zip(sum_acc, count, strict=True)]
    return {
        "task": task,
        "bin_edges": [round(float(e), 4) for e in edges],
        "confidence": mean_conf,
        "accuracy": mean_acc,
        "count": [int(n) for n in count],
        "ece": _ece_from(conf, correct, n_bins),
    }
