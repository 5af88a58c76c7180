"""Promptable segmentation: prompt checks, simulated prompts, 3D propagation, tiny real SamModel."""

from __future__ import annotations

import numpy as np
import pytest

from medfm.data.card import Sample
from medfm.errors import ConfigError, InputError
from medfm.io.image import Image
from medfm.tasks.segmentation.promptable import (
    PromptEvalConfig,
    check_box,
    evaluate_prompted,
    jittered_box,
    mask_box,
    propagate_3d,
    sample_points,
    segment_box,
    segment_points,
)


class ThresholdSegmenter:
    """Stand-in with the segmenter faces: bright pixels inside the box (or the bright component
    under the points). Records every prompt so tests can check what propagation asked for."""

    def __init__(self) -> None:
        self.image: np.ndarray | None = None
        self.boxes: list[np.ndarray] = []
        self.set_calls = 0
        self.modalities: list[str | None] = []

    def set_image(self, image: np.ndarray, modality: str | None = None) -> None:
        self.image = np.asarray(image)
        self.set_calls += 1
        self.modalities.append(modality)

    def predict(self, boxes=None, points=None, point_labels=None) -> np.ndarray:
        assert self.image is not None
        bright = self.image.mean(axis=0) > 0.5
        out = np.zeros((1, *bright.shape), bool)
        if boxes is not None:
            x0, y0, x1, y1 = np.asarray(boxes)[0]
            self.boxes.append(np.asarray(boxes)[0])
            out[0, int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))] = True
            return out & bright
        out[0] = bright
        return out


def _sphere_volume() -> np.ndarray:
    z, y, x = np.mgrid[0:11, 0:40, 0:48]
    ball = (z - 5) ** 2 / 16 + ((y - 20) ** 2 + (x - 24) ** 2) / 100 <= 1  # slices 1..9 non-empty
    return ball[None].astype(np.float32)


def test_box_and_point_checks() -> None:
    check_box((0, 0, 48, 40), (40, 48))
    for bad in [(-1, 0, 10, 10), (0, 0, 49, 10), (5, 5, 5, 9), (0, 0, 10)]:
        with pytest.raises(InputError):
            check_box(bad, (40, 48))
    seg = ThresholdSegmenter()
    img = _sphere_volume()[:, 5]
    with pytest.raises(InputError, match="outside"):
        segment_box(seg, img, (10, 10, 60, 30))
    with pytest.raises(InputError, match="outside"):
        segment_points(seg, img, [(48, 3)])


def test_simulated_prompts_are_seeded_and_bounded() -> None:
    m = np.zeros((30, 40), bool)
    m[10:20, 5:25] = True
    assert mask_box(m).tolist() == [5, 10, 25, 20]
    b1 = jittered_box(m, 3, np.random.default_rng(7))
    b2 = jittered_box(m, 3, np.random.default_rng(7))
    assert np.array_equal(b1, b2)
    assert np.all(np.abs(b1 - [5, 10, 25, 20]) <= 3)
    assert np.array_equal(jittered_box(m, 0, np.random.default_rng(1)), [5, 10, 25, 20])
    pts = sample_points(m, 5, np.random.default_rng(0))
    assert pts.shape == (5, 2)
    assert all(m[int(y), int(x)] for x, y in pts)


def test_propagation_follows_object_and_stops() -> None:
    vol = _sphere_volume()
    gt = vol[0] > 0.5
    seg = ThresholdSegmenter()
    z0 = 5
    box = mask_box(gt[z0])
    pred = propagate_3d(seg, vol, z0, box=box, margin=2)
    assert np.array_equal(pred, gt)  # every slice of the object found, none beyond
    # one key slice + 4 above + 4 below + the two empty slices that stop propagation
    assert seg.set_calls == 1 + 4 + 4 + 2
    # neighbour prompts are the previous mask's box enlarged by the margin
    first_next = seg.boxes[1]
    assert np.allclose(first_next, mask_box(gt[z0], 2))
    with pytest.raises(InputError, match="slice"):
        propagate_3d(seg, vol, 11, box=box)


