"""Text-generation metrics: VQA answer matching, BLEU, ROUGE-L, METEOR, CIDEr, clinical efficacy.

Pure functions over lists of predicted and reference strings (one reference per item).
Corpus metrics wrap the MS-COCO caption evaluation code (``pycocoevalcap``) so numbers are
comparable with report-generation papers; text is lower-cased and split into word tokens by
:func:`tokenize` (a regex, not the Java PTB tokenizer, so no Java is needed except for METEOR).
METEOR: ``pycocoevalcap``'s METEOR 1.5 (Java, ~30 s start-up) when ``java`` is on the PATH;
otherwise nltk's METEOR *without* WordNet synonyms (exact + stem matches only; reported under
its own name ``meteor_nltk``). Every metric here is higher-is-better.

The clinical-efficacy labeller is deliberately simple (keyword lists + negation cues in the
same sentence, before the keyword): a rough stand-in for CheXpert/CheXbert labellers.
"""

from __future__ import annotations

import re
import shutil
import string
from collections.abc import Sequence
from typing import Any

import numpy as np

from medfm.errors import ConfigError, InputError

_ARTICLES = {"a", "an", "the"}
_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
HIGHER_IS_BETTER = True


def _check(preds: Sequence[str], refs: Sequence[str]) -> tuple[list[str], list[str]]:
    if len(preds) != len(refs):
        raise InputError(f"text metrics: {len(preds)} predictions for {len(refs)} references")
    if len(preds) == 0:
        raise InputError("text metrics: no items")
    return [str(p) for p in preds], [str(r) for r in refs]


# -- short answers (VQA) --------------------------------------------------------------------
def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse white space (VQA / SQuAD convention)."""
    text = _PUNCT.sub(" ", str(text).lower())
    return " ".join(w for w in text.split() if w not in _ARTICLES)


def exact_match(pred: str, ref: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(pred) == normalize_answer(ref))


def token_f1(pred: str, ref: str) -> float:
    """Harmonic mean of token precision and recall of normalised answers (SQuAD token F1)."""
    p, r = normalize_answer(pred).split(), normalize_answer(ref).split()
    if not p and not r:
        return 1.0
    if not p or not r:
        return 0.0
    common: dict[str, int] = {}
    rc: dict[str, int] = {}
    for w in r:
        rc[w] = rc.get(w, 0) + 1
    for w in p:
        if rc.get(w, 0) > common.get(w, 0):
            common[w] = common.get(w, 0) + 1
    same = sum(common.values())
    if same == 0:
        return 0.0
    prec, rec = same / len(p), same / len(r)
    return 2 * prec * rec / (prec + rec)


def sentence_bleu(pred: str, ref: str, max_n: int = 1) -> float:
    """Per-item BLEU-``max_n`` of token lists (nltk, smoothing method 1: short answers)."""
    from nltk.translate.bleu_score import SmoothingFunction
    from nltk.translate.bleu_score import sentence_bleu as nltk_bleu

    p, r = tokenize(pred), tokenize(ref)
    if not p or not r:
        return float(p == r)
    weights = tuple([1.0 / max_n] * max_n)
    return float(nltk_bleu([r], p, weights=weights, smoothing_function=SmoothingFunction().method1))


# -- corpus metrics (reports) ---------------------------------------------------------------
def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, inner apostrophes); punctuation dropped."""
    return _TOKEN.findall(str(text).lower())


def _coco_inputs(preds: list[str], refs: list[str]) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    # pycocoevalcap wants {id: [tokenised string]}; an empty prediction becomes one dummy token
    # that matches nothing, so every metric stays defined and scores 0 for it.
    res = {i: [" ".join(tokenize(p)) or "<empty>"] for i, p in enumerate(preds)}
    gts = {i: [" ".join(tokenize(r)) or "<empty>"] for i, r in enumerate(refs)}
    return gts, res


def bleu(preds: Sequence[str], refs: Sequence[str], max_n: int = 4) -> dict[str, float]:
    """Corpus BLEU-1..``max_n`` (``pycocoevalcap`` Bleu, 'closest' reference length)."""
    from pycocoevalcap.bleu.bleu import Bleu

    gts, res = _coco_inputs(*_check(preds, refs))
    scores, _ = Bleu(max_n).compute_score(gts, res, verbose=0)
    return {f"bleu{n + 1}": float(s) for n, s in enumerate(scores)}


def rouge_l(preds: Sequence[str], refs: Sequence[str]) -> tuple[float, np.ndarray]:
    """ROUGE-L F (beta 1.2, ``pycocoevalcap``): (mean, per-item scores)."""
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _coco_inputs(*_check(preds, refs))
    mean, per = Rouge().compute_score(gts, res)
    return float(mean), np.asarray(per, dtype=float)


def cider(preds: Sequence[str], refs: Sequence[str]) -> tuple[float, np.ndarray]:
    """CIDEr-D (``pycocoevalcap`` Cider; document frequencies from these references)."""
    from pycocoevalcap.cider.cider import Cider

    gts, res = _coco_inputs(*_check(preds, refs))
    mean, per = Cider().compute_score(gts, res)
    return float(mean), np.asarray(per, dtype=float)


