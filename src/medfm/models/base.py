"""The small faces every backend adapter exposes. Tasks call these and never branch on backend.

Coordinate frames for promptable segmentation: boxes are (x0, y0, x1, y1) and points (x, y)
in pixel coordinates of the image given to ``set_image`` (x = column, y = row, origin at the
top-left pixel's corner); masks come back at that image's (H, W).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from medfm.errors import ConfigError
from medfm.models.card import ModelCard

if TYPE_CHECKING:
    import numpy as np
    import torch


class ModelAdapter:
    """Base class: holds the card, the torch module and the device; capabilities are opt-in.

    Subclasses implement whichever of ``encode_image`` / ``encode_text`` / ``set_image`` +
    ``predict`` / ``generate`` their card's capabilities declare.
    """

    card: ModelCard
    device: str
    weights_hash: str | None = None

    def __init__(self, card: ModelCard, device: str = "cpu") -> None:
        self.card = card
        self.device = device

    # -- capability checks -------------------------------------------------------------
    def require(self, capability: str, for_what: str) -> None:
        if capability not in self.card.capabilities:
            have = ", ".join(sorted(self.card.capabilities)) or "none"
            raise ConfigError(f"model '{self.card.id}' has no {capability} (capabilities: {have}); {for_what} needs one")

    # -- image encoder -----------------------------------------------------------------
    def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        """Arrays (C, H, W) or (H, W) in source intensities -> model-ready batch (N, C, H, W)."""
        raise NotImplementedError

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
    def set_image(self, image: np.ndarray) -> None:
        """Compute and cache the image embedding for (H, W) or (C, H, W) ``image``."""
        self.require("segmenter", "set_image")
        raise NotImplementedError

    def predict(self, boxes: Any = None, points: Any = None, point_labels: Any = None) -> np.ndarray:
        """Masks (K, H, W) bool for K prompts on the image of the last ``set_image``."""
        self.require("segmenter", "predict")
        raise NotImplementedError

    # -- generator ---------------------------------------------------------------------
    def generate(self, prompt: str, images: list[np.ndarray] | None = None, **kwargs: Any) -> str:
        self.require("generator", "generate")
        raise NotImplementedError

    # -- training ----------------------------------------------------------------------
    def trainable_module(self) -> torch.nn.Module:
        """The torch module whose parameters fine-tuning updates (image tower for encoders)."""
        raise NotImplementedError
