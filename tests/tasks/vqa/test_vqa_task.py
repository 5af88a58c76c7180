"""VQA protocol: folder loading, image-disjoint splits, scoring, baselines on data built in the test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medfm.data.vqa import image_disjoint_split, load_vqa_folder
from medfm.errors import ConfigError, InputError
from medfm.models.card import ModelCard
from medfm.models.generators import GeneratorAdapter
from medfm.tasks.vqa import VQAConfig, run_vqa
from medfm.tasks.vqa.discriminative import DiscriminativeConfig, fit_predict, majority_answers
from medfm.tasks.vqa.evaluate import vqa_metrics
from medfm.tasks.vqa.generative import generate_answers, short_answer

QUESTIONS = ["Is there a mass?", "Is a lesion present?", "Is the image abnormal?"]


def make_vqa_folder(root: Path, n_images: int = 24, seed: int = 0) -> Path:
    """Bright-square images answer 'yes' to every question, dark ones 'no'; plus one open question."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    qa, qid = [], 0
    for i in range(n_images):
        bright = i % 2 == 0
        img = rng.normal(50, 8, (32, 32))
        if bright:
            img[6:26, 6:26] += 150
        name = f"img{i:03d}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "images" / name)
        for q in QUESTIONS:
            qid += 1
            qa.append({"qid": qid, "image_name": name, "image_organ": "CHEST", "question": q,
                       "answer": "Yes" if bright else "No", "answer_type": "CLOSED ", "question_type": "PRES",
                       "phrase_type": "freeform", "official_split": "train"})
        qid += 1
        qa.append({"qid": qid, "image_name": name, "image_organ": "CHEST", "question": "What is abnormal?",
                   "answer": "mass" if bright else "nothing", "answer_type": "OPEN", "question_type": "ABN",
                   "phrase_type": "freeform", "official_split": "train"})
    (root / "qa.json").write_text(json.dumps(qa))
    return root


@pytest.fixture(scope="module")
def vqa_items(tmp_path_factory):
    return load_vqa_folder(make_vqa_folder(tmp_path_factory.mktemp("vqa")))


def test_loader_and_split(vqa_items, tmp_path) -> None:
    assert len(vqa_items) == 96 and vqa_items[0].answer_type == "CLOSED"  # trailing space stripped
    tr, te = image_disjoint_split(vqa_items, 0.25, seed=3)
    assert not {i.image_name for i in tr} & {i.image_name for i in te}
    assert len({i.image_name for i in te}) == 6
    assert image_disjoint_split(vqa_items, 0.25, seed=3) == (tr, te)
    bad = tmp_path / "bad"
    (bad / "images").mkdir(parents=True)
    (bad / "qa.json").write_text(json.dumps([{"qid": 1, "image_name": "x.png", "question": "q", "answer": "a", "answer_type": "OPEN"}]))
    with pytest.raises(InputError, match="x.png"):
        load_vqa_folder(bad)


def test_metrics_by_hand(vqa_items) -> None:
    items = vqa_items[:8]  # 2 images: 6 closed + 2 open
    preds = ["yes", "yes", "no", "mass", "yes", "no", "no", "something"]
    m = vqa_metrics(items, preds, n_boot=100)
    # closed truths: yes yes yes | no no no -> preds yes yes no | yes no no -> 4/6 correct
    assert m["closed_accuracy"].value == pytest.approx(4 / 6)
    assert m["open_accuracy"].value == pytest.approx(0.5)
    assert m["closed_accuracy"].ci_low <= m["closed_accuracy"].value <= m["closed_accuracy"].ci_high
    assert "accuracy[qtype=PRES]" in m


def test_image_features_beat_question_only(vqa_items) -> None:
    from medfm.tasks.vqa.run import image_features

    tr, te = image_disjoint_split(vqa_items, 0.25, seed=0)
    closed = np.array([i.answer_type == "CLOSED" for i in te])
    truth = np.array([i.answer.lower() for i in te])
    q_only = np.array(fit_predict(tr, te, DiscriminativeConfig(image_encoder=None, fusion="linear")))
    ftr, fte, _ = image_features(tr, te, "pixels-pca", seed=0)
    with_img = np.array(fit_predict(tr, te, DiscriminativeConfig(fusion="linear", image_weight=1.0), (ftr, fte)))
    acc_q = np.mean(q_only[closed] == truth[closed])
    acc_i = np.mean(with_img[closed] == truth[closed])
    assert acc_i >= 0.9 and acc_i > acc_q
    assert set(majority_answers(tr, te)) <= {"yes", "no", "mass", "nothing"}


