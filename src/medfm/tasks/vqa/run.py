"""The VQA protocol: image-disjoint splits, baselines, discriminative and generative answering.

``run_vqa(train, test, cfg)`` returns Records (one per method) with closed / open accuracy,
token F1 and BLEU-1 by answer and question type, each with a bootstrap CI:
- ``majority``: the most frequent training answer per answer type;
- ``question_only``: MiniLM question embedding -> classifier (no image);
- ``discriminative``: question + image features (``image_encoder``; ``"ssl"`` pretrains a SimCLR
  encoder on the training images inside the run, see ``ssl_pretraining`` in the record);
both classifiers' settings are chosen on image-disjoint validation splits of the *training*
images when ``select_on_val`` (the image grid starts from the chosen question-only setting);
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
from medfm.tasks.vqa.discriminative import DiscriminativeConfig, fit_predict, fit_predict_heads, majority_answers
from medfm.tasks.vqa.evaluate import score_items, vqa_metrics

# candidate settings compared on validation splits of the training images, per answer type
# (closed and open heads are separate classifiers): the question-only classifier first, then
# image settings on top of the chosen question-only one. Open answers: hundreds of classes,
# so only the linear model (``fusion`` mlp falls back to it there).
_QUESTION_CLASSIFIERS: dict[str, tuple[dict[str, Any], ...]] = {
    "CLOSED": ({"fusion": "linear", "C": 1.0}, {"fusion": "linear", "C": 10.0}, {"fusion": "mlp"}),
    "OPEN": ({"fusion": "linear", "C": 1.0}, {"fusion": "linear", "C": 10.0}, {"fusion": "linear", "C": 100.0}),
}
# each classifier with MiniLM alone and with MiniLM + character TF-IDF (the chosen question
# representation is then shared by the image model, so the comparison stays like for like)
QUESTION_GRID: dict[str, tuple[dict[str, Any], ...]] = {
    kind: tuple({**c, "question_encoder": q} for q in ("minilm", "minilm+tfidf") for c in grid)
    for kind, grid in _QUESTION_CLASSIFIERS.items()
}
IMAGE_GRID: tuple[dict[str, Any], ...] = (
    {"attributes": False, "image_weight": 0.1},
    {"attributes": True, "image_weight": 0.1},
    {"attributes": True, "image_weight": 0.0, "attribute_weight": 1.0},
    {"attributes": True, "image_weight": 0.0, "attribute_weight": 3.0},
    {"attributes": True, "image_weight": 0.0, "attribute_weight": 3.0, "attribute_probs": True},
    # closed yes/no only: a question x image kernel vote added to the classifier's log-odds
    {"attributes": True, "image_weight": 0.0, "attribute_weight": 3.0, "knn_weight": 1.0, "knn_tq": 0.1, "knn_ti": 0.4},
    {"attributes": True, "image_weight": 0.0, "attribute_weight": 3.0, "knn_weight": 3.0, "knn_tq": 0.1, "knn_ti": 0.4},
    {"attributes": True, "image_weight": 0.0, "attribute_weight": 3.0, "knn_weight": 3.0, "knn_tq": 0.2, "knn_ti": 0.2},
    {"attributes": True, "image_weight": 0.0, "attribute_weight": 3.0, "knn_weight": 10.0, "knn_tq": 0.1, "knn_ti": 0.4},
    {"attributes": True, "image_weight": 0.0, "attribute_weight": 3.0, "knn_weight": 10.0, "knn_tq": 0.2, "knn_ti": 0.2},
)
KINDS = ("CLOSED", "OPEN")


@dataclass(frozen=True)
class VQAConfig:
    """What ``medfm vqa`` runs. ``image_encoder`` None: no image method beyond question-only."""

    image_encoder: str | None = "pixels-pca+stats"
    fusion: str = "linear"  # used as is when not select_on_val
    model: str | None = None
    base_url: str | None = None  # with ``model``: an OpenAI-compatible server serving it
    max_new_tokens: int = 16
    generate_limit: int | None = None  # answer only the first N test questions generatively
    select_on_val: bool = True
    val_fraction: float = 0.25
    val_splits: int = 3  # image-disjoint validation splits of the training images (scores averaged)
    test_fraction: float = 0.3  # image-disjoint test share when no test folder is given
    n_boot: int = 1000
    seed: int = 0
    device: str | None = None
    ssl_minutes: float = 3.0  # image_encoder "ssl": wall-time budget of the SimCLR pretraining
    ssl_epochs: int = 100
    ssl_image_size: int = 64


def items_checksum(items: Sequence[VQAItem]) -> str:
    """sha256 over (qid, image name, question, answer) of the items: identity of a split."""
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it.qid}\t{it.image_name}\t{it.question}\t{it.answer}\n".encode())
    return h.hexdigest()


def image_features(
    train: Sequence[VQAItem], test: Sequence[VQAItem], encoder: str, seed: int, device: str | None = None,
    cfg: VQAConfig | None = None, ssl_images: Sequence[VQAItem] | None = None,
) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(train rows, test rows, weights hash) of image features, fitted on training images only.

    ``"ssl"``: the encoder is pretrained (no labels) on the images of ``ssl_images`` (default:
    ``train``), never on ``test``'s; its settings come from ``cfg``."""
    from medfm.tasks.vqa.features import TRAIN_ONLY_ENCODERS, ssl_encoder, train_only_features, zoo_image_features

    tr_imgs = sorted({it.image for it in train})
    te_imgs = sorted({it.image for it in test})
    if encoder == "ssl":
        c = cfg or VQAConfig()
        pre = sorted({it.image for it in (train if ssl_images is None else ssl_images)})
        if {p.name for p in pre} & {p.name for p in te_imgs}:
            raise ConfigError("VQA ssl encoder: the images to pretrain on include evaluated images; pretrain on training images only")
        folder, _ = ssl_encoder(pre, seed, c.ssl_minutes, c.ssl_epochs, c.ssl_image_size, device)
        ftr, whash = zoo_image_features(str(folder), tr_imgs, device=device)
        fte, _ = zoo_image_features(str(folder), te_imgs, device=device)
    elif encoder in TRAIN_ONLY_ENCODERS:
        ftr, fte = train_only_features(encoder, tr_imgs, [tr_imgs, te_imgs], seed)
        whash = None
    else:
        ftr, whash = zoo_image_features(encoder, tr_imgs, device=device)
        fte, _ = zoo_image_features(encoder, te_imgs, device=device)
    rtr = {p: i for i, p in enumerate(tr_imgs)}
    rte = {p: i for i, p in enumerate(te_imgs)}
    return ftr[[rtr[it.image] for it in train]], fte[[rte[it.image] for it in test]], whash


