"""Zero-shot: prompt-ensemble logic on a hand-made adapter, end to end on the zoo's tiny CLIPs."""

from __future__ import annotations

import numpy as np
import pytest

from medfm.errors import ConfigError
from medfm.metrics.classification import point_metric
from medfm.models.base import ModelAdapter
from medfm.models.card import ModelCard
from medfm.tasks.classification import PROTOCOLS, ImageSplits
from medfm.tasks.classification.zero_shot import MEDICAL_TEMPLATES, ZeroShotConfig


class _BrightnessCLIP(ModelAdapter):
    """Text "bright" / "dark" -> fixed directions; images -> (1 - mean, mean) of their intensity."""

    def __init__(self, logit_scale: float | None = None, logit_bias: float | None = None) -> None:
        super().__init__(ModelCard(id="fake/brightness", backend="fake", source=None, license="none",
                                   capabilities=frozenset({"image_encoder", "text_encoder"}),
                                   prompt_templates=("{} picture",)))
        self.logit_scale = logit_scale
        self.logit_bias = logit_bias
        self.prompts: list[str] = []

    def preprocess(self, images):
        import torch

        return torch.tensor(np.stack([np.asarray(im, dtype=np.float32).mean() / 255.0 for im in images]))

    def encode_image(self, batch):
        import torch

        return torch.stack([1 - batch, batch], dim=1)

    def encode_text(self, texts):
        import torch

        self.prompts += list(texts)
        rng = np.random.default_rng(len(self.prompts))
        rows = [[0.0, 1.0] if "bright" in t and "no bright" not in t else [1.0, 0.0] for t in texts]
        return torch.tensor(np.asarray(rows) * rng.uniform(0.5, 2.0, size=(len(texts), 1)), dtype=torch.float32)


def _images(seed: int = 0) -> ImageSplits:
    rng = np.random.default_rng(seed)
    parts = []
    for n in (4, 20, 30):
        y = np.arange(n) % 2
        x = (rng.integers(0, 120, size=(n, 1, 6, 6)) + 100 * y[:, None, None, None]).astype(np.uint8)
        parts += [x, y]
    return ImageSplits(*parts, label_names=("dark", "bright"), task="binary")


def test_prompt_ensemble_ranks_by_the_text_directions() -> None:
    model = _BrightnessCLIP(logit_scale=10.0)
    data = _images()
    pred = PROTOCOLS.get("zero_shot").run(model, data, ZeroShotConfig(), seed=0)
    assert pred.info["trained"] is False and pred.info["activation"] == "softmax"
    templates = ("{} picture",) + MEDICAL_TEMPLATES
    assert pred.info["n_templates"] == len(templates)
    assert {p for p in model.prompts} == {t.format(c) for t in templates for c in ("dark", "bright")}
    np.testing.assert_allclose(pred.test_scores.sum(1), 1.0, atol=1e-9)
    assert point_metric("auroc", data.test_y, pred.test_scores, "binary") == 1.0
    # softmax of 10 * cosine: with unit directions, p(bright) = sigmoid(10 * (cos_b - cos_d))
    img = np.stack([1 - data.test_x.mean((1, 2, 3)) / 255, data.test_x.mean((1, 2, 3)) / 255], 1)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    expected = 1 / (1 + np.exp(-10 * (img[:, 1] - img[:, 0])))
    np.testing.assert_allclose(pred.test_scores[:, 1], expected, atol=1e-5)


def test_sigmoid_models_and_custom_class_phrases() -> None:
    model = _BrightnessCLIP(logit_scale=5.0, logit_bias=-2.0)
    data = _images(1)
    cfg = ZeroShotConfig(templates=("a {}",), class_names={"bright": ["bright", "very bright"]})
    pred = PROTOCOLS.get("zero_shot").run(model, data, cfg, seed=0)
    assert pred.info["activation"] == "sigmoid"
    assert set(model.prompts) == {"a dark", "a bright", "a very bright"}
    np.testing.assert_allclose(pred.test_scores.sum(1), 1.0, atol=1e-9)
    assert point_metric("auroc", data.test_y, pred.test_scores, "binary") == 1.0


def test_bad_configurations() -> None:
    model = _BrightnessCLIP()
    with pytest.raises(ConfigError, match="shots must be None"):
        PROTOCOLS.get("zero_shot").run(model, _images(), ZeroShotConfig(), seed=0, shots=4)
    with pytest.raises(ConfigError, match="not label names"):
        PROTOCOLS.get("zero_shot").run(model, _images(), ZeroShotConfig(class_names={"grey": ["g"]}), seed=0)
    with pytest.raises(ConfigError, match="needs a"):
        ZeroShotConfig(templates=("no placeholder",))


@pytest.mark.parametrize(
    "model_id,activation",
    [("test/clip-tiny", "softmax"), ("test/siglip-tiny", "sigmoid"), ("test/open-clip-tiny", "softmax")],
)
def test_end_to_end_with_tiny_clip(model_id: str, activation: str, make_images) -> None:
    from medfm.models import create_model

    model = create_model(model_id, device="cpu")
    data = make_images(n=(4, 6, 10))
    pred = PROTOCOLS.get("zero_shot").run(model, data, ZeroShotConfig(), seed=0)
    assert pred.test_scores.shape == (10, 2) and pred.val_scores.shape == (6, 2)
    assert np.isfinite(pred.test_scores).all()
    np.testing.assert_allclose(pred.test_scores.sum(1), 1.0, atol=1e-6)
    assert pred.info["activation"] == activation
    assert pred.info["logit_scale"] == model.logit_scale
    again = PROTOCOLS.get("zero_shot").run(model, data, ZeroShotConfig(), seed=0)
    np.testing.assert_allclose(pred.test_scores, again.test_scores)


def test_multilabel_uses_negated_prompts(make_images) -> None:
    from medfm.models import create_model

    model = create_model("test/clip-tiny", device="cpu")
    b = make_images(n=(4, 6, 8))
    y = np.stack([b.test_y, 1 - b.test_y], 1)
    yv = np.stack([b.val_y, 1 - b.val_y], 1)
    yt = np.stack([b.train_y, 1 - b.train_y], 1)
    data = ImageSplits(b.train_x, yt, b.val_x, yv, b.test_x, y, ("lesion", "normal"), "multilabel")
    pred = PROTOCOLS.get("zero_shot").run(model, data, ZeroShotConfig(templates=("{}",)), seed=0)
    assert pred.test_scores.shape == (8, 2)
    assert ((pred.test_scores > 0) & (pred.test_scores < 1)).all()


def test_model_without_text_tower_is_refused(make_images) -> None:
    from medfm.models import create_model

    model = create_model("test/vit-tiny-timm", device="cpu")
    with pytest.raises(ConfigError, match="no text_encoder"):
        PROTOCOLS.get("zero_shot").run(model, make_images(n=(2, 2, 2)), ZeroShotConfig(), seed=0)
