"""SAM adapter: the cached-embedding decoder path equals transformers' ``SamModel.forward``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medfm.models import create_model
from tests._sam import redraw_decoder


@pytest.fixture(scope="module")
def sam():
    """The tiny random SAM with decoder weights redrawn at a useful scale: the card's init gives
    logits ~1e-5 that hardly depend on the attention blocks, too weak to test the decoder path."""
    seg = redraw_decoder(create_model("test/sam-tiny", device="cpu"))
    rng = np.random.default_rng(0)
    img = (rng.random((3, 40, 50)) * 80).astype(np.float32)
    img[:, 8:30, 12:40] += 150
    seg.set_image(img)
    return seg


def _reference(seg, multimask: bool, **prompt) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        out = seg.model(image_embeddings=seg._embedding, multimask_output=multimask, **prompt)
    return out.pred_masks[0], out.iou_scores[0]


def _grid(seg, xy) -> torch.Tensor:
    return torch.from_numpy(seg._to_grid(np.asarray(xy, np.float32)))[None]


@pytest.mark.parametrize("multimask", [False, True])
@pytest.mark.parametrize("kind", ["box", "two_boxes", "points", "boxes_and_points"])
def test_decoder_matches_transformers_forward(sam, kind: str, multimask: bool) -> None:
    boxes = [[12, 8, 40, 30]] if kind == "box" else [[12, 8, 40, 30], [0, 0, 20, 25]]
    prompt: dict = {}
    if kind != "points":
        prompt["input_boxes"] = _grid(sam, boxes)
    if kind in ("points", "boxes_and_points"):
        prompt["input_points"] = _grid(sam, [[[20, 15], [45, 35]], [[5, 5], [30, 20]]])
        prompt["input_labels"] = torch.tensor([[[1, 0], [1, 1]]])
    ref, ref_iou = _reference(sam, multimask, **prompt)
    with torch.inference_mode():
        got, iou = sam._decode(multimask, **prompt)
    assert got.shape == ref.shape and iou.shape == ref_iou.shape
    scale = float(ref.abs().max())
    assert scale > 0.01
    assert float((got - ref).abs().max()) <= 1e-5 * scale  # float rounding only
    assert torch.allclose(iou, ref_iou, rtol=1e-5, atol=1e-7)


def test_predict_masks_match_reference_postprocessing(sam) -> None:
    """Default precision (bf16 autocast where the CPU has it) leaves the decoder in fp32: the masks
    are those of transformers' forward + SAM's upsample / crop / resize, pixel for pixel."""
    assert sam.precision == "auto"
    box = np.array([[12, 8, 40, 30]], float)
    masks = sam.predict(boxes=box)
    ref, _ = _reference(sam, False, input_boxes=_grid(sam, box))
    geo = sam._geo
    up = F.interpolate(ref.float(), size=tuple(sam.card.preprocess.output_size), mode="bilinear", align_corners=False)
    up = up[..., : geo.valid_hw[0], : geo.valid_hw[1]]
    full = F.interpolate(up, size=geo.in_hw, mode="bilinear", align_corners=False)[:, 0]
    expect = (full > 0).numpy()
    assert masks.shape == (1, 40, 50) and masks.dtype == bool
    # pixels whose reference logit is within float noise of 0 may flip; none of the others
    decided = np.abs(full.numpy()) > 1e-6 * float(full.abs().max())
    assert np.array_equal(masks[decided], expect[decided])
    assert sam.low_res_logits.shape == (1, *ref.shape[-2:]) and sam.iou_scores.shape == (1,)
