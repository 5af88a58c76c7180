"""Text metrics against reference implementations (nltk, pycocoevalcap) and hand-computed values."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from medfm.errors import ConfigError, InputError
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


def make_tiny_bert(folder, words=()) -> str:
    """A randomly initialised 2-layer BERT and a word-level tokenizer built here, saved to ``folder``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted({w for t in (*PREDS, *REFS, *words) for w in text.tokenize(t)})]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    BertModel(cfg).eval().save_pretrained(folder)
    return str(folder)


def test_bertscore_matches_torchmetrics_on_tiny_bert(tmp_path) -> None:
    from torchmetrics.functional.text.bert import bert_score

    folder = make_tiny_bert(tmp_path / "bert")
    assert text.bertscore_unavailable(folder) is None
    ours = text.bertscore(PREDS, REFS, folder, num_layers=1)
    for i, (p, r) in enumerate(zip(PREDS, REFS)):  # the library's own number, pair by pair
        ref = bert_score([p], [r], model_name_or_path=folder, num_layers=1)
        for k in ("precision", "recall", "f1"):
            assert ours[k][i] == pytest.approx(float(ref[k]), rel=1e-5, abs=1e-6)
    assert not np.allclose(ours["f1"], text.bertscore(PREDS, REFS, folder)["f1"])  # the layer is passed on
    same = text.bertscore(REFS, REFS, folder)
    np.testing.assert_allclose(same["f1"], 1.0, atol=1e-5)  # identical texts match token for token
    assert (ours["f1"] < 0.9999).all()
    # batched torchmetrics mismatches pairs when sorting by length is not its own inverse
    # (torchmetrics #2728); ours keeps each pair: an identical pair still scores 1
    preds, refs = [REFS[0], REFS[1], REFS[0]], [REFS[0], REFS[1], REFS[1]]
    f1 = text.bertscore(preds, refs, folder)["f1"]
    assert f1[:2] == pytest.approx([1.0, 1.0], abs=1e-5) and f1[2] < 0.999
    assert text.bertscore(["", PREDS[0]], REFS[:2], folder)["precision"][0] == 0.0  # empty text: 0, not NaN


def test_bertscore_absent_model_has_a_reason(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "not found" in text.bertscore_unavailable(str(tmp_path / "nope"))
    assert "local hub cache" in text.bertscore_unavailable("medfm-test/no-such-bert-model")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    assert "lacks tokenizer files, weights" in text.bertscore_unavailable(str(tmp_path / "half"))
    with pytest.raises(ConfigError, match="not found"):
        text.bertscore(PREDS, REFS, str(tmp_path / "nope"))
