"""Discriminative VQA baseline: question embedding (+ image features) -> answer classifier.

Answers are classes seen in training (normalised strings); closed and open questions get
separate classifiers, chosen by the dataset's ``answer_type`` flag (given at test time, as in
the MEVF protocol). Fusion ``linear``: logistic regression on [question, image] features;
``mlp``: one hidden layer (sklearn ``MLPClassifier``) on the same features, which can model
question x image interactions; ``attributes`` adds question-image agreement features: image
attribute classifiers (organ from the data, modality/plane mined from training answers) are
fitted on the training images and their probabilities for the values a question names become
features (scaled by ``attribute_weight``; ``image_weight`` 0 keeps only these, without the raw
image features). ``knn_weight`` > 0 adds a question x image kernel vote to the closed head's
yes/no decision: training questions weigh in by exp((cos_q - 1) / knn_tq) * exp((cos_img - 1) /
knn_ti), so answers to similar questions about similar-looking training images count most
(a non-parametric question-image interaction); the smoothed log-odds of their yes / no
answers, times ``knn_weight``, is added to the classifier's log-odds. ``question_encoder``
("minilm" or "minilm+tfidf") is the question representation shared by all methods. Every
parameter is fitted on the training items only.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medfm.data.vqa import VQAItem
from medfm.errors import ConfigError, InputError
from medfm.metrics.text import normalize_answer

FUSIONS = ("linear", "mlp")

# attribute group -> value -> question words that name it (lower-case, whole words)
ATTRIBUTES: dict[str, dict[str, tuple[str, ...]]] = {
    "modality": {
        "ct": ("ct", "cat scan", "computed tomography"),
        "mri": ("mri", "mr", "t1", "t2", "flair", "magnetic resonance", "dwi", "adc"),
        "xray": ("x-ray", "xray", "x ray", "radiograph", "film", "plain film", "cxr"),
    },
    "plane": {
        "axial": ("axial", "transverse"),
        "coronal": ("coronal",),
        "sagittal": ("sagittal",),
        "pa": ("pa", "posteroanterior", "ap", "anteroposterior", "frontal"),
    },
    "organ": {
        "HEAD": ("brain", "head", "skull", "cranial", "cerebral"),
        "CHEST": ("chest", "lung", "lungs", "thorax", "heart", "thoracic"),
        "ABD": ("abdomen", "abdominal", "liver", "kidney", "kidneys", "bowel", "pancreas", "spleen"),
    },
}


@dataclass(frozen=True)
class DiscriminativeConfig:
    """Settings of the discriminative baseline (choose them on a validation split of training images)."""

    image_encoder: str | None = "pixels-pca+stats"
    fusion: str = "linear"
    question_encoder: str = "minilm"
    tfidf_weight: float = 1.0
    attributes: bool = True
    image_weight: float = 0.1  # scale of standardised image features beside unit-norm question embeddings
    attribute_weight: float = 1.0  # scale of the question-image attribute agreement features
    attribute_probs: bool = False  # also every attribute probability (answers "what plane / modality / organ?")
    pca_components: int = 32
    C: float = 1.0
    hidden: int = 128
    alpha: float = 0.1
    max_iter: int = 300
    knn_weight: float = 0.0  # 0: no question x image kernel vote
    knn_tq: float = 0.1  # question-similarity temperature of the vote
    knn_ti: float = 0.4  # image-similarity temperature of the vote
    seed: int = 0

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ConfigError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")


def _mentions(question: str) -> dict[tuple[str, str], bool]:
    q = " " + " ".join(re.findall(r"[a-z0-9\-]+", question.lower())) + " "
    return {(g, v): any(f" {w} " in q for w in words) for g, vals in ATTRIBUTES.items() for v, words in vals.items()}


def image_attribute_labels(items: Sequence[VQAItem]) -> dict[str, dict[str, str]]:
    """Per training image, attribute values mined from its questions and answers.

    organ: the record's ``organ`` field; modality / plane: an open answer naming one value,
    or a closed question naming one value answered "yes".
    """
    labels: dict[str, dict[str, str]] = {}
    for it in items:
        lab = labels.setdefault(it.image_name, {})
        if it.organ in ATTRIBUTES["organ"]:
            lab["organ"] = it.organ
        for group in ("modality", "plane"):
            named = [v for (g, v), hit in _mentions(it.answer).items() if g == group and hit]
            if it.answer_type == "OPEN" and len(named) == 1:
                lab[group] = named[0]
            asked = [v for (g, v), hit in _mentions(it.question).items() if g == group and hit]
            if it.answer_type == "CLOSED" and len(asked) == 1 and normalize_answer(it.answer) == "yes":
                lab[group] = asked[0]
    return labels


class AttributeModel:
    """Image attribute classifiers (logistic regression on image features) -> agreement features."""

    def __init__(self, C: float = 1.0) -> None:
        self.C = C
        self.models: dict[str, Any] = {}

    def fit(self, names: list[str], feats: np.ndarray, labels: dict[str, dict[str, str]]) -> AttributeModel:
        from sklearn.linear_model import LogisticRegression

        for group in ATTRIBUTES:
            idx = [i for i, n in enumerate(names) if group in labels.get(n, {})]
            y = [labels[names[i]][group] for i in idx]
            if len(set(y)) >= 2:
                self.models[group] = LogisticRegression(C=self.C, max_iter=2000).fit(feats[idx], y)
        return self

    def features(self, questions: list[str], feats: np.ndarray, probs_too: bool = False) -> np.ndarray:
        """(N, 2 * groups): [P(named value | image), question names a value] per group; with
        ``probs_too`` also P(value | image) for every value of every group (0 without a model)."""
        cols = []
        if probs_too:
            for group, values in ATTRIBUTES.items():
                model = self.models.get(group)
                for v in values:
                    if model is not None and v in list(model.classes_):
                        cols.append(model.predict_proba(feats)[:, list(model.classes_).index(v)])
                    else:
                        cols.append(np.zeros(len(questions)))
        mentions = [_mentions(q) for q in questions]
        for group, values in ATTRIBUTES.items():
            model = self.models.get(group)
            probs = model.predict_proba(feats) if model is not None else None
            classes = list(model.classes_) if model is not None else []
            match = np.zeros(len(questions))
            named = np.zeros(len(questions))
            for i, m in enumerate(mentions):
                vals = [v for v in values if m[(group, v)]]
                if vals:
                    named[i] = 1.0
                    if probs is not None:
                        match[i] = sum(probs[i, classes.index(v)] for v in vals if v in classes)
            cols += [match, named]
        return np.stack(cols, axis=1).astype(np.float32)


def _classifier(cfg: DiscriminativeConfig, kind: str) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    # open answers: hundreds of classes with a few examples each -> the linear model only
    if cfg.fusion == "mlp" and kind == "CLOSED":
        return MLPClassifier((cfg.hidden,), alpha=cfg.alpha, max_iter=cfg.max_iter, random_state=cfg.seed)
    return LogisticRegression(C=cfg.C, max_iter=2000)


def kernel_vote(
    q_train: np.ndarray, img_train: np.ndarray, y_train: np.ndarray, q_test: np.ndarray, img_test: np.ndarray, tq: float, ti: float
) -> np.ndarray:
    """Smoothed log-odds log((w.yes + 0.5) / (w.no + 0.5)) of training yes / no answers per test
    row, weights exp((cos_q - 1) / tq) * exp((cos_img - 1) / ti). Image features are
    standardised with training statistics, then L2-normalised; question rows must be unit-norm."""
    mu, sd = img_train.mean(0), img_train.std(0) + 1e-6

    def unit(a: np.ndarray) -> np.ndarray:
        z = (a - mu) / sd
        return z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-9)

    k = np.exp((q_test @ q_train.T - 1.0) / tq) * np.exp((unit(img_test) @ unit(img_train).T - 1.0) / ti)
    yes = (y_train == "yes").astype(float)
    no = (y_train == "no").astype(float)
    return np.log((k @ yes + 0.5) / (k @ no + 0.5))


class ConstantModel:
    """Predicts one answer (a head whose training answers are all the same)."""

    def __init__(self, answer: str) -> None:
        self.answer = answer

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.array([self.answer] * x.shape[0], dtype=object)


def fit_predict(
    train: Sequence[VQAItem],
    test: Sequence[VQAItem],
    cfg: DiscriminativeConfig,
    image_features: tuple[np.ndarray, np.ndarray] | None = None,
    kinds: tuple[str, ...] = ("CLOSED", "OPEN"),
) -> list[str]:
    """Fit on ``train``, answer ``test``. ``image_features`` = (train (N, D), test (M, D)) rows
    aligned with the items (None: question-only). Only the heads in ``kinds`` are fitted; test
    questions of the other answer type get the empty answer (used by the validation search)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from scipy import sparse

    from medfm.tasks.vqa.features import QuestionFeaturizer, encode_questions

    if not train or not test:
        raise InputError("VQA baseline: empty train or test set")
    q_all = encode_questions(sorted({it.question for it in train} | {it.question for it in test}))
    index = {q: i for i, q in enumerate(sorted({it.question for it in train} | {it.question for it in test}))}
    emb_tr = q_all[[index[it.question] for it in train]]
    emb_te = q_all[[index[it.question] for it in test]]
    qf = QuestionFeaturizer(cfg.question_encoder, cfg.tfidf_weight).fit([it.question for it in train])
    xtr = qf.transform([it.question for it in train], emb_tr)
    xte = qf.transform([it.question for it in test], emb_te)
    if image_features is not None:
        itr, ite = image_features
        mu, sd = itr.mean(0), itr.std(0) + 1e-6  # standardised with training statistics
        parts_tr = [xtr] + ([(itr - mu) / sd * cfg.image_weight] if cfg.image_weight > 0 else [])
        parts_te = [xte] + ([(ite - mu) / sd * cfg.image_weight] if cfg.image_weight > 0 else [])
        if cfg.attributes:
            names = [it.image_name for it in train]
            first = {n: i for i, n in reversed(list(enumerate(names)))}
            uniq = sorted(first)
            attr = AttributeModel().fit(uniq, itr[[first[n] for n in uniq]], image_attribute_labels(train))
            parts_tr.append(attr.features([it.question for it in train], itr, cfg.attribute_probs) * cfg.attribute_weight)
            parts_te.append(attr.features([it.question for it in test], ite, cfg.attribute_probs) * cfg.attribute_weight)
        stack = sparse.hstack if sparse.issparse(xtr) else np.hstack
        xtr, xte = stack(parts_tr), stack(parts_te)
        if sparse.issparse(xtr):
            xtr, xte = sparse.csr_matrix(xtr), sparse.csr_matrix(xte)
    ytr = np.array([normalize_answer(it.answer) for it in train], dtype=object)
    preds = np.full(len(test), "", dtype=object)
    for kind in kinds:
        mtr = np.array([it.answer_type == kind for it in train])
        mte = np.array([it.answer_type == kind for it in test])
        if not mte.any():
            continue
        if not mtr.any():
            raise InputError(f"VQA baseline: no {kind} questions in training to learn {kind} answers from")
        classes = Counter(ytr[mtr])
        if len(classes) == 1:
            model: Any = ConstantModel(next(iter(classes)))
        else:
            model = _classifier(cfg, kind)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(xtr[mtr], ytr[mtr].astype(str))
        preds[mte] = model.predict(xte[mte])
        classes_ = list(getattr(model, "classes_", []))
        if kind == "CLOSED" and image_features is not None and cfg.knn_weight > 0 and {"yes", "no"} <= set(classes_):
            prob = model.predict_proba(xte[mte])
            logit = np.log(prob[:, classes_.index("yes")] + 1e-9) - np.log(prob[:, classes_.index("no")] + 1e-9)
            vote = kernel_vote(emb_tr[mtr], image_features[0][mtr], ytr[mtr], emb_te[mte], image_features[1][mte], cfg.knn_tq, cfg.knn_ti)
            yes_no = np.isin(preds[mte], ["yes", "no"])  # the kernel only decides between yes and no
            preds[mte] = np.where(yes_no, np.where(logit + cfg.knn_weight * vote > 0, "yes", "no"), preds[mte])
    return [str(p) for p in preds]


def fit_predict_heads(
    train: Sequence[VQAItem],
    test: Sequence[VQAItem],
    cfgs: dict[str, DiscriminativeConfig],
    image_features: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[str]:
    """Like :func:`fit_predict` with its own settings per answer type (``{"CLOSED": .., "OPEN": ..}``);
    a head whose settings have no ``image_encoder`` ignores ``image_features``."""
    out = [""] * len(test)
    for kind, cfg in cfgs.items():
        preds = fit_predict(train, test, cfg, image_features if cfg.image_encoder else None, kinds=(kind,))
        for i, it in enumerate(test):
            if it.answer_type == kind:
                out[i] = preds[i]
    return out


def majority_answers(train: Sequence[VQAItem], test: Sequence[VQAItem]) -> list[str]:
    """Most frequent training answer per answer type (the majority baseline)."""
    best = {}
    for kind in ("CLOSED", "OPEN"):
        c = Counter(normalize_answer(it.answer) for it in train if it.answer_type == kind)
        best[kind] = c.most_common(1)[0][0] if c else ""
    return [best[it.answer_type] for it in test]
