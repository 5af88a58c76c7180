"""Scoring VQA answers: closed / open accuracy, token F1, BLEU-1, by answer and question type.

Accuracy is exact match after :func:`medfm.metrics.text.normalize_answer`. Intervals are
percentile bootstraps over questions (``medfm.metrics.bootstrap``, seeded); a question-type
subset with fewer than ``min_group`` questions is reported without an interval.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medfm.data.vqa import VQAItem
from medfm.errors import InputError
from medfm.metrics.bootstrap import bootstrap_cis
from medfm.metrics.text import exact_match, sentence_bleu, token_f1
from medfm.results import MetricValue


def score_items(items: Sequence[VQAItem], preds: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-question arrays: ``correct`` (0/1), ``f1``, ``bleu1``, ``closed`` (bool)."""
    if len(items) != len(preds):
        raise InputError(f"VQA scoring: {len(preds)} predictions for {len(items)} questions")
    return {
        "correct": np.array([exact_match(p, it.answer) for it, p in zip(items, preds)]),
        "f1": np.array([token_f1(p, it.answer) for it, p in zip(items, preds)]),
        "bleu1": np.array([sentence_bleu(p, it.answer, 1) for it, p in zip(items, preds)]),
        "closed": np.array([it.answer_type == "CLOSED" for it in items]),
    }


def _mean_where(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].mean()) if mask.any() else float("nan")


def vqa_metrics(
    items: Sequence[VQAItem], preds: Sequence[str], n_boot: int = 1000, seed: int = 0, min_group: int = 10
) -> dict[str, MetricValue]:
    """Metrics with bootstrap CIs: ``closed_accuracy``, ``open_accuracy``, ``accuracy``,
    ``open_token_f1``, ``open_bleu1``, ``token_f1``, and ``accuracy[qtype=T]`` per question type."""
    s = score_items(items, preds)
    qtypes = np.array([it.question_type or "NONE" for it in items])
    cols = [s["correct"], s["f1"], s["bleu1"], s["closed"].astype(float)]
    table = np.stack(cols, axis=1)

    def col(t: np.ndarray, i: int, mask_fn=None) -> float:
        mask = np.ones(len(t), bool) if mask_fn is None else mask_fn(t)
        return _mean_where(t[:, i], mask)

    fns = {
        "closed_accuracy": lambda t, _: col(t, 0, lambda u: u[:, 3] == 1),
        "open_accuracy": lambda t, _: col(t, 0, lambda u: u[:, 3] == 0),
        "accuracy": lambda t, _: col(t, 0),
        "open_token_f1": lambda t, _: col(t, 1, lambda u: u[:, 3] == 0),
        "open_bleu1": lambda t, _: col(t, 2, lambda u: u[:, 3] == 0),
        "token_f1": lambda t, _: col(t, 1),
    }
    point = {k: fn(table, None) for k, fn in fns.items()}
    cis = bootstrap_cis(fns, table, table, n_boot=n_boot, seed=seed)
    out = {k: MetricValue(point[k], cis[k].low, cis[k].high) for k in fns if np.isfinite(point[k])}
    for q in sorted(set(qtypes)):
        m = qtypes == q
        acc = float(s["correct"][m].mean())
        if m.sum() >= min_group:
            ci = bootstrap_cis({"a": lambda t, _: float(t.mean())}, s["correct"][m], s["correct"][m], n_boot=n_boot, seed=seed)["a"]
            out[f"accuracy[qtype={q}]"] = MetricValue(acc, ci.low, ci.high)
        else:
            out[f"accuracy[qtype={q}]"] = MetricValue(acc)
    return out
