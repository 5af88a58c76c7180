"""Cascade refinement: boxes around the object, crops with padding, pasting back, training crops,
and a refiner trained, saved, chosen (or not) on val and reloaded with the model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medfm.data.card import Sample
from medfm.errors import ConfigError, InputError
from medfm.io.image import Image
from medfm.tasks.segmentation.refine import INFER_MARGIN, MARGIN_RANGE, crop_array, crop_samples, object_box, paste_probabilities


def test_object_box_is_margined_aspect_fixed_and_uses_the_largest_region() -> None:
    m = np.zeros((100, 120), bool)
    m[40:60, 30:70] = True  # 20 x 40 object
    m[5:8, 5:8] = True  # stray blob: ignored
    y0, y1, x0, x1 = object_box(m, 1.5, aspect=1.0)
    assert (y1 - y0, x1 - x0) == (60, 60)  # 1.5 x the longer side, square
    assert (y0 + y1) / 2 == pytest.approx(49.5, abs=0.5) and (x0 + x1) / 2 == pytest.approx(49.5, abs=0.5)
    y0, y1, x0, x1 = object_box(m, 1.0, aspect=0.5, shift=(0.5, 0.0))  # wide box, moved down by half the height
    assert (y1 - y0) * 2 == pytest.approx(x1 - x0, abs=1) and (y0 + y1) / 2 == pytest.approx(59.5, abs=0.5)
    assert object_box(np.zeros((5, 5), bool), 1.3, 1.0) is None
    with pytest.raises(ConfigError, match="2D"):
        object_box(np.ones((2, 3, 3), bool), 1.3, 1.0)


def test_crop_pads_outside_the_image_and_paste_inverts_it() -> None:
    a = np.arange(1, 1 + 2 * 6 * 8, dtype=np.float32).reshape(2, 6, 8)
    box = (-2, 4, 5, 10)  # overhangs the top and the right edge
    c = crop_array(a, box)
    assert c.shape == (2, 6, 5)
    assert np.array_equal(c[:, 2:, :3], a[:, 0:4, 5:8]) and np.all(c[:, :2] == a.min()) and np.all(c[:, :, 3:] == a.min())
    assert np.all(crop_array(a, box, fill=0)[:, :2] == 0)
    prob = np.stack([np.full((6, 8), 0.2), np.full((6, 8), 0.8)]).astype(np.float32)
    crop_prob = np.stack([np.zeros((6, 5)), np.ones((6, 5))]).astype(np.float32)
    out = paste_probabilities(prob, crop_prob, box)
    assert np.all(out[1, 0:4, 5:8] == 1) and np.all(out[0, 0:4, 5:8] == 0)
    outside = np.ones((6, 8), bool)
    outside[0:4, 5:8] = False
    assert np.all(out[0][outside] == 1) and np.all(out[1][outside] == 0)  # one object: nothing outside its box


def test_crop_samples_keep_the_object_inside_with_jittered_margins() -> None:
    img = np.zeros((1, 80, 100), np.float32)
    lab = np.zeros((1, 80, 100), np.uint8)
    lab[0, 30:50, 40:70] = 1
    s = Sample("a", image=Image(img + lab, (0.2, 0.2)), mask=Image(lab, (0.2, 0.2)))
    empty = Sample("b", image=Image(img, (0.2, 0.2)), mask=Image(np.zeros_like(lab), (0.2, 0.2)))
    tr = crop_samples([s, empty], aspect=1.0, per_sample=5, seed=0)
    assert [t.id for t in tr] == [f"a#crop{k}" for k in range(5)]  # the empty case gives no crop
    for t in tr:
        h, w = t.mask.array.shape[-2:]
        assert h == w and MARGIN_RANGE[0] * 30 - 2 <= h <= MARGIN_RANGE[1] * 30 + 2
        assert t.mask.array.sum() == lab.sum()  # the shift never cuts the object
        assert np.array_equal(t.image.array > 0, t.mask.array > 0)
    assert len({t.mask.array.shape for t in tr}) > 1  # margins vary
    (va,) = crop_samples([s], aspect=1.0, per_sample=5, seed=0, jitter=False)
    assert va.mask.array.shape[-1] == round(INFER_MARGIN * 30)


def _square_prob(h: int, w: int, frac: float) -> np.ndarray:
    """(2, h, w) probabilities of a centred square object whose side is ``frac`` of the shorter side."""
    p = np.zeros((2, h, w), np.float32)
    p[0] = 1
    side = max(1, int(round(frac * min(h, w))))
    y0, x0 = (h - side) // 2, (w - side) // 2
    p[:, y0:y0 + side, x0:x0 + side] = np.array([0.0, 1.0], np.float32)[:, None, None]
    return p


@pytest.mark.parametrize("frac, kept_passes", [(0.7, 2), (0.9, 1)])
def test_a_later_pass_that_grows_the_object_is_not_kept(frac: float, kept_passes: int) -> None:
    """A refiner that tightens the object keeps refining; one that fills most of every crop (a leak:
    each wider crop shows more) grows the object each pass, and its second pass is dropped."""
    from types import SimpleNamespace

    from medfm.tasks.segmentation.model import TrainedSegmenter
    from medfm.tasks.segmentation.refine import MAX_PASS_GROWTH

    calls = []

    def refine_crop(crop: np.ndarray, flips) -> np.ndarray:
        calls.append(crop.shape[-2:])
        return _square_prob(*crop.shape[-2:], frac)

    refiner = SimpleNamespace(info=SimpleNamespace(input_size=(32, 32), net=None), frame_probabilities=refine_crop)
    seg = SimpleNamespace(info=SimpleNamespace(refine_margin=INFER_MARGIN, refine_passes=2, tta_flips=()),
                          refiner=refiner, frame_probabilities=lambda a: _square_prob(200, 200, 0.2))
    areas = []
    for passes in (1, 2):
        seg.info.refine_passes = passes
        areas.append(int((TrainedSegmenter.probabilities(seg, np.zeros((1, 200, 200), np.float32)).argmax(0) > 0).sum()))
    assert len(calls) == 3  # both passes ran
    if kept_passes == 2:
        assert areas[1] < areas[0]  # tightened: the second pass is the output
    else:
        assert areas[1] == areas[0] and (0.9 * INFER_MARGIN) ** 2 > MAX_PASS_GROWTH  # grown: the first pass stays


def _blobs(n: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = rng.normal(0, 0.3, (1, 48, 64)).astype(np.float32)
        lab = np.zeros((1, 48, 64), np.uint8)
        yy, xx = np.mgrid[0:48, 0:64]
        cy, cx, r = rng.integers(16, 32), rng.integers(20, 44), rng.integers(5, 12)
        lab[0][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
        img[lab > 0] += 1.5
        out.append(Sample(f"c{i}", image=Image(img, (1.0, 1.0)), mask=Image(lab, (1.0, 1.0))))
    return out


@pytest.mark.slow
def test_train_with_a_refiner_saves_selects_and_reloads(tmp_path) -> None:
    from medfm.tasks.segmentation.model import TrainedSegmenter
    from medfm.tasks.segmentation.train import SegTrainConfig, train_segmentation

    data = _blobs(6, 0)
    cfg = SegTrainConfig(arch="unet2d", patch_size=(32, 32), channels=(4, 8), batch_size=2, samples_per_image=1,
                         max_steps=3, epochs=3, precision="fp32", refine=True, refine_input_size=(32, 32),
                         refine_patch_size=(32, 32), refine_crops=2, refine_budget=1.0)
    train_segmentation(data[:4], data[4:], cfg, tmp_path)
    assert (tmp_path / "refine" / "model.safetensors").is_file()
    card = json.loads((tmp_path / "model_card.json").read_text())["config"]["segmentation"]
    cands = card["extra"]["inference_selection"]["candidates"]
    assert sorted({(c["refine_margin"], c["refine_passes"]) for c in cands}) == [(0.0, 1), (INFER_MARGIN, 1), (INFER_MARGIN, 2)]
    assert card["refine_margin"] == card["extra"]["inference_selection"]["refine_margin"]
    assert card["extra"]["refiner"]["steps"] == 3  # the refiner's own budget (same as the first stage's)
    seg = TrainedSegmenter.load(tmp_path, precision="fp32")
    assert seg.refiner is not None
    seg.info.refine_margin, seg.info.refine_passes = 1.4, 1
    p_ref = seg.probabilities(data[5].image.array)
    seg.info.refine_passes = 2
    p_ref2 = seg.probabilities(data[5].image.array)
    assert p_ref2.shape == p_ref.shape and np.allclose(p_ref2.sum(0), 1, atol=1e-5)
    seg.info.refine_margin = 0.0
    p_frame = seg.probabilities(data[5].image.array)
    assert p_ref.shape == p_frame.shape == (2, 48, 64) and not np.allclose(p_ref, p_frame)
    assert np.allclose(p_ref.sum(0), 1, atol=1e-5)
    # a card that asks for refinement without its refiner is refused with the file named
    card_doc = json.loads((tmp_path / "model_card.json").read_text())
    card_doc["config"]["segmentation"]["refine_margin"] = 1.4
    (tmp_path / "model_card.json").write_text(json.dumps(card_doc))
    import shutil

    shutil.rmtree(tmp_path / "refine")
    with pytest.raises(InputError, match="refine"):
        TrainedSegmenter.load(tmp_path)


def test_refine_is_2d_only(tmp_path) -> None:
    from medfm.tasks.segmentation.train import SegTrainConfig, train_segmentation

    img = np.zeros((1, 8, 8, 8), np.float32)
    lab = np.zeros((1, 8, 8, 8), np.uint8)
    lab[0, 2:5, 2:5, 2:5] = 1
    s = Sample("v", image=Image(img, (1.0,) * 3), mask=Image(lab, (1.0,) * 3))
    cfg = SegTrainConfig(arch="unet3d", patch_size=(8, 8, 8), channels=(4, 8), max_steps=1, epochs=1,
                         precision="fp32", refine=True)
    with pytest.raises(ConfigError, match="2D"):
        train_segmentation([s], [s], cfg, tmp_path)
