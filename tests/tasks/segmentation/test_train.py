"""Trained segmentation: a few MONAI steps on tiny crops, checkpoint, resume, load, predict."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medfm.data.card import Sample
from medfm.errors import ConfigError, InputError
from medfm.io.image import Image
from medfm.tasks.segmentation.model import TrainedSegmenter, labels_to_index
from medfm.tasks.segmentation.train import SegTrainConfig, train_segmentation


def _cases(n: int, shape: tuple[int, ...], seed: int = 0) -> list[Sample]:
    """Bright box = label 2 inside a dimmer box = label 1, random positions."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = rng.normal(0, 0.2, (1, *shape)).astype(np.float32)
        lab = np.zeros((1, *shape), np.uint8)
        c = [int(rng.integers(s // 3, 2 * s // 3)) for s in shape]
        sl = tuple(slice(ci - s // 5, ci + s // 5) for ci, s in zip(c, shape))
        lab[(0, *sl)] = 1
        inner = tuple(slice(ci - s // 10, ci + s // 10) for ci, s in zip(c, shape))
        lab[(0, *inner)] = 2
        img[lab > 0] += 1.0
        img[lab == 2] += 1.0
        sp = (1.5,) + (1.0,) * (len(shape) - 1)
        out.append(Sample(f"case{i}", image=Image(img, sp), mask=Image(lab, sp)))
    return out


def test_labels_to_index_refuses_unknown_values() -> None:
    m = np.array([[0, 1], [2, 2]])
    assert labels_to_index(m, (1, 2), "m").tolist() == [[0, 1], [2, 2]]
    assert labels_to_index(m * 2, (2, 4), "m").tolist() == [[0, 1], [2, 2]]
    with pytest.raises(InputError, match="label value"):
        labels_to_index(m, (1,), "mask.nii")


@pytest.mark.slow
def test_train_3d_checkpoint_resume_and_predict(tmp_path) -> None:
    data = _cases(4, (16, 20, 16))
    cfg = SegTrainConfig(arch="unet3d", patch_size=(16, 16, 16), channels=(4, 8), batch_size=2,
                         samples_per_image=1, max_steps=2, epochs=5, precision="fp32")
    res = train_segmentation(data[:3], data[3:], cfg, tmp_path)
    assert res.steps == 2 and res.best_val_dice is not None
    for name in ("model.safetensors", "checkpoint.pt", "model_card.json", "history.json"):
        assert (tmp_path / name).is_file()
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert card["capabilities"] == ["segmenter"] and card["arch"] == "unet3d"
    assert card["config"]["segmentation"]["labels"] == [1, 2]
    # resume continues the step count instead of starting over
    cfg.max_steps = 4
    res2 = train_segmentation(data[:3], data[3:], cfg, tmp_path, resume=True)
    assert res2.steps == 4 and len(res2.history) > len(res.history)
    seg = TrainedSegmenter.load(tmp_path)
    pred = seg.predict(data[3].image)
    assert pred.array.shape == data[3].mask.array.shape
    assert pred.spacing == data[3].image.spacing
    assert set(np.unique(pred.array).tolist()) <= {0, 1, 2}


@pytest.mark.slow
def test_train_2d_with_resize_and_time_budget(tmp_path) -> None:
    data = _cases(3, (40, 52), seed=1)
    cfg = SegTrainConfig(arch="unet2d", patch_size=(16, 16), input_size=(32, 32), channels=(4, 8),
                         batch_size=2, samples_per_image=1, minutes=0.02, epochs=1000, flip_axes=(0, 1),
                         rotate_deg=15.0, scale_aug=0.1)
    res = train_segmentation(data[:2], data[2:], cfg, tmp_path)
    assert res.seconds < 30 and res.steps >= 1
    seg = TrainedSegmenter.load(tmp_path)
    chosen = json.loads((tmp_path / "model_card.json").read_text())["config"]["segmentation"]
    assert len(chosen["extra"]["inference_selection"]["candidates"]) == 9  # 3 flip sets x 3 post-processings
    assert tuple(chosen["tta_flips"]) == seg.info.tta_flips and chosen["postprocess"] == seg.info.postprocess
    pred = seg.predict(data[2].image)
    assert pred.array.shape == (1, 40, 52)  # back at the source size


def test_bad_config_is_refused(tmp_path) -> None:
    data = _cases(2, (16, 16, 16))
    with pytest.raises(ConfigError, match="architecture"):
        train_segmentation(data, data, SegTrainConfig(arch="resnet"), tmp_path)
    with pytest.raises(ConfigError, match="patch"):
        train_segmentation(data, data, SegTrainConfig(arch="unet3d", patch_size=(16, 16)), tmp_path)
    bad = _cases(1, (16, 16, 16))
    bad[0].mask.array[0, 0, 0, 0] = 7
    with pytest.raises(InputError, match="label value"):
        train_segmentation(bad, [], SegTrainConfig(arch="unet3d", labels=(1, 2), max_steps=1), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["test/vit-tiny-timm", "test/dinov2-tiny"])
def test_frozen_encoder_light_decoder(tmp_path, encoder: str) -> None:
    """Only the decoder trains and is saved; the encoder is rebuilt from the zoo on load."""
    import torch

    from medfm.tasks.segmentation.frozen import FrozenEncoderSegmenter

    data = _cases(3, (40, 48), seed=2)
    cfg = SegTrainConfig(arch="frozen_encoder", encoder=encoder, patch_size=(32, 32), batch_size=2,
                         samples_per_image=1, max_steps=2, labels=(1, 2), precision="fp32")
    res = train_segmentation(data[:2], data[2:], cfg, tmp_path)
    assert res.steps == 2
    seg = TrainedSegmenter.load(tmp_path)
    net = seg.net
    assert isinstance(net, FrozenEncoderSegmenter)
    enc_params = [p for m in net._frozen_modules() for p in m.parameters()]
    assert enc_params and not any(p.requires_grad for p in enc_params)
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "model.safetensors"))
    assert saved and all(k.startswith(("proj.", "up.", "skip.", "head.")) for k in saved)
    assert torch.equal(saved["head.2.weight"], net.state_dict()["head.2.weight"])
    pred = seg.predict(data[2].image)
    assert pred.array.shape == (1, 40, 48)


def test_postprocess_keeps_the_largest_component_and_fills_holes() -> None:
    from medfm.tasks.segmentation.model import postprocess_labels

    idx = np.zeros((30, 30), np.int64)
    idx[2:14, 2:14] = 1
    idx[6:8, 6:8] = 0  # a hole
    idx[20:23, 20:23] = 1  # a smaller stray blob
    idx[25:28, 2:5] = 2
    out = postprocess_labels(idx, "largest_cc_fill", 2)
    assert out[6, 6] == 1 and out[21, 21] == 0 and (out == 1).sum() == 144 and (out == 2).sum() == 9
    assert postprocess_labels(idx, "none", 2) is idx
    with pytest.raises(ConfigError, match="postprocess"):
        postprocess_labels(idx, "erode", 2)


def test_ellipse_fill_redraws_a_leaking_mask_as_its_ellipse() -> None:
    from medfm.metrics.segmentation import binary_metrics
    from medfm.tasks.segmentation.hc18 import ellipse_mask
    from medfm.tasks.segmentation.model import postprocess_labels

    ref = ellipse_mask((120, 160), 80.0, 60.0, 50.0, 32.0, 0.3)
    pred = ref.copy()
    pred[55:65, 120:150] = True  # a leak beside the ellipse
    pred[60:64, 70:74] = False  # a hole
    pred[5:9, 5:9] = True  # a stray blob
    idx = pred.astype(np.int64)
    before = binary_metrics(postprocess_labels(idx, "largest_cc_fill", 1) == 1, ref, (1.0, 1.0))["dice"]
    after = binary_metrics(postprocess_labels(idx, "ellipse_fill", 1) == 1, ref, (1.0, 1.0))["dice"]
    assert before < 0.985 and after > 0.995
    with pytest.raises(ConfigError, match="2D"):
        postprocess_labels(np.ones((4, 4, 4), np.int64), "ellipse_fill", 1)


def test_flip_tta_averages_flipped_predictions() -> None:
    import torch

    from medfm.tasks.segmentation.model import NetSpec, SegModelInfo

    torch.manual_seed(0)
    spec = NetSpec(arch="unet2d", in_channels=1, num_classes=2, patch_size=(16, 16), channels=(4, 8))
    info = SegModelInfo(net=spec, labels=(1,))
    x = np.random.default_rng(0).normal(size=(1, 16, 16)).astype(np.float32)
    seg = TrainedSegmenter(torch.nn.Conv2d(1, 2, 1), info, precision="fp32")  # pointwise: flip-equivariant
    plain = seg.probabilities(x)
    info.tta_flips = (0, 1)
    assert np.allclose(seg.probabilities(x), plain, atol=1e-5)
    conv = torch.nn.Conv2d(1, 2, 3, padding=1)  # not flip-equivariant: TTA = mean of flipped runs
    seg = TrainedSegmenter(conv, info, precision="fp32")
    with torch.no_grad():
        t = torch.as_tensor((x - x.mean()) / x.std())[None]
        runs = [torch.softmax(conv(t), 1), torch.softmax(conv(t.flip(2)), 1).flip(2), torch.softmax(conv(t.flip(3)), 1).flip(3)]
    assert np.allclose(seg.probabilities(x), (sum(runs) / 3)[0].numpy(), atol=1e-4)


def test_select_inference_needs_a_val_gain() -> None:
    from medfm.tasks.segmentation.model import NetSpec, SegModelInfo
    from medfm.tasks.segmentation.train import select_inference

    spec = NetSpec(arch="unet2d", in_channels=1, num_classes=2, patch_size=(16, 16))

    class Stub:  # predicts the reference plus a stray blob, whatever the flips
        info = SegModelInfo(net=spec, labels=(1,))

        def probabilities(self, array: np.ndarray) -> np.ndarray:
            fg = np.asarray(array[0] > 0.5, np.float32)
            fg[0:3, 0:3] = 1.0
            return np.stack([1 - fg, fg])

    lab = np.zeros((1, 20, 20), np.uint8)
    lab[0, 8:16, 8:16] = 1
    val = [Sample("v", image=Image(lab.astype(np.float32), (1.0, 1.0)), mask=Image(lab, (1.0, 1.0)))]
    choice = select_inference(Stub(), val, flip_axes=(1,))
    assert choice["postprocess"] == "largest_cc_fill" and choice["tta_flips"] == []  # flips gain nothing here
    assert choice["val_dice"] == pytest.approx(1.0) and len(choice["candidates"]) == 6  # 2 flips x 3 post
    assert Stub.info.tta_flips == () and Stub.info.postprocess == "none"  # the model is left as it was


# -- integrity: divergence, unimproved runs, one atomic checkpoint ---------------------------------


class _Killed(BaseException):
    """Stands in for a kill: nothing after it runs (not an Exception, so no handler swallows it)."""


def _tiny_2d(epochs: int = 4, **kw) -> tuple[list[Sample], SegTrainConfig]:
    data = _cases(3, (24, 24), seed=3)
    cfg = SegTrainConfig(arch="unet2d", patch_size=(16, 16), channels=(4, 8), batch_size=2, samples_per_image=1,
                         epochs=epochs, precision="fp32", select_inference=False, **kw)
    return data, cfg


def test_non_finite_loss_stops_with_the_step(tmp_path) -> None:
    from medfm.errors import MedfmError
    from medfm.errors import TrainingDivergedError

    data, cfg = _tiny_2d(epochs=3, lr=1e30)  # one AdamW step of 1e30 blows every weight up
    with pytest.raises(TrainingDivergedError, match=r"training loss is (nan|inf) at step 2 \(epoch 2, fp32") as err:
        train_segmentation(data[:2], data[2:], cfg, tmp_path)
    assert isinstance(err.value, MedfmError) and "a lower --lr" in str(err.value)
    assert not (tmp_path / "model_card.json").exists()  # nothing reported from a diverged run


def test_run_whose_val_never_improved_is_marked(tmp_path, monkeypatch) -> None:
    import medfm.tasks.segmentation.train as tr

    monkeypatch.setattr(tr, "evaluate", lambda segmenter, items: 0.25)  # val flat from the first epoch
    data, cfg = _tiny_2d(epochs=3)
    res = train_segmentation(data[:2], data[2:], cfg, tmp_path)
    assert res.best_epoch == 1 and len(res.warnings) == 1 and "never rose above" in res.warnings[0]
    card = json.loads((tmp_path / "model_card.json").read_text())
    assert card["description"].startswith("WARNING: val Dice never rose")
    extra = card["config"]["segmentation"]["extra"]
    assert "never rose" in extra["warning"] and extra["autocast"] == "none (fp32)"  # the precision it really ran
    scores = iter([0.2, 0.3, 0.4])
    monkeypatch.setattr(tr, "evaluate", lambda segmenter, items: next(scores))
    assert train_segmentation(data[:2], data[2:], cfg, tmp_path / "ok").warnings == []


def test_kill_between_checkpoint_and_export_resumes_consistently(tmp_path, monkeypatch) -> None:
    """The checkpoint is the one source of truth: a kill after it but before ``model.safetensors``
    is exported leaves older exported weights, and resume exports the checkpoint's best again."""
    import torch
    from safetensors.torch import load_file

    import medfm.tasks.segmentation.train as tr

    scores = iter([0.1, 0.2, 0.3, 0.4, 0.5])  # every validation improves: every epoch exports
    monkeypatch.setattr(tr, "evaluate", lambda segmenter, items: next(scores))
    real_save, calls = tr.save_weights, []

    def save_then_die(weights, path):
        calls.append(path)
        if len(calls) == 2:  # epoch 2's export, after epoch 2's checkpoint
            raise _Killed
        real_save(weights, path)

    monkeypatch.setattr(tr, "save_weights", save_then_die)
    data, cfg = _tiny_2d(epochs=4)
    with pytest.raises(_Killed):
        train_segmentation(data[:2], data[2:], cfg, tmp_path)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["state"]["epoch"] == 2 and ck["state"]["best"] == pytest.approx(0.2) and ck["state"]["best_epoch"] == 2
    stale = load_file(str(tmp_path / "model.safetensors"))  # epoch 1's weights
    assert any(not torch.equal(stale[k], v) for k, v in ck["best_weights"].items())
    monkeypatch.setattr(tr, "save_weights", real_save)
    info, in_ch = tr._model_info(data[:2], cfg)
    trainer = tr.SegTrainer(data[:2], data[2:], cfg, info, in_ch, tmp_path, "cpu")
    trainer.resume()
    exported = load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.equal(exported[k], v) for k, v in ck["best_weights"].items())
    res = train_segmentation(data[:2], data[2:], cfg, tmp_path, resume=True)
    assert (res.epochs, res.best_epoch, res.best_val_dice) == (4, 4, pytest.approx(0.4))
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4]
    assert json.loads((tmp_path / "history.json").read_text()) == res.history


def test_kill_while_writing_the_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch) -> None:
    import torch

    import medfm.tasks.segmentation.state as st

    real_write, calls = st.write_durably, []

    def half_write_then_die(path, data):
        calls.append(path)
        if len(calls) == 2:  # epoch 2's checkpoint: half the bytes reach the disk, then the kill
            (path.parent / f".{path.name}.dead.part").write_bytes(data[: len(data) // 2])
            raise _Killed
        real_write(path, data)

    monkeypatch.setattr(st, "write_durably", half_write_then_die)
    data, cfg = _tiny_2d(epochs=3)
    with pytest.raises(_Killed):
        train_segmentation(data[:2], data[2:], cfg, tmp_path)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["state"]["epoch"] == 1 and len(ck["state"]["history"]) == 1
    monkeypatch.setattr(st, "write_durably", real_write)
    res = train_segmentation(data[:2], data[2:], cfg, tmp_path, resume=True)
    assert res.epochs == 3 and [h["epoch"] for h in res.history] == [1, 2, 3]


def test_unreadable_checkpoint_is_named(tmp_path) -> None:
    data, cfg = _tiny_2d(epochs=1)
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="checkpoint.pt: not a readable train-seg checkpoint"):
        train_segmentation(data[:2], data[2:], cfg, tmp_path, resume=True)
    (tmp_path / "checkpoint.pt").unlink()
    (tmp_path / "train_state.pt").write_bytes(b"")  # an older medfm's two-file state: refused, not restarted
    with pytest.raises(InputError, match="older medfm"):
        train_segmentation(data[:2], data[2:], cfg, tmp_path, resume=True)


def test_norms_run_in_fp32_under_bf16_autocast() -> None:
    import copy

    import torch

    from medfm.tasks.segmentation.model import NetSpec, build_network

    net = build_network(NetSpec(arch="unet3d", in_channels=1, num_classes=2, patch_size=(8, 8, 8), channels=(4, 8)))
    seen = []
    for m in net.modules():
        if isinstance(m, torch.nn.InstanceNorm3d):
            m.register_forward_hook(lambda mod, i, o: seen.append((i[0].dtype, o.dtype)))
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x)
    assert seen and all(o == torch.float32 for _, o in seen) and y.dtype == torch.bfloat16  # convs stay bf16
    twin = copy.deepcopy(net)  # the rebound forward follows the copy, not the original
    assert sorted(twin.state_dict()) == sorted(net.state_dict())
    with torch.no_grad():
        assert torch.allclose(twin(x), net(x))