class _BrightnessGenerator(GeneratorAdapter):
    """Says 'Yes, ...' for bright images: enough to check the generative plumbing."""

    accepts_images = True

    def __init__(self) -> None:
        super().__init__(ModelCard(id="test/bright", backend="openai_http", source=None, license="n/a",
                                   capabilities=frozenset({"generator"}), config={"prompt_templates": {"vqa": "Q: {question}"}}))
        self.prompts: list[str] = []

    def generate(self, prompt, images=None, **kwargs):
        self.prompts.append(prompt)
        arr = np.asarray(Image.open(images[0]))
        return "Yes, there is.\nMore text" if arr.mean() > 90 else "No."


def test_generative_answers(vqa_items) -> None:
    gen = _BrightnessGenerator()
    items = [i for i in vqa_items if i.answer_type == "CLOSED"][:6]
    preds = generate_answers(gen, items, max_new_tokens=4)
    assert [p for p in preds] == [i.answer.lower() for i in items]
    assert gen.prompts[0] == "Q: Is there a mass?"
    assert short_answer("Axial plane.", closed=False) == "Axial plane"


def test_run_vqa_records(vqa_items) -> None:
    tr, te = image_disjoint_split(vqa_items, 0.25, seed=0)
    recs = run_vqa(tr, te, VQAConfig(n_boot=50, fusion="linear"), dataset="toy")
    assert [r.protocol for r in recs] == ["vqa/majority", "vqa/question_only", "vqa/discriminative"]
    assert recs[2].metrics["closed_accuracy"].value > recs[1].metrics["closed_accuracy"].value
    assert recs[2].extra["validation_accuracy"]
    with pytest.raises(ConfigError, match="image-disjoint"):
        run_vqa(tr, tr[:3], VQAConfig(n_boot=10))


@pytest.mark.slow
def test_real_vqa_rad_loads(shared_data) -> None:
    items = load_vqa_folder(shared_data / "vqa_rad")
    assert len(items) == 2332
    assert sum(i.answer_type == "CLOSED" for i in items) == 1402
    assert len(load_vqa_folder(shared_data / "vqa_rad", split="test")) == 310


def test_attribute_probabilities_answer_what_modality() -> None:
    """With attribute probabilities as features, 'What modality?' is answered from the image."""
    from medfm.tasks.vqa.discriminative import ATTRIBUTES, AttributeModel

    rng = np.random.default_rng(0)
    mods = ["ct", "mri", "xray"] * 10
    feats = np.stack([np.eye(3)[["ct", "mri", "xray"].index(m)] + rng.normal(0, 0.1, 3) for m in mods])
    names = [f"i{i}" for i in range(len(mods))]
    am = AttributeModel().fit(names, feats, {n: {"modality": m} for n, m in zip(names, mods)})
    x = am.features(["Is this a CT?"] * 3, feats[:3], probs_too=True)
    n_values = sum(len(v) for v in ATTRIBUTES.values())
    assert x.shape == (3, n_values + 2 * len(ATTRIBUTES))
    assert x[0, 0] > 0.5 and x[1, 1] > 0.5 and x[2, 2] > 0.5  # P(ct), P(mri), P(xray) of the three images
    match = x[:, n_values]  # P(the named value 'ct')
    assert match[0] > 0.5 > match[1]
    assert x[:, n_values + 1].tolist() == [1.0, 1.0, 1.0]  # the question names a modality


def test_image_stats_encoder(vqa_items) -> None:
    from medfm.tasks.vqa.features import train_only_features

    paths = sorted({i.image for i in vqa_items})
    a, b = train_only_features("pixels-pca+stats", paths[:16], [paths[:16], paths[16:]])
    assert a.shape[0] == 16 and b.shape[0] == len(paths) - 16 and a.shape[1] == b.shape[1]
    stats = train_only_features("stats", paths[:16], [paths[:16]])[0]
    np.testing.assert_allclose(stats.mean(0), 0, atol=1e-4)  # standardised with training statistics
    with pytest.raises(ConfigError, match="train-only"):
        train_only_features("pixels", paths, [paths])


def test_question_featurizer_tfidf_fitted_on_training_questions() -> None:
    from scipy import sparse

    from medfm.tasks.vqa.features import QuestionFeaturizer

    qf = QuestionFeaturizer("minilm+tfidf").fit(["Is there a mass?", "Is/Are there a lesion?", "What is abnormal?"])
    x = qf.transform(["Is there a mass?", "Where is the zebra?"])
    assert sparse.issparse(x) and x.shape[0] == 2 and x.shape[1] == 384 + len(qf.tfidf.vocabulary_)
    assert not any("zeb" in g for g in qf.tfidf.vocabulary_)  # vocabulary from training questions only
    assert QuestionFeaturizer("minilm").fit(["a"]).transform(["a", "b"]).shape == (2, 384)
    with pytest.raises(ConfigError, match="question encoder"):
        QuestionFeaturizer("bow")


