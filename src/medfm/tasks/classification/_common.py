"""Helpers shared by the classification protocols: selection score, softmax, shot subsets."""

from __future__ import annotations

import math

import numpy as np

from medfm.metrics.classification import point_metric


def selection_score(y: np.ndarray, scores: np.ndarray, task: str) -> float:
    """Validation score used to choose hyper-parameters: AUROC, or accuracy where AUROC is undefined."""
    v = point_metric("auroc", y, scores, task)
    if math.isnan(v):
        v = point_metric("accuracy", y, scores, task)
    return v


def nll(y: np.ndarray, scores: np.ndarray, task: str) -> float:
    """Mean negative log-likelihood of probabilities ``scores`` (multilabel: mean binary cross-entropy)."""
    p = np.clip(scores, 1e-12, 1.0 - 1e-12)
    if task == "multilabel":
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def as_float(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)
