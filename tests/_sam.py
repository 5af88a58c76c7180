"""Test helper: the tiny random SAM with a decoder whose masks depend on the prompt."""

from __future__ import annotations

from typing import Any


def redraw_decoder(seg: Any, seed: int = 0) -> Any:
    """Redraw ``seg``'s prompt encoder and mask decoder weights at a useful scale (the card's init
    gives logits ~1e-5 that hardly depend on the prompt or the attention blocks); returns ``seg``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    params = [*seg.model.mask_decoder.named_parameters(), *seg.model.prompt_encoder.named_parameters()]
    with torch.no_grad():
        for name, prm in params:
            if "layer_norm" not in name:
                std = 0.5 / max(1, prm.shape[-1]) ** 0.5 if prm.ndim > 1 else 0.1
                prm.copy_(torch.randn(prm.shape, generator=g) * std)
    return seg
