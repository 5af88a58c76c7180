"""Self-supervised pretraining and distillation: methods run, resume exactly, never read labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfm.cli.main import main
from medfm.errors import ConfigError, InputError
from medfm.models.native import load_native_model
from medfm.tasks.pretrain import PretrainConfig, pretrain
from medfm.tasks.pretrain.inputs import folder_images


def _images(n: int = 16, size: int = 28, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, size=(n, 1, size, size), dtype=np.uint8)
    x[: n // 2, :, 8:20, 8:20] += 150  # two kinds of image, so the objective has something to learn
    return x


@pytest.mark.parametrize(("method", "arch"), [("simclr", "resnet18"), ("dino", "resnet18"), ("mae", "vit-tiny")])
def test_methods_train_and_save_a_loadable_encoder(tmp_path, method, arch) -> None:
    cfg = PretrainConfig(method=method, arch=arch, epochs=2, batch_size=8, minutes=None)
    res = pretrain(_images(), cfg, tmp_path, show_progress=False)
    assert res.epochs_done == 2 and all(np.isfinite(res.losses))
    adapter = load_native_model(res.folder)
    batch = adapter.preprocess(list(_images(4)))
    emb = adapter.encode_image(batch)
    assert emb.shape == (4, res.card.embed_dim)
    # the saved weights are the trained ones, not a fresh init
    fresh = pretrain.__globals__["build_native_encoder"](arch, 1, 2, 28)
    trained = adapter.module.state_dict()
    assert any(not torch.equal(v, trained[k]) for k, v in fresh.state_dict().items() if v.is_floating_point())


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, monkeypatch) -> None:
    torch.set_num_threads(1)
    cfg = PretrainConfig(method="simclr", arch="resnet18", epochs=3, batch_size=8, minutes=None, precision="fp32")
    full = pretrain(_images(), cfg, tmp_path / "full", show_progress=False)

    import medfm.tasks.pretrain.trainer as trainer

    real = trainer._lr_at
    steps_per_epoch = 16 // 8

    def dying(step: int, *a, **k) -> float:
        if step == 2 * steps_per_epoch:  # first step of the third epoch: "killed"
            raise KeyboardInterrupt
        return real(step, *a, **k)

    monkeypatch.setattr(trainer, "_lr_at", dying)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_images(), cfg, tmp_path / "cut", show_progress=False)
    assert (tmp_path / "cut" / "checkpoint.pt").is_file()
    assert not (tmp_path / "cut" / "encoder").exists()  # nothing that looks complete
    monkeypatch.setattr(trainer, "_lr_at", real)
    resumed = pretrain(_images(), cfg, tmp_path / "cut", show_progress=False)
    assert resumed.resumed_from == 2
    np.testing.assert_allclose(resumed.losses, full.losses, rtol=1e-4)
    a = load_native_model(full.folder).module.state_dict()
    b = load_native_model(resumed.folder).module.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


def test_checkpoint_with_other_config_is_refused(tmp_path) -> None:
    pretrain(_images(), PretrainConfig(epochs=1, batch_size=8, minutes=None), tmp_path, show_progress=False)
    with pytest.raises(ConfigError, match="different configuration"):
        pretrain(_images(), PretrainConfig(epochs=1, batch_size=8, minutes=None, lr=0.5), tmp_path, show_progress=False)


def test_mae_needs_a_vit() -> None:
    with pytest.raises(ConfigError, match="mae"):
        pretrain(_images(), PretrainConfig(method="mae", arch="resnet18", epochs=1, batch_size=8), "/nonexistent-unused")


@pytest.mark.slow
def test_3d_volumes(tmp_path) -> None:
    rng = np.random.default_rng(0)
    vols = rng.integers(0, 255, size=(8, 1, 16, 16, 16), dtype=np.uint8)
    res = pretrain(vols, PretrainConfig(method="simclr", arch="resnet18", epochs=1, batch_size=4, minutes=None), tmp_path, show_progress=False)
    adapter = load_native_model(res.folder)
    assert adapter.encode_image(adapter.preprocess(list(vols[:2]))).shape == (2, 512)
    with pytest.raises(InputError, match="does not fit"):
        adapter.preprocess([vols[0, 0, 0]])  # a 2D slice into a 3D model


def test_cli_never_reads_labels(tmp_path, shared_data, monkeypatch, capsys) -> None:
    """Pretraining through the CLI on BreastMNIST with every label access booby-trapped."""
    import medfm.data.medmnist as medmnist

    def trap(self):  # noqa: ANN001, ANN202
        raise AssertionError("pretraining read the labels")

    monkeypatch.setattr(medmnist.MedMNISTSplit, "labels", property(trap))
    # the validation split (78 images): the same reader and label trap as the training split, 1/7 of the cost
    rc = main(["pretrain", "--dataset", "breastmnist", "--split", "val", "--data-dir", str(shared_data), "--epochs", "1",
               "--batch-size", "256", "--out", str(tmp_path / "run"), "--json"])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "encoder" / "model_card.json").is_file()
    assert (tmp_path / "run" / "report.html").read_text().count("data:image/png;base64") == 1
    # a finished run is not overwritten without --force
    rc = main(["pretrain", "--dataset", "breastmnist", "--split", "val", "--data-dir", str(shared_data), "--epochs", "1",
               "--out", str(tmp_path / "run")])
    assert rc == 2 and "already holds a finished model" in capsys.readouterr().err


def test_cli_folder_bad_inputs(tmp_path, capsys) -> None:
    from PIL import Image as PILImage

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    (empty / "broken.png").write_bytes(b"not a png")
    rc = main(["pretrain", "--folder", str(empty), "--out", str(tmp_path / "o1")])
    err = capsys.readouterr().err
    assert rc == 2 and "no readable image" in err and str(empty) in err
    assert not (tmp_path / "o1" / "encoder").exists()

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    PILImage.fromarray(np.zeros((28, 28), np.uint8)).save(mixed / "a.png")
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), mixed / "b.nii.gz")
    rc = main(["pretrain", "--folder", str(mixed), "--out", str(tmp_path / "o2")])
    assert rc == 2 and "mixed 2D and 3D" in capsys.readouterr().err

    rc = main(["pretrain", "--folder", str(mixed / "a.png"), "--out", str(tmp_path / "o3")])
    assert rc == 2


def test_folder_images_resizes_when_asked(tmp_path) -> None:
    from PIL import Image as PILImage

    for i, s in enumerate((20, 28, 32)):
        PILImage.fromarray(np.full((s, s), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "labels.csv").write_text("file,label\n0.png,1\n")
    with pytest.raises(ConfigError, match="--image-size"):
        folder_images(tmp_path)
    assert folder_images(tmp_path, image_size=28).shape == (3, 1, 28, 28)


def test_image_size_resizes_what_the_encoder_trains_on(tmp_path, monkeypatch) -> None:
    """``image_size`` is the size the encoder sees in training, as its card (and inference) say."""
    import medfm.tasks.pretrain.trainer as trainer

    seen: list[tuple[int, ...]] = []
    build = trainer.build_native_encoder

    def recording(*args):  # noqa: ANN002, ANN202
        enc = build(*args)
        enc.register_forward_pre_hook(lambda _m, inp: seen.append(tuple(inp[0].shape[2:])))
        return enc

    monkeypatch.setattr(trainer, "build_native_encoder", recording)
    cfg = PretrainConfig(method="simclr", arch="resnet18", epochs=1, batch_size=8, minutes=None, image_size=16)
    res = pretrain(_images(size=28), cfg, tmp_path, show_progress=False)
    assert seen and set(seen) == {(16, 16)}
    assert res.card.config["image_size"] == 16
    assert tuple(load_native_model(res.folder).preprocess(list(_images(2, size=28))).shape[2:]) == (16, 16)


def test_distill_into_small_student(tmp_path) -> None:
    from medfm.models import create_model
    from medfm.tasks.pretrain import DistillConfig
    from medfm.tasks.pretrain.distill import distill

    teacher = create_model("test/vit-tiny-timm", device="cpu")
    imgs = _images(24)
    rgb = np.repeat(imgs, 3, axis=1) if teacher.card.preprocess.channels == 3 else imgs
    res = distill(teacher, rgb, DistillConfig(student="resnet18", epochs=2, batch_size=8, minutes=None), tmp_path, show_progress=False)
    assert res.best_epoch in (1, 2) and len(res.val_losses) == 2
    student = load_native_model(res.folder)
    assert student.card.config["teacher"] == teacher.card.id
    assert student.encode_image(student.preprocess(list(rgb[:3]))).shape == (3, 512)


def test_3d_vit_patch_keeps_tokens_bounded_and_old_cards_load(tmp_path) -> None:
    """A 64^3 ViT gets patch 8 (512 tokens, not 4,096); its card records the patch, and a card
    written before that (no ``patch_size``: patch 4 at 64^3) still rebuilds its own architecture."""
    import json

    from medfm.models.native import build_native_encoder, native_card, save_native_model

    enc = build_native_encoder("vit-tiny", 1, 3, 64)
    assert enc.patch_size == 8 and enc.vit.patch_embedding.n_patches == 512
    assert build_native_encoder("vit-tiny", 1, 3, 28).patch_size == 4  # unchanged where the old rule was small
    assert build_native_encoder("vit-tiny", 1, 2, 64).patch_size == 4  # 2D unchanged
    folder = save_native_model(enc, native_card("t/vit3d", "vit-tiny", 1, 3, 64, enc.embed_dim), tmp_path / "new")
    assert json.loads((folder / "model_card.json").read_text())["config"]["patch_size"] == 8
    vol = np.random.default_rng(0).random((1, 64, 64, 64), dtype=np.float32)
    adapter = load_native_model(folder)
    batch = adapter.preprocess([vol])
    with torch.no_grad():
        assert torch.allclose(adapter.encode_image(batch), enc.eval()(batch), atol=1e-5)

    old = build_native_encoder("vit-tiny", 1, 3, 64, patch_size=4)
    folder = save_native_model(old, native_card("t/old", "vit-tiny", 1, 3, 64, old.embed_dim), tmp_path / "old")
    card = json.loads((folder / "model_card.json").read_text())
    del card["config"]["patch_size"]
    (folder / "model_card.json").write_text(json.dumps(card))
    assert load_native_model(folder).module.patch_size == 4
