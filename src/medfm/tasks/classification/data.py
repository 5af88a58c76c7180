"""Inputs and outputs of the classification protocols.

``FeatureSplits`` holds embeddings (for knn / linear_probe / prototype), ``ImageSplits`` holds
images (for zero_shot / finetune / scratch); both carry train / val / test splits, the label
names and the task. Labels: (N,) class indices for binary / multiclass / ordinal (an (N, 1)
column is accepted and flattened), (N, C) 0/1 indicators for multilabel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medfm.errors import ConfigError, InputError
from medfm.metrics.classification import TASKS

SPLITS = ("train", "val", "test")


def _check_labels(y: Any, task: str, n_classes: int, where: str) -> np.ndarray:
    y = np.asarray(y)
    if task == "multilabel":
        if y.ndim != 2 or y.shape[1] != n_classes:
            raise InputError(f"{where}: multilabel labels must be (N, {n_classes}), got shape {y.shape}")
        if y.size and not np.isin(y, (0, 1)).all():
            raise InputError(f"{where}: multilabel labels must be 0/1")
        return y.astype(np.int64)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InputError(f"{where}: labels must be (N,) class indices for task '{task}', got shape {y.shape}")
    if y.size and (not np.all(np.equal(np.mod(y, 1), 0)) or y.min() < 0 or y.max() >= n_classes):
        raise InputError(f"{where}: labels must be integers in [0, {n_classes}) ({n_classes} label names)")
    return y.astype(np.int64)


def _check_common(obj: Any, kind: str, ndims: tuple[int, ...], hint: str) -> None:
    if obj.task not in TASKS:
        raise ConfigError(f"{kind}: unknown task '{obj.task}'; expected one of {list(TASKS)}")
    obj.label_names = tuple(str(n) for n in obj.label_names)
    n_classes = len(obj.label_names)
    if n_classes < 2 and obj.task != "multilabel":
        raise InputError(f"{kind}: need at least 2 label names for task '{obj.task}', got {obj.label_names}")
    if obj.task == "binary" and n_classes != 2:
        raise InputError(f"{kind}: binary task needs exactly 2 label names, got {obj.label_names}")
    for split in SPLITS:
        x = np.asarray(getattr(obj, f"{split}_x"))
        if x.ndim not in ndims:
            raise InputError(f"{kind}: {split}_x must have {' or '.join(map(str, ndims))} dimensions ({hint}), got shape {x.shape}")
        if x.shape[0] == 0:
            raise InputError(f"{kind}: the {split} split is empty")
        y = _check_labels(getattr(obj, f"{split}_y"), obj.task, n_classes, f"{kind}.{split}_y")
        if y.shape[0] != x.shape[0]:
            raise InputError(f"{kind}: {split}_x has {x.shape[0]} rows but {split}_y has {y.shape[0]}")
        setattr(obj, f"{split}_x", x)
        setattr(obj, f"{split}_y", y)


@dataclass
class _Splits:
    """The fields both split containers share: ``*_x`` / ``*_y`` per split, label names, task."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    label_names: tuple[str, ...]
    task: str

    @property
    def n_classes(self) -> int:
        return len(self.label_names)


@dataclass
class FeatureSplits(_Splits):
    """Embeddings per split: ``*_x`` (N, D) float, ``*_y`` labels; for embedding protocols."""

    def __post_init__(self) -> None:
        _check_common(self, "FeatureSplits", (2,), "(N, D) embeddings")
        dims = {getattr(self, f"{s}_x").shape[1] for s in SPLITS}
        if len(dims) != 1:
            raise InputError(f"FeatureSplits: embedding widths differ between splits: {sorted(dims)}")
        for s in SPLITS:
            if not np.isfinite(getattr(self, f"{s}_x")).all():
                raise InputError(f"FeatureSplits: {s}_x contains NaN or inf")


