"""Drift monitoring on real shifts of BreastMNIST (tiny random encoder), false-alarm rate, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medfm.errors import InputError
from medfm.tasks.trust.monitor import (
    MonitorConfig,
    classifier_test,
    input_stats,
    ks_test,
    mmd_permutation_test,
    monitor,
)

TINY = "test/vit-tiny-timm"


def test_tests_on_gaussians() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 8))
    same = rng.normal(size=(80, 8))
    shifted = rng.normal(size=(80, 8)) + np.r_[0.8, np.zeros(7)]
    assert mmd_permutation_test(x, shifted, 200).p_value < 0.01
    assert mmd_permutation_test(x, same, 200).p_value > 0.05
    assert ks_test(x, shifted).p_value < 0.01
    assert ks_test(x, same).p_value > 0.05
    assert classifier_test(x, shifted).p_value < 0.01
    assert classifier_test(x, same).p_value > 0.05


def test_mmd_permutation_p_is_uniformish() -> None:
    """Under the null the permutation p-value is (close to) uniform: ~alpha rejections."""
    rng = np.random.default_rng(1)
    ps = [mmd_permutation_test(rng.normal(size=(30, 4)), rng.normal(size=(30, 4)), 99, seed=s).p_value for s in range(200)]
    assert 0.01 <= np.mean(np.asarray(ps) < 0.05) <= 0.10


@pytest.fixture(scope="module")
def breast(shared_data: Path) -> tuple[np.ndarray, np.ndarray, object]:
    from medfm.data import load_dataset
    from medfm.models import create_model
    from medfm.models.embed import embed_arrays

    images = load_dataset("breastmnist", str(shared_data)).split("test").images()
    model = create_model(TINY)
    return images, embed_arrays(model, images, progress=False), model


def _shift(images: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    f = images.astype(np.float32) / 255.0
    if kind == "contrast":
        f = (f - 0.5) * 0.6 + 0.5
    elif kind == "noise":
        f = f + np.random.default_rng(seed).normal(0, 0.08, f.shape)
    elif kind == "resolution":  # 28 -> 14 -> 28 px
        t = F.interpolate(torch.from_numpy(f), size=(14, 14), mode="bilinear", antialias=True)
        f = F.interpolate(t, size=(28, 28), mode="bilinear").numpy()
    return (np.clip(f, 0, 1) * 255).round().astype(np.uint8)


@pytest.mark.slow  # ~20 s: 100 monitor runs
def test_random_halves_do_not_alarm(breast) -> None:
    images, emb, _ = breast
    rng = np.random.default_rng(0)
    alarms = 0
    for r in range(100):
        p = rng.permutation(len(emb))
        a, b = p[: len(p) // 2], p[len(p) // 2:]
        rep = monitor(emb[a], emb[b], MonitorConfig(n_perm=200, seed=r), input_stats(images[a]), input_stats(images[b]))
        alarms += rep.drift
    assert alarms <= 5, f"{alarms} false alarms in 100 repeats at alpha 0.05"


@pytest.mark.parametrize("kind", ["contrast", "noise", "resolution"])
def test_shifted_copy_alarms(breast, kind: str) -> None:
    from medfm.models.embed import embed_arrays

    images, emb, model = breast
    shifted = _shift(images, kind)
    rep = monitor(emb, embed_arrays(model, shifted, progress=False), MonitorConfig(n_perm=200),
                  input_stats(images), input_stats(shifted))
    assert rep.drift, rep.tests
    assert rep.reasons


def test_retinamnist_alarms(breast, shared_data: Path) -> None:
    from medfm.data import load_dataset
    from medfm.models.embed import embed_arrays

    images, emb, model = breast
    retina = load_dataset("retinamnist", str(shared_data)).split("test").images()
    rep = monitor(emb, embed_arrays(model, retina, progress=False), MonitorConfig(n_perm=200),
                  input_stats(images), input_stats(retina))
    assert rep.drift
    assert any("channels differ" in r for r in rep.reasons)
    assert [t.name for t in rep.tests if t.alarm]  # the embedding / intensity tests alarm too, not only the tags


def test_bad_inputs() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="32 dimensions but incoming have 16"):
        monitor(rng.normal(size=(50, 32)), rng.normal(size=(50, 16)))
    with pytest.raises(InputError, match="5 incoming samples; the tests need at least 20"):
        monitor(rng.normal(size=(50, 8)), rng.normal(size=(5, 8)))


def test_cli_monitor_embed_folder_to_png_folder(breast, shared_data: Path, tmp_path: Path, capsys) -> None:
    from medfm.cli.main import main
    from medfm.io import write_png

    images, _, _ = breast
    emb_dir = tmp_path / "emb"
    assert main(["embed", "--dataset", "breastmnist", "--model", TINY, "--split", "test", "--data-dir", str(shared_data),
                 "--out", str(emb_dir)]) == 0
    folder = tmp_path / "incoming"
    folder.mkdir()
    for i, img in enumerate(_shift(images[:80], "contrast")):
        write_png(img[0], folder / f"img{i:03d}.png")
    out = tmp_path / "drift"
    args = ["monitor", "--reference", str(emb_dir), "--incoming", str(folder), "--data-dir", str(shared_data), "--n-perm", "99"]
    capsys.readouterr()
    assert main([*args, "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"] == "drift" and doc["n_reference"] == 156 and doc["n_incoming"] == 80
    assert {t["name"] for t in doc["tests"]} >= {"mmd", "ks", "c2st", "intensity_mean"}
    assert (out / "drift.html").read_text().count("DRIFT") >= 1
    # bad input: embeddings of another width; too few incoming images
    np.save(tmp_path / "narrow.npy", np.zeros((40, 7), dtype=np.float32))
    assert main(["monitor", "--reference", str(emb_dir), "--incoming", str(tmp_path / "narrow.npy"), "--data-dir", str(shared_data)]) == 2
    err = capsys.readouterr().err.strip()
    assert "32 dimensions but incoming have 7" in err and len(err.splitlines()) == 1
    assert main([*args[:-2], "--limit", "5"]) == 2
    assert "need at least 20" in capsys.readouterr().err