def test_tfidf_questions_with_image_features(vqa_items) -> None:
    """The TF-IDF question representation stacks (sparse) with image and attribute features."""
    from medfm.tasks.vqa.run import image_features

    tr, te = image_disjoint_split(vqa_items, 0.25, seed=0)
    ftr, fte, _ = image_features(tr, te, "pixels-pca", seed=0)
    cfg = DiscriminativeConfig(question_encoder="minilm+tfidf", image_weight=1.0)
    preds = np.array(fit_predict(tr, te, cfg, (ftr, fte)))
    closed = np.array([i.answer_type == "CLOSED" for i in te])
    assert np.mean(preds[closed] == np.array([i.answer.lower() for i in te])[closed]) >= 0.9


def test_kernel_vote_by_hand() -> None:
    from medfm.tasks.vqa.discriminative import kernel_vote

    q = np.array([[1.0, 0.0]] * 4)  # one question asked about four images
    img = np.array([[5.0, 0.0], [4.0, 1.0], [0.0, 5.0], [1.0, 4.0]])
    y = np.array(["yes", "yes", "no", "no"], dtype=object)
    vote = kernel_vote(q, img, y, q[:2], np.array([[4.5, 0.5], [0.5, 4.5]]), tq=0.1, ti=0.2)
    assert vote[0] > 1.0 and vote[1] < -1.0  # the answers of the look-alike training images
    far = kernel_vote(q, img, y, np.array([[0.0, 1.0]]), np.array([[4.5, 0.5]]), tq=0.1, ti=0.2)
    assert abs(far[0]) < abs(vote[0])  # an unrelated question gets a weaker vote


def test_knn_vote_carries_the_image(vqa_items) -> None:
    """Without image columns or attributes, only the kernel vote sees the image: it must answer."""
    from medfm.tasks.vqa.run import image_features

    tr, te = image_disjoint_split(vqa_items, 0.25, seed=0)
    ftr, fte, _ = image_features(tr, te, "pixels-pca", seed=0)
    closed = np.array([i.answer_type == "CLOSED" for i in te])
    truth = np.array([i.answer.lower() for i in te])
    base = DiscriminativeConfig(image_weight=0.0, attributes=False)
    without = np.array(fit_predict(tr, te, base, (ftr, fte)))
    with_knn = np.array(fit_predict(tr, te, DiscriminativeConfig(image_weight=0.0, attributes=False, knn_weight=10.0), (ftr, fte)))
    assert np.mean(with_knn[closed] == truth[closed]) >= 0.9 > np.mean(without[closed] == truth[closed])
    assert (with_knn[~closed] == without[~closed]).all()  # open answers are left alone


def test_ssl_encoder_pretrains_on_training_images_only(vqa_items, monkeypatch) -> None:
    import medfm.tasks.pretrain.trainer as trainer
    from medfm.data.vqa import load_image_gray
    from medfm.tasks.vqa.features import _SSL_CACHE
    from medfm.tasks.vqa.run import image_features

    seen: list[np.ndarray] = []
    real = trainer.pretrain

    def spy(images, *args, **kwargs):
        seen.append(images.copy())
        return real(images, *args, **kwargs)

    monkeypatch.setattr(trainer, "pretrain", spy)
    _SSL_CACHE.clear()
    tr, te = image_disjoint_split(vqa_items, 0.25, seed=1)
    cfg = VQAConfig(image_encoder="ssl", ssl_minutes=1.0, ssl_epochs=1, ssl_image_size=16)
    ftr, fte, _ = image_features(tr, te, "ssl", seed=0, device="cpu", cfg=cfg)
    assert ftr.shape[0] == len(tr) and fte.shape[0] == len(te) and ftr.shape[1] == fte.shape[1] == 512
    assert len(seen) == 1
    train_imgs = sorted({i.image for i in tr})
    expected = np.stack([load_image_gray(p, 16) for p in train_imgs])[:, None]
    np.testing.assert_array_equal(seen[0], expected)  # exactly the training images, nothing else
    test_pixels = {load_image_gray(p, 16).tobytes() for p in {i.image for i in te}}
    assert not test_pixels & {a[0].tobytes() for a in seen[0]}
    (_, info), = _SSL_CACHE.values()
    assert info["images"] == [p.name for p in train_imgs] and not set(info["images"]) & {i.image_name for i in te}
    with pytest.raises(ConfigError, match="training images only"):
        image_features(tr, te, "ssl", seed=0, device="cpu", cfg=cfg, ssl_images=list(tr) + list(te))
    _SSL_CACHE.clear()
