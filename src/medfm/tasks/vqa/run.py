"""The VQA protocol: image-disjoint splits, baselines, discriminative and generative answering.

``run_vqa(train, test, cfg)`` returns Records (one per method) with closed / open accuracy,
token F1 and BLEU-1 by answer and question type, each with a bootstrap CI:
- ``majority``: the most frequent training answer per answer type;
- ``question_only``: MiniLM question embedding -> classifier (no image);
- ``discriminative``: question + image features (``image_encoder``), settings chosen on an
  image-disjoint validation split of the *training* images when ``select_on_val``;
- ``generative``: a generator's answers (``model``), when one is given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medfm.data.vqa import VQAItem, image_disjoint_split
from medfm.errors import ConfigError
from medfm.results import Record, make_provenance
from medfm.tasks.vqa.discriminative import DiscriminativeConfig, fit_predict, majority_answers
from medfm.tasks.vqa.evaluate import score_items, vqa_metrics

# candidate settings compared on the validation split (the question-only one is always there)
SELECTION_GRID: tuple[dict[str, Any], ...] = (
    {"attributes": False},
    {"attributes": True},
    {"attributes": True, "image_weight": 0.3},
)


@dataclass(frozen=True)
class VQAConfig:
    """What ``medfm vqa`` runs. ``image_encoder`` None: no image method beyond question-only."""

    image_encoder: str | None = "pixels-pca"
    fusion: str = "mlp"
    model: str | None = None
    base_url: str | None = None  # with ``model``: an OpenAI-compatible server serving it
    max_new_tokens: int = 16
    generate_limit: int | None = None  # answer only the first N test questions generatively
    select_on_val: bool = True
    val_fraction: float = 0.2
    test_fraction: float = 0.3  # image-disjoint test share when no test folder is given
    n_boot: int = 1000
    seed: int = 0
    device: str | None = None


def items_checksum(items: Sequence[VQAItem]) -> str:
    """sha256 over (qid, image name, question, answer) of the items: identity of a split."""
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it.qid}\t{it.image_name}\t{it.question}\t{it.answer}\n".encode())
    return h.hexdigest()


def image_features(train: Sequence[VQAItem], test: Sequence[VQAItem], encoder: str, seed: int, device: str | None = None) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(train rows, test rows, weights hash) of image features, fitted on training images only."""
    from medfm.tasks.vqa.features import PixelPCAEncoder, zoo_image_features

    tr_imgs = sorted({it.image for it in train})
    te_imgs = sorted({it.image for it in test})
    if encoder == "pixels-pca":
        enc = PixelPCAEncoder(seed=seed).fit(tr_imgs)
        ftr, fte, whash = enc.transform(tr_imgs), enc.transform(te_imgs), None
    else:
        ftr, whash = zoo_image_features(encoder, tr_imgs, device=device)
        fte, _ = zoo_image_features(encoder, te_imgs, device=device)
    rtr = {p: i for i, p in enumerate(tr_imgs)}
    rte = {p: i for i, p in enumerate(te_imgs)}
    return ftr[[rtr[it.image] for it in train]], fte[[rte[it.image] for it in test]], whash


def select_discriminative(train: Sequence[VQAItem], cfg: VQAConfig) -> tuple[DiscriminativeConfig, dict[str, float]]:
    """Pick the image-method setting with the best closed accuracy on a validation split of
    the training images (ties -> the earlier, simpler setting)."""
    base = DiscriminativeConfig(image_encoder=cfg.image_encoder, fusion=cfg.fusion, seed=cfg.seed)
    if not cfg.select_on_val:
        return base, {}
    fit_tr, val = image_disjoint_split(list(train), cfg.val_fraction, cfg.seed + 1)
    ftr, fva, _ = image_features(fit_tr, val, str(cfg.image_encoder), cfg.seed, cfg.device)
    scores: dict[str, float] = {}
    best, best_acc = base, -1.0
    for values in SELECTION_GRID:
        cand = dataclasses.replace(base, **values)
        s = score_items(val, fit_predict(fit_tr, val, cand, (ftr, fva)))
        acc = float(s["correct"][s["closed"]].mean()) if s["closed"].any() else float(s["correct"].mean())
        scores[str(values)] = acc
        if acc > best_acc:
            best, best_acc = cand, acc
    return best, scores


def run_vqa(
    train: Sequence[VQAItem],
    test: Sequence[VQAItem],
    cfg: VQAConfig,
    dataset: str = "vqa",
    split: str = "test",
    progress: Any = None,
) -> list[Record]:
    """All methods on one image-disjoint (train, test) pair -> Records."""
    overlap = {it.image_name for it in train} & {it.image_name for it in test}
    if overlap:
        raise ConfigError(f"train and test share {len(overlap)} image(s) (e.g. {sorted(overlap)[0]}); VQA splits must be image-disjoint")
    checksum = items_checksum(list(train) + list(test))
    records: list[Record] = []

    def record(method: str, model: str, preds: list[str], t0: float, config: Any, whash: str | None = None, **extra: Any) -> None:
        items = list(test)[: len(preds)]
        records.append(
            Record(
                dataset=dataset, split=split, model=model, protocol=f"vqa/{method}",
                metrics=vqa_metrics(items, preds, n_boot=cfg.n_boot, seed=cfg.seed), seed=cfg.seed, n=len(items),
                seconds=round(time.perf_counter() - t0, 3),
                provenance=make_provenance(config, data_checksum=checksum, weights_hash=whash, n_train=len(train)),
                extra={"predictions": [{"qid": it.qid, "pred": p} for it, p in zip(items, preds)], **extra},
            )
        )

    t0 = time.perf_counter()
    record("majority", "none", majority_answers(train, test), t0, cfg)
    t0 = time.perf_counter()
    q_cfg = DiscriminativeConfig(image_encoder=None, fusion=cfg.fusion, seed=cfg.seed)
    record("question_only", "minilm-l6-v2", fit_predict(train, test, q_cfg), t0, q_cfg)
    if cfg.image_encoder:
        t0 = time.perf_counter()
        chosen, val_scores = select_discriminative(train, cfg)
        ftr, fte, whash = image_features(train, test, cfg.image_encoder, cfg.seed, cfg.device)
        preds = fit_predict(train, test, chosen, (ftr, fte))
        record("discriminative", f"minilm-l6-v2+{cfg.image_encoder}", preds, t0, chosen, whash, validation_closed_accuracy=val_scores)
    if cfg.model:
        from medfm.models.generators import create_generator, http_card
        from medfm.tasks.vqa.generative import generate_answers

        t0 = time.perf_counter()
        if cfg.base_url:
            gen = create_generator(http_card(cfg.base_url, cfg.model, accepts_images=True))
        else:
            gen = create_generator(cfg.model, device=cfg.device)
        items = list(test)[: cfg.generate_limit] if cfg.generate_limit else list(test)
        preds = generate_answers(gen, items, cfg.max_new_tokens, progress)
        record("generative", gen.card.id, preds, t0, cfg, gen.weights_hash)
    return records


def split_train_test(items: Sequence[VQAItem], cfg: VQAConfig) -> tuple[list[VQAItem], list[VQAItem]]:
    """Image-disjoint fixed-seed split of one folder's items (when no test folder is given)."""
    return image_disjoint_split(list(items), cfg.test_fraction, cfg.seed)
