"""Report-generation protocol.

- ``retrieve_reports``: each test image gets the report of its nearest training image
  (cosine similarity of image embeddings: a zoo encoder, or 32x32 pixel PCA fitted on the
  training images);
- ``generate_reports``: a generator's answer to its card's ``report`` prompt with the image;
- ``evaluate_reports``: BLEU-1..4 (corpus level, no interval), ROUGE-L, METEOR, CIDEr-D and
  clinical-efficacy precision / recall / F1 (``medfm.metrics.text``); per-report metrics get
  percentile bootstrap intervals over reports; BERTScore precision / recall / F1 (torchmetrics)
  when a BERTScore model (local folder or cached hub id) is given and present, otherwise the
  metric is skipped and the reason recorded (no model ships offline).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medfm.data.reports import ReportItem
from medfm.errors import InputError
from medfm.metrics import text as tm
from medfm.metrics.bootstrap import bootstrap_cis
from medfm.results import MetricValue, Record, make_provenance


@dataclass(frozen=True)
class ReportConfig:
    """``method``: ``retrieval`` or ``generator``; ``encoder`` for retrieval (``pixels-pca`` or a
    zoo id); ``model`` for generation; ``meteor``: auto | java | nltk | off."""

    method: str = "retrieval"
    encoder: str = "pixels-pca"
    model: str | None = None
    max_new_tokens: int = 128
    meteor: str = "auto"
    bertscore_model: str | None = None  # local folder or cached hub id; None: BERTScore skipped
    bertscore_layer: int | None = None  # hidden layer for BERTScore (None: the last)
    n_boot: int = 1000
    seed: int = 0
    device: str | None = None


def evaluate_reports(
    preds: Sequence[str], refs: Sequence[str], meteor: str = "auto", n_boot: int = 1000, seed: int = 0,
    bertscore_model: str | None = None, bertscore_layer: int | None = None, skipped: dict[str, str] | None = None,
) -> dict[str, MetricValue]:
    """All report metrics of ``preds`` against ``refs`` (same order). A metric that cannot run
    (BERTScore without its model) is left out and, when ``skipped`` is given, its reason put there."""
    preds, refs = list(map(str, preds)), list(map(str, refs))
    if len(preds) != len(refs) or not preds:
        raise InputError(f"report metrics: {len(preds)} predictions for {len(refs)} references")
    out = {k: MetricValue(v) for k, v in tm.bleu(preds, refs).items()}
    per: dict[str, np.ndarray] = {}
    _, per["rouge_l"] = tm.rouge_l(preds, refs)
    _, per["cider"] = tm.cider(preds, refs)
    if tm.meteor_backend(meteor) is not None:
        name, _, per_m = tm.meteor(preds, refs, backend=meteor)
        per[name] = per_m
    if bertscore_model is not None:
        reason = tm.bertscore_unavailable(bertscore_model)
        if reason is None:
            bs = tm.bertscore(preds, refs, bertscore_model, num_layers=bertscore_layer)
            per.update({f"bertscore_{k}": v for k, v in bs.items()})
        elif skipped is not None:
            skipped["bertscore"] = reason
    names = list(per)
    table = np.stack([per[n] for n in names], axis=1)
    fns = {n: (lambda t, _, j=j: float(t[:, j].mean())) for j, n in enumerate(names)}
    cis = bootstrap_cis(fns, table, table, n_boot=n_boot, seed=seed)
    for j, n in enumerate(names):
        out[n] = MetricValue(float(table[:, j].mean()), cis[n].low, cis[n].high)
    lab_p, lab_r = tm.finding_matrix(preds), tm.finding_matrix(refs)
    ce = tm.efficacy_from_labels(lab_p, lab_r)
    both = np.concatenate([lab_p, lab_r], axis=1)
    k = lab_p.shape[1]
    ce_fns = {
        name: (lambda t, _, name=name: tm.efficacy_from_labels(t[:, :k], t[:, k:])[name])
        for name in ("ce_precision", "ce_recall", "ce_f1")
    }
    ce_ci = bootstrap_cis(ce_fns, both, both, n_boot=n_boot, seed=seed)
    for name, v in ce.items():
        ci = ce_ci.get(name)
        out[name] = MetricValue(v, ci.low if ci else None, ci.high if ci else None)
    return out


def _embed(train: Sequence[ReportItem], test: Sequence[ReportItem], encoder: str, seed: int, device: str | None) -> tuple[np.ndarray, np.ndarray, str | None]:
    from medfm.tasks.vqa.features import PixelPCAEncoder, zoo_image_features

    if encoder == "pixels-pca":
        enc = PixelPCAEncoder(seed=seed).fit([it.image for it in train])
        return enc.transform([it.image for it in train]), enc.transform([it.image for it in test]), None
    ftr, whash = zoo_image_features(encoder, [it.image for it in train], device=device)
    fte, _ = zoo_image_features(encoder, [it.image for it in test], device=device)
    return ftr, fte, whash


def retrieve_reports(train: Sequence[ReportItem], test: Sequence[ReportItem], encoder: str = "pixels-pca", seed: int = 0, device: str | None = None) -> tuple[list[str], str | None]:
    """Nearest training report (cosine similarity of image embeddings) for each test image."""
    if not train or not test:
        raise InputError("report retrieval: empty train or test set")
    ftr, fte, whash = _embed(train, test, encoder, seed, device)
    a = ftr / (np.linalg.norm(ftr, axis=1, keepdims=True) + 1e-12)
    b = fte / (np.linalg.norm(fte, axis=1, keepdims=True) + 1e-12)
    nn = np.argmax(b @ a.T, axis=1)
    return [train[i].report for i in nn], whash


def generate_reports(generator: Any, test: Sequence[ReportItem], max_new_tokens: int = 128, progress: Any = None) -> list[str]:
    """A generator's report for each test image (the card's ``report`` prompt, greedy)."""
    prompt = generator.render("report")
    items = progress(test, total=len(test), desc="reports") if progress else test
    return [generator.generate(prompt, images=[it.image], max_new_tokens=max_new_tokens) for it in items]


def run_report_generation(train: Sequence[ReportItem], test: Sequence[ReportItem], cfg: ReportConfig, dataset: str = "reports", progress: Any = None) -> Record:
    """One method on a (train, test) pair -> a Record with predictions in ``extra``."""
    t0 = time.perf_counter()
    h = hashlib.sha256()
    for it in list(train) + list(test):
        h.update(f"{it.id}\t{it.image.name}\t{it.report}\n".encode())
    if cfg.method == "retrieval":
        preds, whash = retrieve_reports(train, test, cfg.encoder, cfg.seed, cfg.device)
        model = f"retrieval/{cfg.encoder}"
    elif cfg.method == "generator":
        from medfm.errors import ConfigError
        from medfm.models.generators import create_generator

        if not cfg.model:
            raise ConfigError("report generation with method 'generator' needs a model id")
        gen = create_generator(cfg.model, device=cfg.device)
        preds, whash, model = generate_reports(gen, test, cfg.max_new_tokens, progress), gen.weights_hash, gen.card.id
    else:
        from medfm.errors import ConfigError

        raise ConfigError(f"report method must be 'retrieval' or 'generator', got {cfg.method!r}")
    skipped: dict[str, str] = {}
    metrics = evaluate_reports(
        preds, [it.report for it in test], cfg.meteor, cfg.n_boot, cfg.seed,
        bertscore_model=cfg.bertscore_model, bertscore_layer=cfg.bertscore_layer, skipped=skipped,
    )
    return Record(
        dataset=dataset, split="test", model=model, protocol=f"report_gen/{cfg.method}", metrics=metrics,
        seed=cfg.seed, n=len(test), seconds=round(time.perf_counter() - t0, 3),
        provenance=make_provenance(cfg, data_checksum=h.hexdigest(), weights_hash=whash, n_train=len(train)),
        extra={"predictions": [{"id": it.id, "report": p} for it, p in zip(test, preds)], "skipped_metrics": skipped},
    )
