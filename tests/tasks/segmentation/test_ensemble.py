"""Ensembles of trained segmenters: the mean outvotes one member's leak; build, copy, reload, refuse."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medfm.data.card import Sample
from medfm.errors import ConfigError, InputError
from medfm.io.image import Image
from medfm.tasks.segmentation.ensemble import EnsembleSegmenter, SegEnsembleConfig, build_ensemble, check_members, load_segmenter
from medfm.tasks.segmentation.model import NetSpec, SegModelInfo, TrainedSegmenter



def _discs(n: int) -> list[Sample]:
    """Bright discs of random centre and radius on noise, 48 x 64."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:48, 0:64]
    out = []
    for i in range(n):
        r = rng.integers(6, 12)
        lab = (((yy - rng.integers(16, 32)) ** 2 + (xx - rng.integers(20, 44)) ** 2) <= r * r).astype(np.uint8)[None]
        img = (rng.normal(0, 0.3, lab.shape) + 1.5 * lab).astype(np.float32)
        out.append(Sample(f"d{i}", image=Image(img, (0.5, 0.5)), mask=Image(lab, (0.5, 0.5))))
    return out


class _Fixed:
    """A member whose probabilities are given (background / object)."""

    def __init__(self, fg: np.ndarray) -> None:
        self.fg = fg.astype(np.float32)
        self.info = SegModelInfo(NetSpec("unet2d", 1, 2, (32, 32)), labels=(1,))

    def probabilities(self, array: np.ndarray) -> np.ndarray:
        p = 0.05 + 0.9 * self.fg
        return np.stack([1 - p, p])


def test_the_mean_outvotes_one_members_leak() -> None:
    head = np.zeros((40, 40), bool)
    head[10:30, 10:30] = True
    leak = head.copy()
    leak[10:30, 30:38] = True  # one member also takes the tissue beside the object
    info = SegModelInfo(NetSpec("unet2d", 1, 2, (32, 32)), labels=(1,), postprocess="none")
    x = np.zeros((1, 40, 40), np.float32)
    alone = EnsembleSegmenter([_Fixed(leak), _Fixed(leak)], info).predict_array(x)
    assert alone[15, 34] == 1  # members that agree on the leak keep it
    ens = EnsembleSegmenter([_Fixed(leak), _Fixed(head), _Fixed(head)], info)
    pred = ens.predict_array(x)
    assert np.array_equal(pred > 0, head)
    assert np.allclose(ens.probabilities(x)[1][15, 34], (0.95 + 0.05 + 0.05) / 3)
    with pytest.raises(ConfigError, match="at least 2"):
        EnsembleSegmenter([_Fixed(head)], info)


def test_members_must_be_distinct_trained_models(tmp_path) -> None:
    with pytest.raises(ConfigError, match="at least 2"):
        check_members([tmp_path])
    with pytest.raises(ConfigError, match="twice"):
        check_members([tmp_path, tmp_path / "."])
    (tmp_path / "b").mkdir()
    with pytest.raises(InputError, match="not a trained model folder"):
        check_members([tmp_path, tmp_path / "b"])


def _saved(folder, labels: tuple[int, ...], patch: tuple[int, ...], dataset: str = "d") -> None:
    """A trained-model folder with a tiny untrained UNet (enough for the member checks)."""
    from medfm.tasks.segmentation.model import build_network, save_weights, write_card

    spec = NetSpec("unet2d" if len(patch) == 2 else "unet3d", 1, len(labels) + 1, patch, channels=(2, 4))
    folder.mkdir()
    save_weights(build_network(spec), folder / "model.safetensors")
    write_card(folder, SegModelInfo(spec, labels=labels, dataset=dataset), name="t")


def test_members_must_agree_on_labels_and_dimensions(tmp_path) -> None:
    _saved(tmp_path / "a", (1,), (16, 16))
    _saved(tmp_path / "b", (1, 2), (16, 16))
    _saved(tmp_path / "c", (1,), (8, 8, 8))
    _saved(tmp_path / "d", (1,), (16, 16))
    with pytest.raises(InputError, match="labels"):
        check_members([tmp_path / "a", tmp_path / "b"])
    with pytest.raises(InputError, match="3-D model"):
        check_members([tmp_path / "a", tmp_path / "c"])
    assert len(check_members([tmp_path / "a", tmp_path / "d"], dataset="d")) == 2


@pytest.mark.slow
def test_build_copies_members_selects_on_val_and_reloads(tmp_path) -> None:
    from medfm.tasks.segmentation.train import SegTrainConfig, train_segmentation

    data = _discs(6)
    folders = []
    for seed, refine in ((0, True), (1, False)):
        cfg = SegTrainConfig(arch="unet2d", patch_size=(32, 32), channels=(4, 8), batch_size=2, samples_per_image=1,
                             max_steps=3, epochs=3, precision="fp32", seed=seed, refine=refine,
                             refine_input_size=(32, 32), refine_patch_size=(32, 32), refine_crops=2, dataset="blobs")
        train_segmentation(data[:4], data[4:], cfg, tmp_path / f"m{seed}")
        folders.append(tmp_path / f"m{seed}")
    before = {p: p.read_bytes() for f in folders for p in sorted(f.rglob("*")) if p.is_file()}
    ens = build_ensemble(folders, tmp_path / "ens", data[4:], SegEnsembleConfig(tuple(map(str, folders)), precision="fp32"))
    assert {p: p.read_bytes() for p in before} == before  # the members given are untouched
    out = tmp_path / "ens"
    assert (out / "members/0/refine/model.safetensors").is_file() and (out / "members/1/model.safetensors").is_file()
    assert not list(out.rglob("checkpoint.pt"))  # the training state stays with the member runs
    card = json.loads((out / "model_card.json").read_text())["config"]
    assert [m["dir"] for m in card["ensemble"]["members"]] == ["members/0", "members/1"]
    sel = card["segmentation"]["extra"]["inference_selection"]
    assert len(sel["candidates"]) == 3 and card["segmentation"]["postprocess"] == sel["postprocess"]  # post-processing only

    loaded = load_segmenter(out, precision="fp32")
    assert isinstance(loaded, EnsembleSegmenter) and len(loaded.members) == 2
    x = data[5].image.array
    singles = [TrainedSegmenter.load(f, precision="fp32").probabilities(x) for f in folders]
    assert np.allclose(loaded.probabilities(x), np.mean(singles, axis=0), atol=1e-6)
    assert np.allclose(ens.probabilities(x), loaded.probabilities(x), atol=1e-6)
    pred = loaded.predict(data[5].image)
    assert pred.array.shape == (1, 48, 64) and set(np.unique(pred.array).tolist()) <= {0, 1}

    with pytest.raises(InputError, match="ensemble"):
        check_members([folders[0], out])  # an ensemble is not a member
    with pytest.raises(InputError, match="trained on 'blobs'"):
        check_members(folders, dataset="hc18")
    with pytest.raises(InputError, match="ensemble"):
        TrainedSegmenter.load(out)
    w = out / "members/1/model.safetensors"
    w.write_bytes(w.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(InputError, match="changed since the ensemble was built"):
        load_segmenter(out)
