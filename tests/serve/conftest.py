"""A tiny random SAM whose decoder gives masks that depend on the prompt, and test images."""

from __future__ import annotations

import io

import numpy as np
import pytest


@pytest.fixture()
def tiny_sam():
    """``test/sam-tiny`` with a decoder whose masks depend on the prompt (``tests._sam``)."""
    from medfm.models import create_model
    from tests._sam import redraw_decoder

    return redraw_decoder(create_model("test/sam-tiny", device="cpu", precision="fp32"))


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