@dataclass
class ImageSplits(_Splits):
    """Images per split: ``*_x`` (N, C, H, W) or (N, C, D, H, W), uint8 or float; for image protocols.

    uint8 images are scaled by 1/255; float images are taken as already in [0, 1].
    """

    def __post_init__(self) -> None:
        _check_common(self, "ImageSplits", (4, 5), "(N, C, H, W) or (N, C, D, H, W); add a channel axis to (N, H, W)")
        shapes = {getattr(self, f"{s}_x").shape[1:] for s in SPLITS}
        if len(shapes) != 1:
            raise InputError(f"ImageSplits: image shapes differ between splits: {sorted(shapes)}")

    @property
    def spatial_dims(self) -> int:
        return self.train_x.ndim - 2


@dataclass
class Predictions:
    """What a protocol returns: test probabilities (N, C) and labels, optional val probabilities,
    and ``info`` (chosen hyper-parameters, ``train_seconds``, ``epochs``; ``trained``: whether
    anything was fitted to the training labels, a head or a k-NN index included;
    ``model_trained``: whether network weights were trained, as in scratch / finetune)."""

    test_scores: np.ndarray
    test_y: np.ndarray
    val_scores: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


def subsample_shots(y: np.ndarray, shots: int | None, seed: int, n_classes: int | None = None) -> np.ndarray:
    """Sorted indices of ``shots`` training examples per class (``None``: all indices).

    Seeded; for one seed the k-shot set is contained in the 2k-shot set (each class is permuted
    once and its first k taken). ``n_classes`` (default ``max(y) + 1``) lets a class missing
    from ``y`` be reported. Raises ConfigError when a class is missing or has fewer than k.
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if shots is None:
        return np.arange(len(y))
    if y.ndim != 1:
        raise ConfigError("k-shot subsampling needs single-label (N,) labels; multilabel tasks use shots=None")
    if not isinstance(shots, (int, np.integer)) or isinstance(shots, bool) or shots < 1:
        raise ConfigError(f"shots must be a positive integer or None (all), got {shots!r}")
    y = y.astype(np.int64)
    n_classes = int(n_classes if n_classes is not None else (y.max() + 1 if len(y) else 0))
    counts = np.bincount(y, minlength=n_classes) if len(y) else np.zeros(n_classes, dtype=int)
    missing = [c for c in range(n_classes) if counts[c] == 0]
    if missing:
        raise ConfigError(f"{shots}-shot: class(es) {missing} have no training examples (counts per class: {counts.tolist()})")
    short = [c for c in range(n_classes) if counts[c] < shots]
    if short:
        detail = ", ".join(f"class {c} has {counts[c]}" for c in short)
        raise ConfigError(f"{shots}-shot needs {shots} training examples per class but {detail}")
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(y == c))[:shots] for c in range(n_classes)]
    return np.sort(np.concatenate(chosen))


def train_indices(data: FeatureSplits | ImageSplits, shots: int | None, seed: int, protocol: str) -> np.ndarray:
    """Training rows a protocol uses: ``shots`` per class (seeded) or all; every class must appear."""
    if shots is not None and data.task == "multilabel":
        raise ConfigError(f"protocol '{protocol}': k-shot subsampling is defined per class; multilabel tasks need shots=None")
    if shots is None:
        idx = np.arange(len(data.train_y))
    else:
        idx = subsample_shots(data.train_y, shots, seed, n_classes=data.n_classes)
    check_train_classes(data.train_y[idx], data.task, data.n_classes, protocol)
    return idx


def check_train_classes(y: np.ndarray, task: str, n_classes: int, where: str) -> None:
    """Every class must appear in the training labels (else predict_proba columns go missing)."""
    if task == "multilabel":
        return
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes)
    missing = [c for c in range(n_classes) if counts[c] == 0]
    if missing:
        raise InputError(f"{where}: class(es) {missing} have no training examples (counts {counts.tolist()})")