class _NoWordNet:
    """Stands in for WordNet in nltk's METEOR when its data is absent: no synonym matches."""

    @staticmethod
    def synsets(*args: Any, **kwargs: Any) -> list:
        return []


def meteor_backend(choice: str = "auto") -> str | None:
    """Which METEOR runs: ``java`` (pycocoevalcap 1.5), ``nltk`` (no WordNet) or None (off)."""
    if choice not in ("auto", "java", "nltk", "off"):
        raise ConfigError(f"meteor must be auto, java, nltk or off; got {choice!r}")
    if choice == "off":
        return None
    if choice in ("auto", "java") and shutil.which("java"):
        return "java"
    if choice == "java":
        raise ConfigError("METEOR 1.5 needs Java ('java' is not on the PATH); use meteor='nltk'")
    return "nltk"


def meteor(preds: Sequence[str], refs: Sequence[str], backend: str = "auto") -> tuple[str, float, np.ndarray]:
    """METEOR: (metric name, mean, per-item). Name ``meteor`` (Java 1.5) or ``meteor_nltk``."""
    preds, refs = _check(preds, refs)
    which = meteor_backend(backend)
    if which is None:
        raise ConfigError("METEOR is switched off")
    if which == "java":
        from pycocoevalcap.meteor.meteor import Meteor

        gts, res = _coco_inputs(preds, refs)
        scorer = Meteor()
        try:
            mean, per = scorer.compute_score(gts, res)
        finally:
            proc = scorer.meteor_p  # stop the JVM now rather than at garbage collection
            proc.stdin.close()
            proc.kill()
            proc.wait()
        return "meteor", float(mean), np.asarray(per, dtype=float)
    from nltk.translate.meteor_score import meteor_score

    per = np.array([meteor_score([tokenize(r)], tokenize(p), wordnet=_NoWordNet()) for p, r in zip(preds, refs)], dtype=float)
    return "meteor_nltk", float(per.mean()), per


# -- clinical efficacy ---------------------------------------------------------------------
FINDINGS: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("cardiomegaly", "enlarged heart", "heart is enlarged", "cardiac enlargement", "heart size is enlarged"),
    "pleural_effusion": ("pleural effusion", "effusion"),
    "pneumothorax": ("pneumothorax",),
    "edema": ("edema", "oedema", "vascular congestion"),
    "consolidation": ("consolidation",),
    "pneumonia": ("pneumonia",),
    "atelectasis": ("atelectasis", "atelectatic"),
    "opacity": ("opacity", "opacities", "opacification"),
    "nodule_mass": ("nodule", "mass", "masses", "nodules"),
    "fracture": ("fracture", "fractures"),
    "support_device": ("tube", "catheter", "pacemaker", "line", "wires", "stent"),
}
NEGATIONS = ("no", "not", "without", "negative for", "free of", "resolved", "absence of", "no evidence of", "clear of")
_SENT = re.compile(r"[.;\n]+")


def label_findings(text: str) -> dict[str, int]:
    """Simple labeller: 1 when a finding's keyword occurs in a sentence without a negation cue
    before it in that sentence, 0 otherwise (negated or not mentioned)."""
    labels = dict.fromkeys(FINDINGS, 0)
    for sentence in _SENT.split(str(text).lower()):
        words = " " + " ".join(tokenize(sentence)) + " "
        for name, keys in FINDINGS.items():
            for key in keys:
                at = words.find(" " + key + " ")
                if at < 0:
                    continue
                before = words[:at] + " "
                if not any(" " + neg + " " in before for neg in NEGATIONS):
                    labels[name] = 1
    return labels


def finding_matrix(texts: Sequence[str]) -> np.ndarray:
    """(N, F) 0/1 matrix of :func:`label_findings` over ``FINDINGS`` (in its order)."""
    names = list(FINDINGS)
    return np.array([[label_findings(t)[n] for n in names] for t in texts], dtype=np.int64).reshape(len(texts), len(names))


def efficacy_from_labels(p: np.ndarray, r: np.ndarray) -> dict[str, float]:
    """Clinical-efficacy scores from predicted and reference (N, F) 0/1 finding matrices."""
    tp, fp, fn = (p & r).sum(0), (p & (1 - r)).sum(0), ((1 - p) & r).sum(0)
    prec = tp.sum() / max(tp.sum() + fp.sum(), 1)
    rec = tp.sum() / max(tp.sum() + fn.sum(), 1)
    f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    present = r.sum(0) > 0
    per_f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    macro = float(per_f1[present].mean()) if present.any() else float("nan")
    return {"ce_precision": float(prec), "ce_recall": float(rec), "ce_f1": float(f1), "ce_macro_f1": macro}


def clinical_efficacy(preds: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """Precision / recall / F1 of positive findings (micro over all labels, and macro F1 over
    findings present in the references), from :func:`label_findings` on both sides."""
    preds, refs = _check(preds, refs)
    return efficacy_from_labels(finding_matrix(preds), finding_matrix(refs))
