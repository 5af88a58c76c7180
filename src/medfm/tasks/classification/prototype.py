"""Prototype (nearest class mean) classification, SimpleShot style (CL2N).

Embeddings are centred (by the mean of the whole training split's embeddings, labels unused,
by default), L2-normalised, and each query is scored by its Euclidean distance to each class
mean: probabilities = softmax(-distance / T), T chosen on the validation split by negative
log-likelihood (the ranking, hence AUROC, does not depend on T for two classes). Multilabel:
per label, a positive and a negative prototype, p = sigmoid((d_neg - d_pos) / T).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from medfm.errors import ConfigError, InputError
from medfm.tasks.classification._common import as_float, l2_normalize, nll, sigmoid, softmax
from medfm.tasks.classification.base import Protocol, register_protocol
from medfm.tasks.classification.data import FeatureSplits, Predictions, train_indices

CENTERS = ("train", "support", "none")


@dataclass
class PrototypeConfig:
    """``center``: subtract the mean of all training embeddings ("train"), of the labelled
    support set ("support") or nothing; ``temperature_grid`` empty -> fixed ``temperature``."""

    center: str = "train"
    temperature: float = 0.1
    temperature_grid: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)

    def __post_init__(self) -> None:
        if self.center not in CENTERS:
            raise ConfigError(f"prototype: center must be one of {CENTERS}, got '{self.center}'")
        if self.temperature <= 0 or any(t <= 0 for t in self.temperature_grid):
            raise ConfigError("prototype: temperatures must be > 0")


def _distances(z: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Euclidean distances (N, M) between rows of ``z`` (N, D) and ``means`` (M, D)."""
    d2 = (z**2).sum(1)[:, None] - 2 * z @ means.T + (means**2).sum(1)[None, :]
    return np.sqrt(np.maximum(d2, 0.0))


def run(data: FeatureSplits, cfg: PrototypeConfig, seed: int = 0, shots: int | None = None) -> Predictions:
    """Nearest-class-mean classifier on (a k-shot subset of) the training embeddings."""
    t0 = time.perf_counter()
    idx = train_indices(data, shots, seed, "prototype")
    y_tr = data.train_y[idx]
    x_all = as_float(data.train_x)
    x_tr = x_all[idx]
    center = {"train": x_all.mean(0), "support": x_tr.mean(0), "none": np.zeros(x_all.shape[1])}[cfg.center]

    def embed(x: np.ndarray) -> np.ndarray:
        return l2_normalize(as_float(x) - center)

    z_tr, z_va, z_te = embed(x_tr), embed(data.val_x), embed(data.test_x)
    if data.task == "multilabel":
        pos, neg = [], []
        for j in range(data.n_classes):
            m = y_tr[:, j] == 1
            if m.all() or not m.any():
                raise InputError(f"prototype: label '{data.label_names[j]}' needs positive and negative training examples")
            pos.append(z_tr[m].mean(0))
            neg.append(z_tr[~m].mean(0))
        pos_m, neg_m = np.stack(pos), np.stack(neg)

        def margin(z: np.ndarray) -> np.ndarray:
            # per label j: distance to the negative prototype minus distance to the positive one
            return _distances(z, neg_m) - _distances(z, pos_m)

        def probs(z: np.ndarray, t: float) -> np.ndarray:
            return sigmoid(margin(z) / t)
    else:
        means = np.stack([z_tr[y_tr == c].mean(0) for c in range(data.n_classes)])

        def probs(z: np.ndarray, t: float) -> np.ndarray:
            return softmax(-_distances(z, means) / t, axis=1)

    grid = cfg.temperature_grid or (cfg.temperature,)
    val_nll = {t: nll(data.val_y, probs(z_va, t), data.task) for t in grid}
    best_t = min(grid, key=lambda t: val_nll[t])
    info = {
        "temperature": best_t, "center": cfg.center, "val_nll_by_temperature": {repr(t): v for t, v in val_nll.items()},
        "n_train": int(len(idx)), "trained": True, "model_trained": False, "train_seconds": time.perf_counter() - t0,
    }
    return Predictions(probs(z_te, best_t), data.test_y, probs(z_va, best_t), info)


PROTOCOL = register_protocol(
    Protocol("prototype", "features", PrototypeConfig, run, "SimpleShot nearest class mean (centre, L2-normalise)")
)
