"""A saved classification head: the linear probe fitted on frozen embeddings, kept to classify new images.

``train_head`` embeds a dataset's splits with a zoo encoder (through the embedding cache, the same
path and key as ``medfm embed``), runs the ``linear_probe`` protocol (C chosen on the validation split),
refits the chosen C and saves ``classifier.json`` (encoder, weights hash, classes, C, val/test metrics
with CIs, provenance) and ``head.safetensors`` (scaler mean/scale, weight, bias). ``LinearHead.load``
reads them back; ``predict_proba`` applies the head to embeddings with numpy only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import ConfigError, InputError

FORMAT = "medfm-linear-head"
FORMAT_VERSION = 1
CONFIG_FILE = "classifier.json"
HEAD_FILE = "head.safetensors"


@dataclass
class LinearHead:
    """Standardise (``mean``, ``scale``), then ``weight @ x + bias``; ``kind`` picks the link:
    "binary" (one logit, sigmoid -> [1 - p, p]), "softmax" (one logit per class), "multilabel" (sigmoid per label)."""

    weight: np.ndarray  # (K, D) float64
    bias: np.ndarray  # (K,)
    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    kind: str
    class_names: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def predict_proba(self, emb: np.ndarray) -> np.ndarray:
        """(N, D) embeddings -> (N, classes) probabilities, as sklearn's ``predict_proba`` of the fitted probe."""
        from medfm.tasks.classification._common import sigmoid, softmax

        x = np.asarray(emb, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise InputError(f"embeddings of shape {x.shape} do not fit a head for {self.dim}-wide embeddings")
        z = ((x - self.mean) / self.scale) @ self.weight.T + self.bias
        if self.kind == "binary":
            p = sigmoid(z[:, 0])
            return np.stack([1.0 - p, p], axis=1)
        if self.kind == "softmax":
            return softmax(z, axis=1)
        return sigmoid(z)

    def save(self, folder: Path, meta: dict[str, Any]) -> None:
        """Write ``head.safetensors`` then ``classifier.json`` (last: a folder without it is not a classifier)."""
        from safetensors.numpy import save_file

        from medfm._paths import atomic_path, atomic_write_text, file_hash

        tensors = {"weight": self.weight, "bias": self.bias, "mean": self.mean, "scale": self.scale}
        with atomic_path(folder / HEAD_FILE) as tmp:
            save_file({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in tensors.items()}, str(tmp))
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": self.kind, "class_names": list(self.class_names),
               "embed_dim": self.dim, "head_sha256": file_hash(folder / HEAD_FILE), **meta}
        atomic_write_text(folder / CONFIG_FILE, json.dumps(doc, indent=2, default=str))
        self.meta = doc

    @classmethod
    def load(cls, folder: str | Path) -> LinearHead:
        """Read a folder written by :meth:`save`; anything else is one clear InputError naming it."""
        from medfm._paths import file_hash

        folder = Path(folder)
        cfg_path, head_path = folder / CONFIG_FILE, folder / HEAD_FILE
        if not folder.is_dir():
            raise InputError(f"{folder}: not found (a classifier folder written by `medfm train-cls`)")
        if not cfg_path.is_file() or not head_path.is_file():
            raise InputError(f"{folder}: not a trained classifier (no {CONFIG_FILE} / {HEAD_FILE}; write one with `medfm train-cls`)")
        try:
            doc = json.loads(cfg_path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{cfg_path}: not readable JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise InputError(f"{cfg_path}: not a medfm classifier (format {doc.get('format') if isinstance(doc, dict) else None!r})")
        if doc.get("head_sha256") != file_hash(head_path):
            raise InputError(f"{head_path}: checksum differs from {CONFIG_FILE} (file changed or truncated)")
        from safetensors.numpy import load_file

        try:
            t = load_file(str(head_path))
            head = cls(t["weight"], t["bias"], t["mean"], t["scale"], str(doc["kind"]), tuple(doc["class_names"]), doc)
        except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
            raise InputError(f"{head_path}: not a readable head ({type(exc).__name__}: {exc})") from None
        if head.weight.ndim != 2 or head.bias.shape != (head.weight.shape[0],) or head.mean.shape != (head.dim,):
            raise InputError(f"{head_path}: inconsistent shapes weight {head.weight.shape}, bias {head.bias.shape}")
        return head


def head_from_sklearn(clf: Any, scaler: Any, dim: int, task: str, class_names: tuple[str, ...]) -> LinearHead:
    """Weights of a fitted LogisticRegression (or one-vs-rest of them for multilabel) and its StandardScaler."""
    if task == "multilabel":
        weight = np.concatenate([e.coef_ for e in clf.estimators_], axis=0)
        bias = np.concatenate([e.intercept_ for e in clf.estimators_], axis=0)
        kind = "multilabel"
    else:
        weight, bias = clf.coef_, clf.intercept_
        kind = "binary" if weight.shape[0] == 1 else "softmax"
    mean = scaler.mean_ if scaler is not None else np.zeros(dim)
    scale = scaler.scale_ if scaler is not None else np.ones(dim)
    f = lambda a: np.asarray(a, dtype=np.float64)
    return LinearHead(f(weight), f(bias), f(mean), f(scale), kind, class_names)


def train_head(model: str, dataset: str, out: Path, data_dir: str | None = None, shots: int | None = None, seed: int = 0,
               device: str | None = None, n_boot: int = 1000, log: Any = None) -> dict[str, Any]:
    """Fit the linear probe on ``model``'s embeddings of ``dataset`` and save it in ``out`` (already prepared)."""
    from sklearn.preprocessing import StandardScaler

    from medfm import __version__
    from medfm._runtime import configure_threads
    from medfm.data import load_dataset
    from medfm.metrics.classification import compute_metrics
    from medfm.models import create_model
    from medfm.models.embed import EmbeddingCache, embed_cached, split_images
    from medfm.results import make_provenance
    from medfm.tasks.classification import linear_probe
    from medfm.tasks.classification._common import as_float
    from medfm.tasks.classification.data import FeatureSplits, train_indices

    t0 = time.perf_counter()
    configure_threads()
    ds = load_dataset(dataset, data_dir)
    if ds.card.task not in ("classification", "multilabel", "ordinal"):
        raise ConfigError(f"{dataset}: a {ds.card.task} dataset; train-cls needs a classification dataset")
    missing = [s for s in ("train", "val", "test") if s not in ds.splits]
    if missing:
        raise ConfigError(f"{dataset}: no {'/'.join(missing)} split(s); train-cls needs train, val and test")
    adapter = create_model(model, device=device)
    adapter.require("image_encoder", "medfm train-cls")
    cache = EmbeddingCache()
    x: dict[str, np.ndarray] = {}
    y: dict[str, np.ndarray] = {}
    checksums: dict[str, str] = {}
    for name in ("train", "val", "test"):
        sd = ds.split(name)
        checksums[name] = sd.checksum()  # the same cache key as `medfm embed` (no --limit)
        x[name] = embed_cached(adapter, split_images(sd), checksums[name], cache=cache, desc=f"embed {name}")
        y[name] = np.asarray(sd.labels)
        if log:
            log(f"{name}: {x[name].shape[0]} x {x[name].shape[1]} embeddings")
    names = tuple(ds.card.labels) or tuple(str(i) for i in range(int(np.max(y["train"])) + 1))
    # the metrics' task, as medfm.bench.runner.metric_task names it
    task = ("binary" if len(names) == 2 else "multiclass") if ds.card.task == "classification" else ds.card.task
    data = FeatureSplits(x["train"], y["train"], x["val"], y["val"], x["test"], y["test"], label_names=names, task=task)
    cfg = linear_probe.LinearProbeConfig()
    pred = linear_probe.run(data, cfg, seed=seed, shots=shots)  # chooses C on val by AUROC
    best_c = float(pred.info["C"])
    # refit the chosen C on the same training rows to keep the fitted model (lbfgs is deterministic)
    idx = train_indices(data, shots, seed, "linear_probe")
    scaler = StandardScaler().fit(as_float(data.train_x[idx])) if cfg.standardize else None
    xs = (lambda a: scaler.transform(as_float(a))) if scaler is not None else as_float
    clf = linear_probe._fit(xs(data.train_x[idx]), data.train_y[idx], best_c, cfg, task, seed)
    head = head_from_sklearn(clf, scaler, data.train_x.shape[1], task, names)
    test_p, val_p = head.predict_proba(data.test_x), head.predict_proba(data.val_x)
    if not (np.allclose(test_p, pred.test_scores, atol=1e-6) and np.allclose(val_p, pred.val_scores, atol=1e-6)):
        raise ConfigError("train-cls: the saved head does not reproduce the probe's predictions (refit differs)")

    def metrics(yy: np.ndarray, p: np.ndarray) -> dict[str, Any]:
        m = compute_metrics(yy, p, task, n_boot=n_boot, seed=seed)
        return {k: {"value": v.value, "ci_low": v.ci_low, "ci_high": v.ci_high} for k, v in m.items()}

    meta = {
        "encoder": {"id": adapter.card.id, "model_arg": model, "weights_hash": adapter.weights_hash,
                    "weights_source": adapter.weights_source, "input_ndim": adapter.card.input_ndim},
        "task": task, "protocol": "linear_probe",
        "hyperparameters": {"C": best_c, "val_auroc_by_C": pred.info["val_auroc_by_C"], "standardize": cfg.standardize,
                            "class_weight": cfg.class_weight, "max_iter": cfg.max_iter, "selected_on": "val"},
        "metrics": {"val": metrics(data.val_y, val_p), "test": metrics(data.test_y, test_p), "n_boot": n_boot, "ci": 0.95},
        # the same block as every Record (weights source and hub commit included), plus the per-split checksums
        "provenance": make_provenance(
            {"model": model, "dataset": dataset, "shots": shots, "seed": seed, "probe": {"c_grid": list(cfg.c_grid)}},
            data_checksum=checksums["train"], weights_hash=adapter.weights_hash,
            seed=seed, dataset=ds.card.name, data_checksums=checksums,
            n={"train": len(idx), "val": len(data.val_y), "test": len(data.test_y)},
            medfm_version=__version__, train_seconds=round(time.perf_counter() - t0, 3),
        ),
    }
    head.save(out, meta)
    return {**head.meta, "out": str(out)}
