"""A tiny random SAM whose decoder gives masks that depend on the prompt, and test images."""

from __future__ import annotations

import io

import numpy as np
import pytest


@pytest.fixture()
def tiny_sam():
    """``test/sam-tiny`` with prompt encoder and decoder weights redrawn at a useful scale (the
    card's init gives logits ~1e-5 that hardly depend on the prompt)."""
    import torch

    from medfm.models import create_model

    seg = create_model("test/sam-tiny", device="cpu", precision="fp32")
    g = torch.Generator().manual_seed(0)
    params = [*seg.model.mask_decoder.named_parameters(), *seg.model.prompt_encoder.named_parameters()]
    with torch.no_grad():
        for name, prm in params:
            if "layer_norm" not in name:
                std = 0.5 / max(1, prm.shape[-1]) ** 0.5 if prm.ndim > 1 else 0.1
                prm.copy_(torch.randn(prm.shape, generator=g) * std)
    return seg


def png_bytes(seed: int = 0, shape: tuple[int, int] = (48, 64)) -> bytes:
    """A grey PNG: noise with a bright rectangle (different content per seed)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = (rng.random(shape) * 60).astype(np.uint8)
    arr[10 + seed : 30, 15:45] += 150
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))
