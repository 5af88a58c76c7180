"""Text-generation metrics: VQA answer matching, BLEU, ROUGE-L, METEOR, CIDEr, clinical efficacy.

Pure functions over lists of predicted and reference strings (one reference per item).
Corpus metrics wrap the MS-COCO caption evaluation code (``pycocoevalcap``) so numbers are
comparable with report-generation papers; text is lower-cased and split into word tokens by
:func:`tokenize` (a regex, not the Java PTB tokenizer, so no Java is needed except for METEOR).
METEOR: ``pycocoevalcap``'s METEOR 1.5 (Java, ~30 s start-up) when ``java`` is on the PATH;
otherwise nltk's METEOR *without* WordNet synonyms (exact + stem matches only; reported under
its own name ``meteor_nltk``). Every metric here is higher-is-better.

BERTScore: torchmetrics' implementation (``torchmetrics.functional.text.bert.bert_score``) with a
model the user names (a local folder or a hub id already in the local cache); nothing is
downloaded, and :func:`bertscore_unavailable` says why a model cannot be used so callers can skip
the metric with that reason.

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
# metric name -> True when higher is better: every text metric here, and the VQA and report
# metrics the tasks build from them (``medfm.tasks.vqa.evaluate``, ``medfm.tasks.report_gen``)
HIGHER_IS_BETTER: dict[str, bool | None] = dict.fromkeys((
    "exact_match", "token_f1", "accuracy", "closed_accuracy", "open_accuracy", "open_token_f1", "open_bleu1",
    "bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider", "meteor", "meteor_nltk",
    "bertscore_precision", "bertscore_recall", "bertscore_f1",
    "ce_precision", "ce_recall", "ce_f1", "ce_macro_f1",
), True)


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


# -- BERTScore ------------------------------------------------------------------------------
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spm.model", "sentencepiece.bpe.model", "tokenizer_config.json")


def resolve_bertscore_model(model: str) -> tuple[str | None, str | None]:
    """(local folder, None) for a usable BERTScore model, else (None, reason). ``model`` is a
    folder (config, tokenizer and weights files) or a hub id looked up in the local cache only."""
    from pathlib import Path

    folder = Path(model).expanduser()
    if not folder.is_dir():
        if folder.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1:
            return None, f"BERTScore model folder {model} not found"
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(model, local_files_only=True))
        except Exception as exc:  # not cached, bad id, no hub library: all mean 'absent offline'
            return None, f"BERTScore model {model!r} is not a folder and not in the local hub cache ({type(exc).__name__})"
    missing = [
        what for what, names in (("config.json", ("config.json",)), ("tokenizer files", _TOKENIZER_FILES), ("weights", _WEIGHT_FILES))
        if not any((folder / n).is_file() for n in names)
    ]
    if missing:
        return None, f"BERTScore model folder {folder} lacks {', '.join(missing)}"
    return str(folder), None


def bertscore_unavailable(model: str | None) -> str | None:
    """Why BERTScore cannot run with ``model`` (None when it can)."""
    if not model:
        return "no BERTScore model given"
    try:
        import torchmetrics.functional.text.bert  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        return f"BERTScore needs torchmetrics and transformers ({exc})"
    return resolve_bertscore_model(model)[1]


def bertscore(
    preds: Sequence[str], refs: Sequence[str], model: str, num_layers: int | None = None, device: str | None = None,
    progress: Any = None,
) -> dict[str, np.ndarray]:
    """Per-item BERTScore ``precision`` / ``recall`` / ``f1`` (torchmetrics, no idf, no baseline rescaling).

    ``num_layers``: the hidden layer whose token embeddings are matched (None: the last layer).
    torchmetrics is called one pair at a time: its batched call re-orders the references by
    length and does not undo it correctly (pairs get mismatched, torchmetrics issue #2728).
    An empty text scores 0 (the ``bert_score`` package's convention; torchmetrics gives NaN).
    Raises ConfigError when the model is unusable (see :func:`bertscore_unavailable`).
    """
    preds, refs = _check(preds, refs)
    folder, reason = resolve_bertscore_model(model)
    if folder is None:
        raise ConfigError(str(reason))
    import logging

    import torch
    import transformers
    from torchmetrics.functional.text.bert import bert_score

    logging.getLogger("transformers").setLevel(logging.ERROR)
    tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    net = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    limit = min(512, int(getattr(tok, "model_max_length", 512) or 512))
    # pad only to the longest text here (padding is masked, so the scores are those at 512)
    longest = max(len(tok(t, truncation=True, max_length=limit)["input_ids"]) for t in preds + refs)
    out = {k: np.zeros(len(preds)) for k in ("precision", "recall", "f1")}
    pairs = list(enumerate(zip(preds, refs)))
    with torch.inference_mode():
        for i, (p, r) in progress(pairs, total=len(pairs), desc="bertscore") if progress else pairs:
            res = bert_score([p], [r], model=net, user_tokenizer=tok, num_layers=num_layers, max_length=longest,
                             truncation=True, device=device or "cpu", batch_size=1)
            for k in out:
                out[k][i] = float(torch.as_tensor(res[k]).reshape(-1)[0])
    return {k: np.nan_to_num(v, nan=0.0) for k, v in out.items()}


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
