"""k-nearest-neighbour classification on frozen embeddings (cosine similarity).

Scores are (weighted) vote shares: majority vote weighs each of the k neighbours equally;
weighted vote uses exp(similarity / temperature) as in DINO's k-NN evaluation. With
``k_grid`` non-empty, k is chosen on the validation split by AUROC.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from medfm.errors import ConfigError
from medfm.tasks.classification._common import as_float, l2_normalize, selection_score
from medfm.tasks.classification.base import Protocol, register_protocol
from medfm.tasks.classification.data import FeatureSplits, Predictions, train_indices

VOTES = ("majority", "weighted")


@dataclass
class KNNConfig:
    """k (used when ``k_grid`` is empty), vote rule and the temperature of the weighted vote."""

    k: int = 20
    vote: str = "weighted"
    temperature: float = 0.07
    k_grid: tuple[int, ...] = (1, 3, 5, 10, 20, 50)
    chunk: int = 1024

    def __post_init__(self) -> None:
        if self.vote not in VOTES:
            raise ConfigError(f"knn: vote must be one of {VOTES}, got '{self.vote}'")
        if self.k < 1 or any(k < 1 for k in self.k_grid):
            raise ConfigError(f"knn: k values must be >= 1 (k={self.k}, k_grid={self.k_grid})")
        if self.temperature <= 0:
            raise ConfigError(f"knn: temperature must be > 0, got {self.temperature}")


def knn_scores(
    train_z: np.ndarray, train_y: np.ndarray, query_z: np.ndarray, k: int, n_classes: int,
    task: str, vote: str = "weighted", temperature: float = 0.07, chunk: int = 1024,
) -> np.ndarray:
    """Class probabilities (Nq, C) from the k nearest (cosine) training embeddings.

    ``train_z`` / ``query_z`` are L2-normalised (N, D); ``train_y`` (N,) or (N, C) multilabel.
    """
    k = min(k, len(train_z))
    targets = train_y.astype(np.float64) if task == "multilabel" else np.eye(n_classes)[train_y]
    out = np.empty((len(query_z), n_classes))
    for start in range(0, len(query_z), chunk):
        sims = query_z[start:start + chunk] @ train_z.T
        nbr = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        nsim = np.take_along_axis(sims, nbr, axis=1)
        w = np.ones_like(nsim) if vote == "majority" else np.exp((nsim - nsim.max(axis=1, keepdims=True)) / temperature)
        votes = np.einsum("qk,qkc->qc", w, targets[nbr])
        out[start:start + chunk] = votes / w.sum(axis=1, keepdims=True)
    return out


def run(data: FeatureSplits, cfg: KNNConfig, seed: int = 0, shots: int | None = None) -> Predictions:
    """k-NN on ``data`` (optionally ``shots`` examples per class drawn with ``seed``)."""
    t0 = time.perf_counter()
    idx = train_indices(data, shots, seed, "knn")
    train_z = l2_normalize(as_float(data.train_x[idx]))
    train_y = data.train_y[idx]
    val_z = l2_normalize(as_float(data.val_x))
    test_z = l2_normalize(as_float(data.test_x))

    def scores(z: np.ndarray, k: int) -> np.ndarray:
        return knn_scores(train_z, train_y, z, k, data.n_classes, data.task, cfg.vote, cfg.temperature, cfg.chunk)

    candidates = sorted({min(k, len(train_z)) for k in (cfg.k_grid or (cfg.k,))})
    val_by_k = {k: selection_score(data.val_y, scores(val_z, k), data.task) for k in candidates}
    best_k = max(candidates, key=lambda k: (val_by_k[k], -k))
    info = {
        "k": best_k, "vote": cfg.vote, "val_auroc_by_k": {str(k): v for k, v in val_by_k.items()},
        "n_train": int(len(idx)), "trained": True, "model_trained": False, "train_seconds": time.perf_counter() - t0,
    }
    return Predictions(test_scores=scores(test_z, best_k), test_y=data.test_y, val_scores=scores(val_z, best_k), info=info)


PROTOCOL = register_protocol(Protocol("knn", "features", KNNConfig, run, "cosine k-NN on frozen embeddings"))
