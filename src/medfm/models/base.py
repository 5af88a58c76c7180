"""The small faces every backend adapter exposes. Tasks call these and never branch on backend.

Coordinate frames for promptable segmentation: boxes are (x0, y0, x1, y1) and points (x, y)
in pixel coordinates of the image given to ``set_image`` (x = column, y = row, origin at the
top-left pixel's corner); masks come back at that image's (H, W).

Embedding conventions: ``encode_image`` / ``encode_text`` return *unnormalised* float32
embeddings (N, D) (what linear probes and kNN want). For image-text similarity L2-normalise
both and multiply by ``logit_scale`` (already exponentiated), adding ``logit_bias`` for
SigLIP-style models (sigmoid, not softmax); ``similarity_logits`` does exactly that.
Precision: forwards run under bf16 autocast when ``medfm._runtime.autocast_dtype(device,
precision)`` says so (``precision`` "auto" | "bf16" | "fp32"); outputs are float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from medfm.errors import ConfigError
from medfm.models.card import ModelCard

if TYPE_CHECKING:
    import numpy as np
    import torch


class Backend(Protocol):
    """What a backend module (``medfm.models.adapters.timm_``, ``...generators.hf_causal``, ...)
    gives the zoo, so that the zoo never branches on backend names.

    ``FOLDER_FILE``: the file every weights folder of this backend holds (None: any weight file).
    ``build``: an adapter from a weights folder or file (both None: the card's random init);
    ``options`` are backend-specific (generators: dtype, device_map, quantization, base_url...).
    ``save``: an adapter's weights into a folder ``build`` reads back. ``save_trained``: a bare
    module from ``trainable_module()`` after fine-tuning (ConfigError where a module lacks its config).
    """

    FOLDER_FILE: str | None

    def build(self, card: ModelCard, folder: Path | None, weights: Path | None, device: str,
              **options: Any) -> ModelAdapter: ...

    def save(self, adapter: ModelAdapter, folder: Path) -> None: ...

    def save_trained(self, module: Any, card: ModelCard, folder: Path) -> None: ...


def cannot_save(card: ModelCard, what: str = "a bare module") -> ConfigError:
    """The error of a backend that cannot write ``what`` for ``card``."""
    return ConfigError(f"save_model: cannot save {what} of {card.backend} model '{card.id}'; pass the adapter "
                       "(a bare module lacks its config), or this backend has no weights to save")


class ModelAdapter:
    """Base class: holds the card, the torch module and the device; capabilities are opt-in.

    Subclasses implement whichever of ``encode_image`` / ``encode_text`` / ``set_image`` +
    ``predict`` / ``generate`` their card's capabilities declare.
    """

    card: ModelCard
    device: str
    weights_hash: str | None = None
    precision: str = "auto"
    #: exponentiated temperature of CLIP-like models (None when the model has none)
    logit_scale: float | None = None
    #: SigLIP's additive bias on the logits (None elsewhere)
    logit_bias: float | None = None
    #: where the weights came from (a folder, a file, or "random-init")
    weights_source: str | None = None
    #: the hub commit of the weights when known (pulled at, or the HF cache snapshot)
    weights_revision: str | None = None
    #: how many times the image encoder ran (segmenters count it so callers can check caching)
    encoder_calls: int = 0
    #: segmenters: predicted IoU (K,) and low-res logits (K, h, w) of the last ``predict``
    iou_scores: np.ndarray | None = None
    low_res_logits: np.ndarray | None = None
    #: generators: whether ``generate`` takes images
    accepts_images: bool = False

    def __init__(self, card: ModelCard, device: str = "cpu") -> None:
        self.card = card
        self.device = device

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.card.id!r}, device={self.device!r}, weights={self.weights_source!r})"

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """``torch.inference_mode`` plus bf16 autocast when ``precision`` / the hardware call for it."""
        import torch

        from medfm._runtime import autocast_dtype

        dtype = autocast_dtype(self.device, self.precision)
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        with torch.inference_mode(), torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
            yield

    def similarity_logits(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """(N, D) image and (M, D) text embeddings -> (N, M) logits: scale * cosine (+ bias)."""
        import torch.nn.functional as F

        logits = F.normalize(image_emb.float(), dim=-1) @ F.normalize(text_emb.float(), dim=-1).T
        logits = logits * (self.logit_scale if self.logit_scale is not None else 1.0)
        return logits + self.logit_bias if self.logit_bias is not None else logits

    # -- capability checks -------------------------------------------------------------
    def require(self, capability: str, for_what: str) -> None:
        if capability not in self.card.capabilities:
            have = ", ".join(sorted(self.card.capabilities)) or "none"
            raise ConfigError(f"model '{self.card.id}' has no {capability} (capabilities: {have}); {for_what} needs one")

    # -- image encoder -----------------------------------------------------------------
    def preprocess(self, images: list[np.ndarray], modality: str | None = None) -> torch.Tensor:
        """Arrays (C, H, W) or (H, W) in source intensities -> model-ready batch (N, C, H, W).

        Derived from ``card.preprocess`` (see ``medfm.models.transforms`` for the exact steps);
        wrong channel counts and 3D volumes raise ``InputError``. ``modality`` "CT" applies the
        card's ``ct_window``. Returned on the CPU.
        """
        from medfm.models.transforms import prepare_batch

        return prepare_batch(images, self.card.preprocess, modality=modality)

    def encode_image(self, batch: torch.Tensor) -> torch.Tensor:
        """Preprocessed batch (N, C, H, W) -> embeddings (N, D)."""
        self.require("image_encoder", "encode_image")
        raise NotImplementedError

    # -- text encoder ------------------------------------------------------------------
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Strings -> embeddings (N, D) in the joint image-text space."""
        self.require("text_encoder", "encode_text")
        raise NotImplementedError

    # -- promptable segmenter ----------------------------------------------------------
    def set_image(self, image: np.ndarray, modality: str | None = None) -> None:
        """Compute and cache the image embedding for (H, W) or (C, H, W) ``image``; ``modality``
        ("CT", ...) lets the card's preprocessing window CT (HU) slices as the model expects."""
        self.require("segmenter", "set_image")
        raise NotImplementedError

    def predict(self, boxes: Any = None, points: Any = None, point_labels: Any = None) -> np.ndarray:
        """Masks (K, H, W) bool for K prompts on the image of the last ``set_image``."""
        self.require("segmenter", "predict")
        raise NotImplementedError

    def image_state(self) -> Any:
        """What ``set_image`` cached (opaque); ``set_image_state`` makes it current again without
        running the image encoder (the viewer keeps one per slice)."""
        self.require("segmenter", "image_state")
        raise NotImplementedError

    def set_image_state(self, state: Any) -> None:
        """Make a state from ``image_state`` the current image for ``predict``."""
        self.require("segmenter", "set_image_state")
        raise NotImplementedError

    # -- generator ---------------------------------------------------------------------
    def generate(self, prompt: str, images: list[np.ndarray] | None = None, **kwargs: Any) -> str:
        self.require("generator", "generate")
        raise NotImplementedError

    # -- training ----------------------------------------------------------------------
    def trainable_module(self) -> torch.nn.Module:
        """The torch module whose parameters fine-tuning updates (image tower for encoders)."""
        raise NotImplementedError

    # -- identity ----------------------------------------------------------------------
    def modules_for_hash(self) -> list[torch.nn.Module]:
        """Modules whose state dicts identify weights that have no file (random inits)."""
        return []

    def provenance(self) -> dict[str, Any]:
        """What results made with this model record about it: id, weights hash, source, commit."""
        return {"model": self.card.id, "weights_hash": self.weights_hash, "weights_source": self.weights_source,
                "weights_revision": self.weights_revision}