def test_evaluate_prompted_counts_every_case() -> None:
    vol = _sphere_volume()
    lab = (vol > 0.5).astype(np.uint8)
    empty = np.zeros_like(lab)
    samples = [
        Sample("a", image=Image(vol, (2.0, 1.0, 1.0)), mask=Image(lab, (2.0, 1.0, 1.0))),
        Sample("b", image=Image(vol * 0, (2.0, 1.0, 1.0)), mask=Image(empty, (2.0, 1.0, 1.0))),
    ]
    rows = evaluate_prompted(ThresholdSegmenter(), samples, [1], PromptEvalConfig(mode="box", max_shift=0))
    assert [r["case"] for r in rows] == ["a", "b"]
    assert rows[0]["dice"] == 1.0 and rows[1]["dice"] == 1.0  # empty vs empty counts as 1
    rows = evaluate_prompted(ThresholdSegmenter(), samples[:1], [1], PromptEvalConfig(mode="propagate", max_shift=0))
    assert rows[0]["dice"] == 1.0
    rows = evaluate_prompted(ThresholdSegmenter(), samples[:1], [1], PromptEvalConfig(mode="points", n_points=3))
    assert rows[0]["dice"] == 1.0


@pytest.fixture(scope="module")
def sam_tiny():
    from medfm.models import create_model

    return create_model("test/sam-tiny")


@pytest.mark.slow
def test_tiny_sam_end_to_end(sam_tiny) -> None:
    """The real transformers SamModel class (tiny, random): shapes, cached embedding, propagation."""
    rng = np.random.default_rng(0)
    vol = (rng.random((1, 5, 40, 50)) * 50).astype(np.float32)
    vol[:, :, 10:30, 15:35] += 200
    calls = sam_tiny.encoder_calls
    m = segment_box(sam_tiny, vol[:, 2], (15, 10, 35, 30))
    assert m.shape == (40, 50) and m.dtype == bool
    assert sam_tiny.encoder_calls == calls + 1
    m2 = segment_points(sam_tiny, vol[:, 2], [(20, 20)], embed=False)  # reuses the cached embedding
    assert m2.shape == (40, 50) and sam_tiny.encoder_calls == calls + 1
    pred = propagate_3d(sam_tiny, vol, 2, box=(15, 10, 35, 30))
    assert pred.shape == (5, 40, 50) and pred[2].any()
    with pytest.raises(InputError):
        segment_box(sam_tiny, vol[:, 2], (15, 10, 55, 30))
    lab = np.zeros((1, 5, 40, 50), np.uint8)
    lab[:, 1:4, 10:30, 15:35] = 1
    s = Sample("v", image=Image(vol, (1.0, 1.0, 1.0)), mask=Image(lab, (1.0, 1.0, 1.0)))
    rows = evaluate_prompted(sam_tiny, [s], [1], PromptEvalConfig(mode="box", max_shift=3))
    assert len(rows) == 1 and 0.0 <= rows[0]["dice"] <= 1.0


def test_evaluate_prompted_refuses_mask_off_the_image_grid() -> None:
    vol = _sphere_volume()
    lab = (vol > 0.5).astype(np.uint8)
    s = Sample("a", image=Image(vol[:, :, :30], (2.0, 1.0, 1.0)), mask=Image(lab, (2.0, 1.0, 1.0)))
    with pytest.raises(InputError, match="differs from the image"):
        evaluate_prompted(ThresholdSegmenter(), [s], [1], PromptEvalConfig(mode="box"))
    with pytest.raises(ConfigError, match="prompt mode"):
        evaluate_prompted(ThresholdSegmenter(), [s], [1], PromptEvalConfig(mode="lasso"))


@pytest.mark.parametrize("mode", ["box", "propagate"])
def test_image_modality_reaches_set_image(mode: str) -> None:
    """A CT case is embedded with modality "CT" (MedSAM's card windows CT before min-max)."""
    vol = _sphere_volume()
    mask = Image((vol > 0.5).astype(np.uint8), spacing=(1.0, 1.0, 1.0))
    sample = Sample(id="ct1", image=Image(vol, spacing=(1.0, 1.0, 1.0), modality="CT"), mask=mask)
    seg = ThresholdSegmenter()
    evaluate_prompted(seg, [sample], labels=[1], config=PromptEvalConfig(mode=mode, max_shift=0))
    assert seg.modalities and set(seg.modalities) == {"CT"}
    seg2 = ThresholdSegmenter()
    propagate_3d(seg2, sample.image, 5, box=(14, 10, 34, 30))
    assert set(seg2.modalities) == {"CT"}
