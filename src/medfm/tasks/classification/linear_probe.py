"""Linear probe: logistic regression on standardised frozen embeddings.

The inverse regularisation C is chosen on the validation split by AUROC over a log grid;
each candidate is fitted on the training split only (the chosen one is the returned model).
Multilabel tasks fit one logistic regression per label.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np

from medfm.errors import ConfigError
from medfm.tasks.classification._common import as_float, selection_score
from medfm.tasks.classification.base import Protocol, register_protocol
from medfm.tasks.classification.data import FeatureSplits, Predictions, train_indices


@dataclass
class LinearProbeConfig:
    """``c_grid``: candidate inverse regularisation strengths; ``class_weight``: None or "balanced"."""

    c_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
    max_iter: int = 2000
    class_weight: str | None = None
    standardize: bool = True

    def __post_init__(self) -> None:
        if not self.c_grid or any(c <= 0 for c in self.c_grid):
            raise ConfigError(f"linear_probe: c_grid must hold positive values, got {self.c_grid}")
        if self.class_weight not in (None, "balanced"):
            raise ConfigError(f"linear_probe: class_weight must be null or 'balanced', got {self.class_weight!r}")


def _fit(x: np.ndarray, y: np.ndarray, c: float, cfg: LinearProbeConfig, task: str, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    clf = LogisticRegression(C=c, max_iter=cfg.max_iter, class_weight=cfg.class_weight, random_state=seed)
    if task == "multilabel":
        clf = OneVsRestClassifier(clf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings at tiny C / constant labels
        clf.fit(x, y)
    return clf


def run(data: FeatureSplits, cfg: LinearProbeConfig, seed: int = 0, shots: int | None = None) -> Predictions:
    """Fit logistic regression on (a k-shot subset of) the training embeddings."""
    from sklearn.preprocessing import StandardScaler

    t0 = time.perf_counter()
    idx = train_indices(data, shots, seed, "linear_probe")
    x_tr, y_tr = as_float(data.train_x[idx]), data.train_y[idx]
    x_va, x_te = as_float(data.val_x), as_float(data.test_x)
    if cfg.standardize:
        scaler = StandardScaler().fit(x_tr)
        x_tr, x_va, x_te = scaler.transform(x_tr), scaler.transform(x_va), scaler.transform(x_te)

    val_by_c: dict[float, float] = {}
    models = {}
    for c in cfg.c_grid:
        models[c] = _fit(x_tr, y_tr, c, cfg, data.task, seed)
        val_by_c[c] = selection_score(data.val_y, models[c].predict_proba(x_va), data.task)
    best_c = max(cfg.c_grid, key=lambda c: (val_by_c[c], -c))  # ties: stronger regularisation
    best = models[best_c]
    info = {
        "C": best_c, "val_auroc_by_C": {repr(c): v for c, v in val_by_c.items()},
        "n_train": int(len(idx)), "trained": True, "model_trained": False, "train_seconds": time.perf_counter() - t0,
    }
    return Predictions(best.predict_proba(x_te), data.test_y, best.predict_proba(x_va), info)


PROTOCOL = register_protocol(
    Protocol("linear_probe", "features", LinearProbeConfig, run, "logistic regression on frozen embeddings, C chosen on val")
)
