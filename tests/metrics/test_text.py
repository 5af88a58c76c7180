"""Text metrics against reference implementations (nltk, pycocoevalcap) and hand-computed values."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from medfm.errors import InputError
from medfm.metrics import text

PREDS = ["heart size is normal", "there is no pneumothorax", "small left pleural effusion."]
REFS = ["The heart is normal in size.", "No pleural effusion or pneumothorax.", "Small left pleural effusion is seen"]


def test_answer_normalisation_and_token_f1() -> None:
    assert text.normalize_answer("  The Left-Lung! ") == "left lung"
    assert text.exact_match("Yes.", "yes") == 1.0 and text.exact_match("no", "yes") == 0.0
    # SQuAD-style: 2 shared tokens, precision 2/3, recall 2/2 -> F1 0.8
    assert text.token_f1("right lower lobe", "lower lobe") == pytest.approx(0.8)
    assert text.token_f1("", "") == 1.0 and text.token_f1("x", "") == 0.0


def test_bleu_matches_nltk_corpus_bleu() -> None:
    from nltk.translate.bleu_score import corpus_bleu

    ours = text.bleu(PREDS, REFS)
    hyp = [text.tokenize(p) for p in PREDS]
    ref = [[text.tokenize(r)] for r in REFS]
    for n in (1, 2):
        w = tuple([1.0 / n] * n)
        assert ours[f"bleu{n}"] == pytest.approx(corpus_bleu(ref, hyp, weights=w), abs=1e-6)
    assert text.bleu(REFS, REFS)["bleu4"] == pytest.approx(1.0, abs=1e-6)


def test_rouge_l_hand_value_and_reference() -> None:
    from pycocoevalcap.rouge.rouge import Rouge

    mean, per = text.rouge_l(PREDS, REFS)
    # item 0: LCS("heart size is normal", "the heart is normal in size") = 3; P=3/4, R=3/6, beta=1.2
    p, r, b2 = 0.75, 0.5, 1.2**2
    assert per[0] == pytest.approx((1 + b2) * p * r / (r + b2 * p))
    gts = {i: [" ".join(text.tokenize(s))] for i, s in enumerate(REFS)}
    res = {i: [" ".join(text.tokenize(s))] for i, s in enumerate(PREDS)}
    assert mean == pytest.approx(Rouge().compute_score(gts, res)[0])


def test_cider_reference_and_ordering() -> None:
    from pycocoevalcap.cider.cider import Cider

    mean, per = text.cider(PREDS, REFS)
    gts = {i: [" ".join(text.tokenize(s))] for i, s in enumerate(REFS)}
    res = {i: [" ".join(text.tokenize(s))] for i, s in enumerate(PREDS)}
    assert mean == pytest.approx(Cider().compute_score(gts, res)[0])
    assert per[2] > per[0]  # the near-copy scores above the paraphrase
    assert text.cider(REFS, REFS)[0] > mean


def test_meteor_nltk_without_wordnet() -> None:
    name, mean, per = text.meteor(REFS, REFS, backend="nltk")
    assert name == "meteor_nltk" and np.all(per > 0.95)
    _, m2, _ = text.meteor(PREDS, REFS, backend="nltk")
    assert 0 < m2 < mean


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR 1.5 needs Java")
def test_meteor_java_matches_pycocoevalcap() -> None:
    # reference numbers: pycocoevalcap 1.2 Meteor().compute_score run directly on these two
    # tokenised pairs (one JVM start costs ~30 s here, so the library is not started twice)
    name, mean, per = text.meteor(PREDS[:2], REFS[:2], backend="java")
    assert name == "meteor"
    assert per == pytest.approx([0.37055341301116146, 0.15609756097560978], abs=1e-6)
    assert mean == pytest.approx(0.26882838115616997, abs=1e-6)


def test_finding_labeller_and_clinical_efficacy() -> None:
    lab = text.label_findings("No pneumothorax. Small left pleural effusion. Heart size is normal.")
    assert lab["pleural_effusion"] == 1 and lab["pneumothorax"] == 0 and lab["cardiomegaly"] == 0
    assert text.label_findings("Cardiomegaly without pleural effusion.")["pleural_effusion"] == 0
    ce = text.clinical_efficacy(PREDS, REFS)
    # refs positive: effusion in item 2 only; preds positive: effusion in item 2 -> perfect
    assert ce["ce_f1"] == pytest.approx(1.0)
    ce2 = text.clinical_efficacy(["cardiomegaly.", "normal"], ["normal heart.", "pneumothorax."])
    assert ce2["ce_precision"] == 0.0 and ce2["ce_recall"] == 0.0


def test_length_mismatch() -> None:
    with pytest.raises(InputError):
        text.bleu(["a"], ["a", "b"])
