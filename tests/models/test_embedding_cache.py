"""Batched embeddings and the resumable, content-keyed embedding cache."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from medfm.errors import ConfigError
from medfm.models import create_model
from medfm.models import embed as embed_mod
from medfm.models.adapters._common import save_module
from medfm.models.embed import EmbeddingCache, embed_arrays, embed_cached


@pytest.fixture(scope="module")
def model():
    return create_model("test/vit-tiny-timm", device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (50, 1, 28, 28), dtype=np.uint8)


def test_embed_arrays_matches_direct_forward_any_batch_size(model, images) -> None:
    ref = model.encode_image(model.preprocess(list(images))).numpy()
    for bs in (1, 7, 64):
        out = embed_arrays(model, images, batch_size=bs, progress=False)
        assert out.shape == (50, 32) and out.dtype == np.float32
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert embed_arrays(model, images[:0], progress=False).shape == (0, 32)
    assert embed_arrays(model, [images[0][0], images[1]], progress=False).shape == (2, 32)


def test_bf16_close_to_fp32(model, images) -> None:
    a = embed_arrays(model, images, precision="fp32", progress=False)
    b = embed_arrays(model, images, precision="bf16", progress=False)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99 and model.precision == "fp32"  # override is per call


def test_errors_surface_from_preprocessing_thread(model) -> None:
    from medfm.errors import InputError

    with pytest.raises(InputError):
        embed_arrays(model, [np.zeros((5, 8, 8), np.uint8)] * 3, batch_size=1, progress=False)
    with pytest.raises(ConfigError):
        embed_arrays(create_model("test/sam-tiny"), [np.zeros((8, 8))], progress=False)


def test_cache_miss_then_hit(model, images, tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    a = embed_cached(model, images, "data-v1", cache=cache, chunk_size=16, progress=False)
    assert cache.last.chunks_computed == 4 and cache.last.chunks_hit == 0
    b = embed_cached(model, images, "data-v1", cache=cache, chunk_size=16, progress=False)
    assert cache.last.chunks_hit == 4 and cache.last.chunks_computed == 0
    np.testing.assert_array_equal(a, b)
    embed_cached(model, images, "data-v2", cache=cache, chunk_size=16, progress=False)
    assert cache.last.chunks_computed == 4  # other data, other key
    # another chunk size asked for later keeps the entry's chunks (it once deleted them and re-embedded)
    c = embed_cached(model, images, "data-v1", cache=cache, chunk_size=2048, progress=False)
    assert cache.last.chunks_hit == 4 and cache.last.chunks_computed == 0
    np.testing.assert_array_equal(a, c)


def test_cache_invalidated_by_weights_and_preprocessing(model, images, tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    embed_cached(model, images, "d", cache=cache, progress=False)
    key0 = cache.last.key
    card = model.card
    changed = create_model("test/vit-tiny-timm", device="cpu", precision="fp32")
    with torch.no_grad():
        next(changed.tower.parameters()).add_(1.0)
    save_module(changed.tower, tmp_path / "w.safetensors")
    reloaded = create_model("test/vit-tiny-timm", weights=tmp_path / "w.safetensors", device="cpu", precision="fp32")
    assert reloaded.weights_hash != model.weights_hash
    embed_cached(reloaded, images, "d", cache=cache, progress=False)
    assert cache.last.chunks_computed == 1 and cache.last.key != key0
    other_pp = create_model("test/vit-tiny-timm", device="cpu", precision="fp32")
    other_pp.card = dataclasses.replace(card, preprocess=dataclasses.replace(card.preprocess, mean=(0.5, 0.5, 0.5)))
    embed_cached(other_pp, images, "d", cache=cache, progress=False)
    assert cache.last.chunks_computed == 1 and cache.last.key != key0
    bf16 = embed_cached(model, images, "d", cache=cache, precision="bf16", progress=False)
    assert cache.last.chunks_computed == 1 and bf16.shape == (50, 32)


def test_truncated_or_corrupt_chunk_is_recomputed(model, images, tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    ref = embed_cached(model, images, "d", cache=cache, chunk_size=20, progress=False)
    entry = Path(cache.last.path)
    chunk = entry / "chunk-000001.npy"
    chunk.write_bytes(chunk.read_bytes()[:100])  # truncated
    data = bytearray((entry / "chunk-000002.npy").read_bytes())
    data[-3] ^= 0xFF  # one flipped byte in the values
    (entry / "chunk-000002.npy").write_bytes(bytes(data))
    out = embed_cached(model, images, "d", cache=cache, chunk_size=20, progress=False)
    assert cache.last.chunks_hit == 1 and cache.last.chunks_computed == 2 and cache.last.chunks_corrupt == [1, 2]
    np.testing.assert_array_equal(out, ref)


def test_interrupted_run_resumes_where_it_stopped(model, images, tmp_path: Path, monkeypatch) -> None:
    cache = EmbeddingCache(tmp_path)
    real = embed_mod.embed_arrays
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(embed_mod, "embed_arrays", flaky)
    with pytest.raises(KeyboardInterrupt):
        embed_cached(model, images, "d", cache=cache, chunk_size=10, progress=False)
    monkeypatch.setattr(embed_mod, "embed_arrays", real)
    out = embed_cached(model, images, "d", cache=cache, chunk_size=10, progress=False)
    assert cache.last.chunks_hit == 2 and cache.last.chunks_computed == 3
    np.testing.assert_allclose(out, real(model, images, progress=False), rtol=1e-5, atol=1e-6)
    assert not list(Path(cache.last.path).glob("*.part"))  # no temp files left behind


def test_stacked_volumes_embed_with_a_3d_model_and_are_refused_by_a_2d_one(model, tmp_path) -> None:
    """A (N, C, D, H, W) array is a batch for a 3D encoder (saved and reloaded), an error for a 2D one."""
    from medfm.errors import InputError
    from medfm.models.native import build_native_encoder, native_card, save_native_model

    torch.manual_seed(0)
    net = build_native_encoder("resnet18", 1, 3, 16)
    card = native_card("native/tiny3d", "resnet18", 1, 3, 16, embed_dim=512)
    folder = save_native_model(net, card, tmp_path / "enc3d")
    enc = create_model(str(folder), device="cpu", precision="fp32")
    assert enc.card.input_ndim == 3
    vols = np.random.default_rng(1).integers(0, 256, (5, 1, 16, 16, 16), dtype=np.uint8)
    stacked = embed_arrays(enc, vols, batch_size=2, progress=False)
    listed = embed_arrays(enc, list(vols), batch_size=5, progress=False)
    assert stacked.shape == (5, 512)
    np.testing.assert_allclose(stacked, listed, rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match="a 2D model takes 2D slices"):
        embed_arrays(model, vols, progress=False)


def test_embed_dataset_writes_arrays_and_manifest_from_shards(model, shared_data: Path, tmp_path: Path) -> None:
    """The dataset-level call behind ``medfm embed``: shards of the cache, arrays + manifest in OUT."""
    import json

    from medfm.data import load_dataset
    from medfm.models.embed import EmbedJob, embed_dataset, split_images

    job = EmbedJob(dataset="breastmnist", model="test/vit-tiny-timm", splits=["val"], data_dir=str(shared_data),
                   precision="fp32", device="cpu", shard_size=32, cache_dir=tmp_path / "c", out=tmp_path / "o")
    manifest = embed_dataset(job)
    info = manifest["splits"]["val"]
    assert info["n"] == 78 and info["cache"]["computed"] == 3 and manifest["executor"]["kind"] == "local"
    val = load_dataset("breastmnist", shared_data).split("val")
    ref = embed_arrays(model, split_images(val), progress=False)
    np.testing.assert_allclose(np.load(tmp_path / "o" / "val.npy"), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "val_labels.npy"), np.asarray(val.labels))
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["splits"]["val"]["file"] == "val.npy"
    assert len(split_images(val, 70, 100)) == 8
    with pytest.raises(ConfigError, match="--executor"):
        embed_dataset(EmbedJob(dataset="breastmnist", model="test/vit-tiny-timm", executor="dask"))
