"""Figures for the report as base64 PNGs (matplotlib, Agg backend; no files on disk).

Each function returns a ``data:image/png;base64,...`` URI or None when the records hold
nothing to plot (e.g. one shot setting only, or no ROC points stored).
"""

from __future__ import annotations

import base64
import io
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from medfm.metrics import higher_is_better
from medfm.results import Record


def _figure(width: float = 6.4, height: float = 4.2):  # -> (Figure, Axes)
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.add_subplot(1, 1, 1)


def _to_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _series_name(r: Record) -> str:
    return r.model if r.model.startswith("scratch/") else f"{r.model} · {r.protocol}"


def per_class_count(r: Record) -> float | None:
    """Labelled training images per class of a record: its shots, or n_train / n_classes."""
    if r.shots is not None:
        return float(r.shots)
    n_train, n_classes = r.extra.get("n_train"), r.extra.get("n_classes")
    if n_train and n_classes:
        return float(n_train) / float(n_classes)
    return None


def label_efficiency(records: Sequence[Record], metric: str) -> str | None:
    """Metric vs labelled images per class (log x), one line per model/protocol, mean ± sd over seeds."""
    series: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        x = per_class_count(r)
        if x is None or metric not in r.metrics or not math.isfinite(r.metrics[metric].value):
            continue
        series[_series_name(r)][x].append(r.metrics[metric].value)
    if not series or all(len(pts) < 2 for pts in series.values()):
        return None
    fig, ax = _figure()
    for name, pts in sorted(series.items()):
        xs = sorted(pts)
        means = [float(np.mean(pts[x])) for x in xs]
        sds = [float(np.std(pts[x], ddof=1)) if len(pts[x]) > 1 else 0.0 for x in xs]
        ax.errorbar(xs, means, yerr=sds, marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training images per class (log; rightmost = full training split)")
    ax.set_ylabel(f"{metric} (test)" + ("" if higher_is_better(metric) else ", lower is better"))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _to_uri(fig)


def _arrays(d: dict[str, Any], *names: str) -> np.ndarray | None:
    for n in names:
        if n in d and d[n] is not None:
            return np.asarray(d[n], dtype=float)
    return None


def roc_curves(roc: Any) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Normalise stored ROC points to [(label, fpr, tpr)]: accepts {fpr, tpr},
    {class: {fpr, tpr}}, {"curves": ...} or a list of {label?, fpr, tpr}."""
    out: list[tuple[str, np.ndarray, np.ndarray]] = []
    if isinstance(roc, dict) and "error" in roc:
        return out
    if isinstance(roc, dict) and "curves" in roc:
        return roc_curves(roc["curves"])
    if isinstance(roc, dict) and _arrays(roc, "fpr") is not None:
        fpr, tpr = _arrays(roc, "fpr"), _arrays(roc, "tpr")
        if tpr is not None and len(fpr) == len(tpr):
            out.append((str(roc.get("name", roc.get("label", ""))), fpr, tpr))
        return out
    if isinstance(roc, dict):
        for k, v in roc.items():
            out += [(str(k) if not lab else f"{k} {lab}", f, t) for lab, f, t in roc_curves(v)]
    elif isinstance(roc, list):
        for i, v in enumerate(roc):
            out += [(lab or str(i), f, t) for lab, f, t in roc_curves(v)]
    return out


def roc_plot(records: Sequence[Record]) -> str | None:
    """ROC curves of full-data, seed-0 records (one panel; the first curve per record when
    it stores several, e.g. one-vs-rest per class: all drawn thin)."""
    chosen = [r for r in records if r.shots is None and r.seed == 0 and r.extra.get("roc")]
    if not chosen:
        return None
    fig, ax = _figure(5.6, 5.0)
    drawn = 0
    for r in chosen:
        curves = roc_curves(r.extra["roc"])
        if not curves:
            continue
        auc = r.metrics.get("auroc") or r.metrics.get("auc")
        tag = f" (AUROC {auc.value:.3f})" if auc is not None and math.isfinite(auc.value) else ""
        if len(curves) == 1:
            ax.plot(curves[0][1], curves[0][2], label=_series_name(r) + tag)
        else:
            line = None
            for _name, f, t in curves:
                line = ax.plot(f, t, lw=0.8, alpha=0.6, color=None if line is None else line[0].get_color())
            if line is not None:
                line[0].set_label(_series_name(r) + tag + " (one-vs-rest per class)")
        drawn += 1
    if not drawn:
        return None
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(fontsize=7, loc="lower right")
    return _to_uri(fig)


def reliability_bins(rel: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """Normalise stored reliability bins to (mean confidence, observed accuracy, counts)."""
    if isinstance(rel, list) and rel and isinstance(rel[0], dict):
        rel = {k: [b.get(k) for b in rel] for k in rel[0]}
    if not isinstance(rel, dict) or "error" in rel:
        return None
    conf = _arrays(rel, "confidence", "mean_confidence", "conf", "mean_predicted", "prob_pred")
    acc = _arrays(rel, "accuracy", "acc", "fraction_positive", "frac_pos", "observed", "prob_true")
    cnt = _arrays(rel, "count", "counts", "n")
    if conf is None or acc is None or len(conf) != len(acc):
        return None
    keep = np.isfinite(conf) & np.isfinite(acc)
    if cnt is not None and len(cnt) == len(conf):
        keep &= cnt > 0
        cnt = cnt[keep]
    else:
        cnt = None
    return conf[keep], acc[keep], cnt


def reliability_plot(records: Sequence[Record]) -> str | None:
    """Reliability diagram (confidence vs accuracy) of full-data, seed-0 records."""
    chosen = [r for r in records if r.shots is None and r.seed == 0 and r.extra.get("reliability")]
    fig, ax = _figure(5.6, 5.0)
    drawn = 0
    for r in chosen:
        bins = reliability_bins(r.extra["reliability"])
        if bins is None or len(bins[0]) == 0:
            continue
        ece = r.metrics.get("ece")
        tag = f" (ECE {ece.value:.3f})" if ece is not None and math.isfinite(ece.value) else ""
        ax.plot(bins[0], bins[1], marker="o", label=_series_name(r) + tag)
        drawn += 1
    if not drawn:
        return None
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfect calibration")
    ax.set_xlabel("mean predicted confidence (bin)")
    ax.set_ylabel("observed accuracy (bin)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(fontsize=7, loc="upper left")
    return _to_uri(fig)