def _accuracy(items: Sequence[VQAItem], preds: list[str], kind: str) -> float:
    s = score_items(items, preds)
    mask = s["closed"] if kind == "CLOSED" else ~s["closed"]
    return float(s["correct"][mask].mean()) if mask.any() else float("nan")


Heads = dict[str, DiscriminativeConfig]


def select_settings(train: Sequence[VQAItem], cfg: VQAConfig) -> tuple[Heads, Heads, dict[str, float]]:
    """(question-only, image) settings per answer type, each with the best mean accuracy of its
    answer type over ``val_splits`` image-disjoint validation splits of the training images
    (ties -> the earlier setting). The test items are never seen here."""
    base = DiscriminativeConfig(image_encoder=None, fusion=cfg.fusion, seed=cfg.seed)
    if not cfg.select_on_val:
        img = dataclasses.replace(base, image_encoder=cfg.image_encoder)
        return dict.fromkeys(KINDS, base), dict.fromkeys(KINDS, img), {}
    splits = [image_disjoint_split(list(train), cfg.val_fraction, cfg.seed + 1 + k) for k in range(cfg.val_splits)]
    scores: dict[str, float] = {}

    def best_of(grid: Sequence[dict[str, Any]], start: DiscriminativeConfig, kind: str, tag: str, feats: list | None) -> DiscriminativeConfig:
        best, best_acc = start, -1.0
        for values in grid:
            if kind != "CLOSED" and values.get("knn_weight", 0) > 0:
                continue  # the kernel vote only decides closed yes / no answers
            cand = dataclasses.replace(start, **values)
            accs = [
                _accuracy(va, fit_predict(tr, va, cand, None if feats is None else feats[k], kinds=(kind,)), kind)
                for k, (tr, va) in enumerate(splits)
            ]
            acc = float(np.nanmean(accs))
            scores[f"{tag} {kind.lower()} {values}"] = round(acc, 4)
            if acc > best_acc:
                best, best_acc = cand, acc
        return best

    q_best = {kind: best_of(QUESTION_GRID[kind], base, kind, "question_only", None) for kind in KINDS}
    if not cfg.image_encoder:
        return q_best, q_best, scores
    feats = []
    for tr, va in splits:
        # "ssl": one pretraining per validation split, on its training images only
        ftr, fva, _ = image_features(tr, va, str(cfg.image_encoder), cfg.seed, cfg.device, cfg)
        feats.append((ftr, fva))
    i_best = {
        kind: best_of(IMAGE_GRID, dataclasses.replace(q_best[kind], image_encoder=cfg.image_encoder), kind, "image", feats)
        for kind in KINDS
    }
    return q_best, i_best, scores


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
    q_cfg, chosen, val_scores = select_settings(train, cfg)
    heads = lambda h: {k.lower(): v for k, v in h.items()}  # noqa: E731
    qname = "minilm-l6-v2" + ("+char-tfidf" if any(c.question_encoder != "minilm" for c in q_cfg.values()) else "")
    record("question_only", qname, fit_predict_heads(train, test, q_cfg), t0, heads(q_cfg), validation_accuracy=val_scores)
    if cfg.image_encoder:
        t0 = time.perf_counter()
        ftr, fte, whash = image_features(train, test, cfg.image_encoder, cfg.seed, cfg.device, cfg)
        preds = fit_predict_heads(train, test, chosen, (ftr, fte))
        extra: dict[str, Any] = {"validation_accuracy": val_scores}
        if cfg.image_encoder == "ssl":
            from medfm.tasks.vqa.features import ssl_encoder

            extra["ssl_pretraining"] = ssl_encoder(sorted({it.image for it in train}), cfg.seed, cfg.ssl_minutes, cfg.ssl_epochs, cfg.ssl_image_size, cfg.device)[1]
        record("discriminative", f"{qname}+{cfg.image_encoder}", preds, t0, heads(chosen), whash, **extra)
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
