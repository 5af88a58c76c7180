"""Synthesis protocol: train the diffusion model on a dataset's training split, sample as many
images per class as the training split has, and compare them with real images.

Metrics (all in the feature space of one zoo encoder, ``feature_encoder``, recorded):
- ``frechet_distance`` of synthetic vs real test features, beside ``frechet_distance_real``:
  a held-back real sample (training images, same count) vs the same test features;
- ``precision`` / ``recall`` (k-NN manifolds) of synthetic vs real test, and of the real
  reference sample (``precision_real`` / ``recall_real``);
- ``auroc_tstr`` (train a linear probe on synthetic, test on real) beside ``auroc_trtr``
  (train on real training images, test on real), with stratified bootstrap CIs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medfm.errors import InputError
from medfm.metrics.bootstrap import bootstrap_cis
from medfm.metrics.image_synthesis import frechet_distance, precision_recall
from medfm.results import MetricValue, Record, make_provenance
from medfm.tasks.synthesis.diffusion import ClassConditionalDiffusion, DiffusionConfig


@dataclass(frozen=True)
class SynthConfig:
    """What ``medfm synth`` runs. ``n_per_class`` None: as many as the training split has."""

    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    feature_encoder: str = "random/vit-b16"
    n_per_class: int | None = None
    max_train: int | None = None  # cap on training images (quick runs)
    k: int = 3
    n_boot: int = 1000
    seed: int = 0
    device: str | None = None


def encoder_features(model_id: str, images: np.ndarray, device: str | None = None, batch_size: int = 64) -> tuple[np.ndarray, str | None]:
    """(N, C, H, W) uint8 images -> (N, D) features of zoo model ``model_id`` (+ weights hash)."""
    from medfm.models import create_model

    model = create_model(model_id, device=device)
    want = model.card.preprocess.channels
    feats = []
    for i in range(0, len(images), batch_size):
        batch = images[i : i + batch_size]
        if batch.shape[1] != want:
            batch = np.repeat(batch, want, axis=1) if batch.shape[1] == 1 else batch.mean(1, keepdims=True).astype(np.uint8)
        feats.append(model.encode_image(model.preprocess(list(batch))).cpu().numpy())
    return np.concatenate(feats).astype(np.float64), model.weights_hash


def _auroc(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if scores.ndim == 2 and scores.shape[1] == 2:
        scores = scores[:, 1]
    if scores.ndim == 1:
        return float(roc_auc_score(y, scores))
    return float(roc_auc_score(y, scores, multi_class="ovr", average="macro", labels=np.arange(scores.shape[1])))


def probe_auroc(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, n_boot: int, seed: int) -> MetricValue:
    """Linear probe (standardised logistic regression) trained on one set, AUROC on the real test set."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(y_train)) < 2:
        raise InputError("linear probe: the training set has a single class")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0)).fit(x_train, y_train)
    scores = clf.predict_proba(x_test)
    value = _auroc(y_test, scores)
    ci = bootstrap_cis({"a": _auroc}, y_test, scores, n_boot=n_boot, seed=seed, stratify=y_test)["a"]
    return MetricValue(value, ci.low, ci.high)


def evaluate_synthetic(
    real_train: np.ndarray, y_train: np.ndarray, real_test: np.ndarray, y_test: np.ndarray,
    synth: np.ndarray, y_synth: np.ndarray, cfg: SynthConfig,
) -> tuple[dict[str, MetricValue], str | None]:
    """The metrics above from image arrays (N, C, H, W) uint8; returns (metrics, encoder weights hash)."""
    f_train, whash = encoder_features(cfg.feature_encoder, real_train, cfg.device)
    f_test, _ = encoder_features(cfg.feature_encoder, real_test, cfg.device)
    f_syn, _ = encoder_features(cfg.feature_encoder, synth, cfg.device)
    n = min(len(f_train), len(f_syn))
    rng = np.random.default_rng(cfg.seed)
    ref = f_train[rng.permutation(len(f_train))[:n]]
    syn = f_syn[rng.permutation(len(f_syn))[:n]]
    m = {
        "frechet_distance": MetricValue(frechet_distance(f_test, syn)),
        "frechet_distance_real": MetricValue(frechet_distance(f_test, ref)),
    }
    pr_s, pr_r = precision_recall(f_test, syn, cfg.k), precision_recall(f_test, ref, cfg.k)
    m.update({"precision": MetricValue(pr_s["precision"]), "recall": MetricValue(pr_s["recall"]),
              "precision_real": MetricValue(pr_r["precision"]), "recall_real": MetricValue(pr_r["recall"])})
    m["auroc_tstr"] = probe_auroc(f_syn, y_synth, f_test, y_test, cfg.n_boot, cfg.seed)
    m["auroc_trtr"] = probe_auroc(f_train, y_train, f_test, y_test, cfg.n_boot, cfg.seed)
    return m, whash


def run_synthesis(
    dataset: str, cfg: SynthConfig, data_dir: str | None = None, progress: Any = None
) -> tuple[Record, np.ndarray, np.ndarray, ClassConditionalDiffusion]:
    """Train, sample, evaluate -> (Record, synthetic images, their labels, the trained model)."""
    from medfm.data import load_dataset

    ds = load_dataset(dataset, data_dir)
    tr, te = ds.split("train"), ds.split("test")
    x_tr, y_tr = np.asarray(tr.images()), np.asarray(tr.labels).reshape(-1)
    x_te, y_te = np.asarray(te.images()), np.asarray(te.labels).reshape(-1)
    if x_tr.ndim != 4:
        raise InputError(f"{dataset}: synthesis needs 2D images (N, C, H, W), got {x_tr.shape}")
    if cfg.max_train is not None and cfg.max_train < len(x_tr):
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(x_tr))[: cfg.max_train])
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    t0 = time.perf_counter()
    model = ClassConditionalDiffusion(cfg.diffusion).fit(x_tr, y_tr, progress)
    if cfg.n_per_class is None:
        y_syn = np.sort(y_tr)
    else:
        y_syn = np.repeat(np.arange(model.n_classes), cfg.n_per_class)
    synth = model.sample(y_syn, seed=cfg.seed, progress=progress)
    metrics, whash = evaluate_synthetic(x_tr, y_tr, x_te, y_te, synth, y_syn, cfg)
    checksum = getattr(tr, "checksum", None)
    rec = Record(
        dataset=dataset, split="test", model=f"diffusion/unet{'-'.join(map(str, cfg.diffusion.channels))}",
        protocol="synthesis/ddpm", metrics=metrics, seed=cfg.seed, n=len(x_te), seconds=round(time.perf_counter() - t0, 3),
        provenance=make_provenance(cfg, data_checksum=checksum() if callable(checksum) else checksum, weights_hash=whash,
                                   feature_encoder=cfg.feature_encoder),
        extra={"feature_encoder": cfg.feature_encoder, "n_train": int(len(x_tr)), "n_synthetic": int(len(synth)),
               "train_seconds": round(model.seconds, 2), "final_loss": float(np.mean(model.losses[-50:]))},
    )
    return rec, synth, y_syn, model
