"""``medfm embed`` on the real BreastMNIST file with test models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medfm.cli.main import main


def test_embed_breastmnist_with_tiny_model(shared_data: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("MEDFM_HOME", str(tmp_path / "home"))  # a cold cache, whatever ran before
    out = tmp_path / "emb"
    args = ["embed", "--dataset", "breastmnist", "--model", "test/vit-tiny-timm", "--data-dir", str(shared_data)]
    assert main([*args, "--split", "test", "--out", str(out), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    info = manifest["splits"]["test"]
    assert info["n"] == 156 and info["dim"] == 32 and info["cache"]["computed"] == 1
    emb = np.load(out / "test.npy")
    labels = np.load(out / "test_labels.npy")
    assert emb.shape == (156, 32) and emb.dtype == np.float32 and labels.shape == (156,)
    assert json.loads((out / "manifest.json").read_text())["weights_hash"] == manifest["weights_hash"]
    # again: served from the cache, same numbers; a non-empty --out is refused without --force
    assert main([*args, "--split", "test", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main([*args, "--split", "test", "--out", str(out), "--force", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["splits"]["test"]
    assert again["cache"]["hit"] == 1 and again["cache"]["computed"] == 0
    np.testing.assert_array_equal(np.load(out / "test.npy"), emb)


def test_embed_all_splits_no_cache_and_bad_model(shared_data: Path, capsys) -> None:
    args = ["embed", "--dataset", "breastmnist", "--data-dir", str(shared_data)]
    assert main([*args, "--model", "test/vit-tiny-timm", "--no-cache", "--batch-size", "256", "--json"]) == 0
    splits = json.loads(capsys.readouterr().out)["splits"]
    assert {k: v["n"] for k, v in splits.items()} == {"train": 546, "val": 78, "test": 156}
    assert main([*args, "--model", "test/sam-tiny"]) == 2
    assert "image_encoder" in capsys.readouterr().err
    assert main([*args, "--model", "test/vit-tiny-timm", "--precision", "fp16"]) == 2


@pytest.mark.slow
def test_embed_random_vit_b16_subset(shared_data: Path, tmp_path: Path, capsys) -> None:
    args = ["embed", "--dataset", "breastmnist", "--model", "random/vit-b16", "--data-dir", str(shared_data),
            "--split", "val", "--limit", "16", "--batch-size", "8", "--out", str(tmp_path / "o"), "--json"]
    assert main(args) == 0
    info = json.loads(capsys.readouterr().out)["splits"]["val"]
    assert info["n"] == 16 and info["dim"] == 768
    assert np.isfinite(np.load(tmp_path / "o" / "val.npy")).all()
