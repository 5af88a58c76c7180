"""Zero-shot classification with an image-text model (CLIP / SigLIP / BiomedCLIP style).

Each class name is put into every prompt template; the L2-normalised text embeddings are
averaged per class (prompt ensemble) and renormalised. Image embeddings come from
``model.preprocess`` + ``model.encode_image``; logits = logit_scale * cosine (+ logit_bias).
Probabilities: softmax over classes, or for SigLIP-like models (a ``logit_bias``) a per-class
sigmoid renormalised over classes for single-label tasks. Multilabel tasks score each label
against a negated prompt ("no {}") by a two-way softmax (sigmoid for SigLIP-like models).
No training labels are used (``info["trained"]`` is False).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medfm.errors import ConfigError
from medfm.tasks.classification.base import Protocol, register_protocol
from medfm.tasks.classification.data import ImageSplits, Predictions

# A small radiology / medical prompt set; "{}" is the class name.
MEDICAL_TEMPLATES: tuple[str, ...] = (
    "{}.",
    "a medical image showing {}.",
    "a radiology image showing {}.",
    "an image of {}.",
    "a photo of {}.",
    "findings consistent with {}.",
)
ACTIVATIONS = ("auto", "softmax", "sigmoid")


@dataclass
class ZeroShotConfig:
    """``templates`` empty -> the model card's ``prompt_templates`` plus ``MEDICAL_TEMPLATES``;
    ``class_names`` maps a label name to the phrase(s) used in prompts (default: the label name);
    ``negative_template`` builds the "absent" phrase for multilabel tasks;
    ``activation`` "auto" = sigmoid when the model has a logit bias (SigLIP), else softmax."""

    templates: tuple[str, ...] = ()
    class_names: dict[str, list[str]] = field(default_factory=dict)
    negative_template: str = "no {}"
    activation: str = "auto"
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"zero_shot: activation must be one of {ACTIVATIONS}, got '{self.activation}'")
        bad = [t for t in self.templates if "{}" not in t]
        if bad:
            raise ConfigError(f"zero_shot: every template needs a '{{}}' for the class name; bad: {bad}")


def templates_for(model: Any, cfg: ZeroShotConfig) -> tuple[str, ...]:
    if cfg.templates:
        return tuple(cfg.templates)
    card_templates = tuple(getattr(model.card, "prompt_templates", ()) or ())
    return tuple(dict.fromkeys(card_templates + MEDICAL_TEMPLATES))


def class_text_embeddings(model: Any, phrases: list[list[str]], templates: tuple[str, ...]) -> Any:
    """(C, D) L2-normalised prompt-ensemble embeddings: for each class, the mean over its
    phrases x templates of normalised text embeddings, renormalised."""
    import torch
    import torch.nn.functional as F

    rows = []
    for names in phrases:
        prompts = [t.format(n) for n in names for t in templates]
        emb = F.normalize(model.encode_text(prompts).float(), dim=-1)
        rows.append(F.normalize(emb.mean(0), dim=-1))
    return torch.stack(rows)


def encode_images(model: Any, images: np.ndarray, batch_size: int) -> Any:
    """(N, D) float32 image embeddings of raw images (N, C, H, W) via the model's preprocess."""
    import torch

    out = [model.encode_image(model.preprocess(list(images[s:s + batch_size]))).float().cpu()
           for s in range(0, len(images), batch_size)]
    return torch.cat(out)


def _use_sigmoid(model: Any, cfg: ZeroShotConfig) -> bool:
    if cfg.activation == "auto":
        return getattr(model, "logit_bias", None) is not None
    return cfg.activation == "sigmoid"


def _logits(model: Any, img: Any, txt: Any) -> Any:
    import torch.nn.functional as F

    sim = F.normalize(img, dim=-1) @ txt.T.cpu()
    scale = getattr(model, "logit_scale", None)
    bias = getattr(model, "logit_bias", None)
    sim = sim * (scale if scale is not None else 100.0)
    return sim + bias if bias is not None else sim


def run(model: Any, data: ImageSplits, cfg: ZeroShotConfig, seed: int = 0, shots: int | None = None) -> Predictions:
    """Zero-shot probabilities for the val and test images (no training data used)."""
    import torch

    t0 = time.perf_counter()
    model.require("text_encoder", "zero-shot classification")
    model.require("image_encoder", "zero-shot classification")
    if shots is not None:
        raise ConfigError(f"zero_shot uses no labelled examples; shots must be None, got {shots}")
    unknown = sorted(set(cfg.class_names) - set(data.label_names))
    if unknown:
        raise ConfigError(f"zero_shot: class_names has keys {unknown} that are not label names {list(data.label_names)}")
    templates = templates_for(model, cfg)
    phrases = [list(cfg.class_names.get(n) or [n]) for n in data.label_names]
    sigmoid = _use_sigmoid(model, cfg)
    with torch.no_grad():
        pos = class_text_embeddings(model, phrases, templates)
        neg = None
        if data.task == "multilabel":
            neg = class_text_embeddings(model, [[cfg.negative_template.format(p) for p in ps] for ps in phrases], templates)

        def probs(images: np.ndarray) -> np.ndarray:
            img = encode_images(model, images, cfg.batch_size)
            lp = _logits(model, img, pos)
            if neg is not None:
                ln = _logits(model, img, neg)
                p = torch.sigmoid(lp) / (torch.sigmoid(lp) + torch.sigmoid(ln)) if sigmoid else torch.sigmoid(lp - ln)
            elif sigmoid:
                s = torch.sigmoid(lp)
                p = s / s.sum(1, keepdim=True).clamp_min(1e-12)
            else:
                p = torch.softmax(lp, dim=1)
            return p.double().numpy()

        val_scores = probs(data.val_x)
        test_scores = probs(data.test_x)
    info = {
        "trained": False, "model_trained": False, "templates": list(templates), "n_templates": len(templates),
        "activation": "sigmoid" if sigmoid else "softmax", "logit_scale": getattr(model, "logit_scale", None),
        "train_seconds": time.perf_counter() - t0,
    }
    return Predictions(test_scores, data.test_y, val_scores, info)


PROTOCOL = register_protocol(
    Protocol("zero_shot", "model+text", ZeroShotConfig, run, "prompt-ensemble zero-shot with an image-text model")
)
