"""Frozen zoo encoder + light trainable decoder for 2D segmentation.

The encoder (any zoo image encoder: timm ViT/CNN, transformers ViT/DINOv2/CLIP vision, SAM image
encoder) runs frozen on the patch resized to its card's input size; its patch tokens (or feature
map) become a (N, D, h, w) grid that a small convolutional decoder upsamples back to the patch,
joined with a shallow convolution of the patch itself for edges. Only the decoder is trained and
saved; the encoder is rebuilt from the zoo by id when the model is loaded.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from medfm.errors import ConfigError


def _grid(tokens: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(N, T, D) tokens (maybe with class/register tokens first) -> (N, D, h, w) for an input of
    aspect ``hw``: the prefix length is the smallest that leaves a grid of that aspect."""
    n, t, d = tokens.shape
    aspect = hw[0] / hw[1]
    for prefix in range(0, min(t, 9)):
        m = t - prefix
        w = int(round(math.sqrt(m / aspect)))
        if w > 0 and m % w == 0 and abs(m // w / w - aspect) < 1e-6 + 0.5 / w:
            h = m // w
            return tokens[:, prefix:].transpose(1, 2).reshape(n, d, h, w)
    raise ConfigError(f"cannot arrange {t} encoder tokens into a grid of aspect {hw}")


class FrozenEncoderSegmenter(nn.Module):
    """(N, 3, H, W) z-scored patch -> (N, num_classes, H, W) logits; encoder frozen."""

    def __init__(self, encoder_id: str, in_channels: int, num_classes: int, width: int = 64) -> None:
        super().__init__()
        from medfm.models import create_model

        self.encoder_id = encoder_id
        self.adapter = create_model(encoder_id)
        self._features, dim = self._feature_fn(self.adapter)
        for mod in self._frozen_modules():
            for p in mod.parameters():
                p.requires_grad_(False)
        self.size = tuple(self.adapter.card.preprocess.output_size)
        self.proj = nn.Sequential(nn.Conv2d(dim, width, 1), nn.GELU())
        self.up = nn.Sequential(
            nn.Conv2d(width, width // 2, 3, padding=1), nn.GroupNorm(8, width // 2), nn.GELU(),
        )
        self.skip = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1), nn.GELU())
        self.head = nn.Sequential(
            nn.Conv2d(width // 2 + 16, 32, 3, padding=1), nn.GELU(), nn.Conv2d(32, num_classes, 1),
        )

    # -- encoder access ------------------------------------------------------------------
    def _frozen_modules(self) -> list[nn.Module]:
        a = self.adapter
        mods = []
        for name in ("model", "tower"):
            m = getattr(a, name, None)
            if isinstance(m, nn.Module):
                mods.append(m)
        return mods

    @staticmethod
    def _feature_fn(adapter: Any) -> tuple[Any, int]:
        """A function (N, 3, h, w) -> (N, D, h', w') and D, for the adapter's backend."""
        backend = adapter.card.backend
        hw = tuple(adapter.card.preprocess.output_size)
        if backend == "sam":
            model = adapter.model
            return (lambda x: model.get_image_embeddings(x)), int(model.config.vision_config.output_channels)
        tower = adapter.trainable_module()
        if backend == "timm":
            def f(x: torch.Tensor) -> torch.Tensor:
                out = tower.forward_features(x)
                return out if out.ndim == 4 else _grid(out, hw)
            with torch.no_grad():
                d = f(torch.zeros(1, 3, *hw)).shape[1]
            return f, int(d)
        if backend == "hf":
            vision = getattr(tower, "vision_model", None) or getattr(tower, "model", None)
            if vision is None:
                raise ConfigError(f"model '{adapter.card.id}': no vision backbone to take features from")
            def g(x: torch.Tensor) -> torch.Tensor:
                return _grid(vision(pixel_values=x).last_hidden_state, hw)
            with torch.no_grad():
                d = g(torch.zeros(1, 3, *hw)).shape[1]
            return g, int(d)
        raise ConfigError(f"model '{adapter.card.id}' (backend {backend}) has no feature map for a decoder; "
                          "use a timm, transformers or SAM encoder")

    # -- nn.Module -----------------------------------------------------------------------
    def train(self, mode: bool = True) -> FrozenEncoderSegmenter:
        super().train(mode)
        for m in self._frozen_modules():
            m.eval()  # the encoder stays in inference mode (no dropout / BN updates)
        return self

    def state_dict_to_save(self) -> dict[str, torch.Tensor]:
        """Decoder weights only (the encoder comes back from the zoo by id)."""
        keep = ("proj.", "up.", "skip.", "head.")
        return {k: v for k, v in self.state_dict().items() if k.startswith(keep)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        h, w = x.shape[-2:]
        xe = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        with torch.no_grad():
            feats = self._features(xe)
        feats = feats.to(x.dtype) if feats.dtype != x.dtype else feats
        y = self.proj(feats.detach())
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        y = self.up(y)
        y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        return self.head(torch.cat([y, self.skip(x)], dim=1))
