"""Model zoo: registry, every adapter's save -> load round trip, offline errors, SAM prompts."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from medfm.errors import ConfigError, InputError, MissingWeightsError
from medfm.models import create_model, get_model_card, list_model_cards, register_model_card, save_model
from medfm.models.adapters._common import file_sha256
from medfm.models.card import ModelCard, Preprocess

TEST_IDS = [c.id for c in list_model_cards() if c.id.startswith("test/")]
REAL_IDS = ["dinov2/small", "dinov2/base", "rad-dino/base", "clip/vit-b16", "siglip/base-p16-224", "medsiglip/448",
            "biomedclip/vit-b16", "pubmedclip/vit-b32", "sam/vit-base", "medsam/vit-base", "slimsam/50-uniform"]


def _images(n: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (1, 28, 28), dtype=np.uint8) for _ in range(n)]


def _outputs(m) -> dict[str, np.ndarray]:
    out = {}
    caps = m.card.capabilities
    if "image_encoder" in caps:
        out["image"] = m.encode_image(m.preprocess(_images())).numpy()
    if "text_encoder" in caps:
        out["text"] = m.encode_text(["a chest x-ray", "benign lesion"]).numpy()
    if "segmenter" in caps:
        img = np.random.default_rng(2).integers(0, 256, (40, 56), dtype=np.uint8)
        m.set_image(img)
        out["masks"] = m.predict(boxes=[[4, 4, 30, 30], [10, 5, 50, 35]])
        out["logits"] = m.low_res_logits
        out["iou"] = m.iou_scores
    return out


def test_registry_has_the_required_cards() -> None:
    for mid in REAL_IDS + ["random/vit-b16", "random/resnet18"]:
        card = get_model_card(mid)
        assert card.license and card.source is not None or mid.startswith("random/")
    assert get_model_card("medsiglip/448").gated
    assert get_model_card("medsam/vit-base").preprocess.intensity == "minmax"
    with pytest.raises(ConfigError, match="Did you mean 'dinov2/base'"):
        get_model_card("dinov2/bsae")
    with pytest.raises(ConfigError, match="already registered"):
        register_model_card(get_model_card("dinov2/base"))


@pytest.mark.parametrize("model_id", TEST_IDS)
def test_adapter_round_trip_through_loader(model_id: str, tmp_path: Path) -> None:
    """Tiny random model of the real architecture -> save -> create_model(folder) -> same outputs."""
    m = create_model(model_id, device="cpu", precision="fp32")
    assert m.weights_source == "random-init" and len(m.weights_hash) == 64
    again = create_model(model_id, device="cpu", precision="fp32")
    assert again.weights_hash == m.weights_hash  # seeded init is deterministic
    ref = _outputs(m)
    folder = save_model(m, m.card, tmp_path / "saved")
    assert (folder / "model_card.json").is_file()
    loaded = create_model(str(folder), device="cpu", precision="fp32")
    assert loaded.card == m.card
    files = sorted(p for p in folder.iterdir() if p.suffix == ".safetensors")
    assert files and loaded.weights_hash == (file_sha256(files[0]) if len(files) == 1 else loaded.weights_hash)
    got = _outputs(loaded)
    assert ref.keys() == got.keys()
    for k in ref:
        if ref[k].dtype == bool:
            assert np.array_equal(ref[k], got[k]), k
        else:
            np.testing.assert_allclose(ref[k], got[k], rtol=1e-5, atol=1e-6, err_msg=k)
    if "image" in ref:
        assert ref["image"].shape == (3, m.card.embed_dim)
        assert np.isfinite(ref["image"]).all() and ref["image"].std() > 0


def test_trainable_module_is_differentiable_image_tower() -> None:
    m = create_model("test/clip-tiny", device="cpu", precision="fp32")
    tower = m.trainable_module()
    x = m.preprocess(_images(2))
    feats = tower(x)
    feats.sum().backward()
    assert all(p.grad is not None for p in tower.parameters() if p.requires_grad)
    # the tower equals transformers' own get_image_features
    with torch.no_grad():
        ref = m.model.get_image_features(pixel_values=x)
    ref = ref if torch.is_tensor(ref) else ref.pooler_output
    torch.testing.assert_close(feats.detach(), ref)
    assert any("q_proj" in n for n, _ in create_model("test/vit-tiny-hf").trainable_module().named_modules())


def test_clip_like_models_expose_logit_scale_and_similarity() -> None:
    m = create_model("test/siglip-tiny", device="cpu", precision="fp32")
    assert m.logit_scale is not None and m.logit_bias is not None
    img, txt = m.encode_image(m.preprocess(_images(2))), m.encode_text(["a", "b", "c"])
    logits = m.similarity_logits(img, txt)
    assert logits.shape == (2, 3)
    cos = torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).T
    torch.testing.assert_close(logits, cos * m.logit_scale + m.logit_bias)


def test_capability_mismatch_is_config_error() -> None:
    m = create_model("test/vit-tiny-timm", device="cpu")
    with pytest.raises(ConfigError, match="text_encoder"):
        m.encode_text(["x"])
    with pytest.raises(ConfigError, match="segmenter"):
        m.set_image(np.zeros((8, 8)))
    with pytest.raises(ConfigError, match="image_encoder"):
        create_model("test/sam-tiny", device="cpu").require("image_encoder", "linear probe")
    with pytest.raises(ConfigError, match="precision"):
        create_model("test/vit-tiny-timm", precision="fp16")


def test_3d_volume_into_2d_model_is_input_error() -> None:
    m = create_model("test/monai-densenet-tiny", device="cpu")
    with pytest.raises(InputError, match="3D volume"):
        m.preprocess([np.zeros((12, 28, 28), np.uint8)])


@pytest.mark.parametrize("model_id", ["dinov2/base", "medsiglip/448", "biomedclip/vit-b16"])
def test_offline_missing_weights_fails_fast_with_instructions(model_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(MissingWeightsError) as err:
        create_model(model_id, device="cpu")
    assert time.perf_counter() - t0 < 2.0
    msg = str(err.value)
    assert f"medfm models pull {model_id}" in msg and f"medfm models import {model_id} PATH" in msg
    if get_model_card(model_id).gated:
        assert "HF_TOKEN" in msg


def _hub_like_folder(tmp_path: Path) -> Path:
    """A transformers snapshot as a user would copy it in (no medfm card file)."""
    m = create_model("test/dinov2-tiny", device="cpu", precision="fp32")
    src = tmp_path / "snapshot"
    m.model.save_pretrained(str(src))
    return src


def test_import_then_load_offline_leaves_source_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medfm.models import hub, weights_available

    monkeypatch.setenv("MEDFM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = _hub_like_folder(tmp_path)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.iterdir()}
    card = get_model_card("dinov2/small")
    assert weights_available(card) == "missing"
    folder = hub.import_folder(card, src)
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.iterdir()} == before
    assert weights_available(card) == "local"
    m = create_model("dinov2/small", device="cpu", precision="fp32")
    assert Path(m.weights_source) == folder
    ref = create_model("test/dinov2-tiny", device="cpu", precision="fp32")
    x = ref.preprocess(_images(2))
    # same weights, the real card's pooling (CLS) -> same features as the tiny model
    torch.testing.assert_close(m.encode_image(x), ref.encode_image(x))
    with pytest.raises(InputError, match="config.json"):
        hub.import_folder(get_model_card("clip/vit-b16"), tmp_path / "home")


def test_folder_without_card_and_weights_override(tmp_path: Path) -> None:
    src = _hub_like_folder(tmp_path)
    with pytest.raises(InputError, match="medfm models import"):
        create_model(str(src))
    m = create_model("test/dinov2-tiny", weights=src, device="cpu")
    assert m.weights_source == str(src)
    with pytest.raises(MissingWeightsError):
        create_model("test/dinov2-tiny", weights=tmp_path / "nope")


def test_timm_external_weight_file(tmp_path: Path) -> None:
    from safetensors.torch import save_model as st_save

    m = create_model("test/vit-tiny-timm", device="cpu", precision="fp32")
    with torch.no_grad():
        for p in m.tower.parameters():
            p.add_(0.01)
    st_save(m.tower, str(tmp_path / "w.safetensors"))
    loaded = create_model("test/vit-tiny-timm", weights=tmp_path / "w.safetensors", device="cpu", precision="fp32")
    assert loaded.weights_hash == file_sha256(tmp_path / "w.safetensors")
    x = m.preprocess(_images(2))
    torch.testing.assert_close(loaded.encode_image(x), m.encode_image(x))


def test_save_fine_tuned_module(tmp_path: Path) -> None:
    m = create_model("test/monai-resnet-tiny", device="cpu", precision="fp32")
    tower = m.trainable_module()
    with torch.no_grad():
        next(tower.parameters()).mul_(2.0)
    folder = save_model(tower, m.card, tmp_path / "ft")
    loaded = create_model(str(folder), device="cpu", precision="fp32")
    x = m.preprocess(_images(2))
    torch.testing.assert_close(loaded.encode_image(x), m.encode_image(x))
    assert loaded.weights_hash != create_model("test/monai-resnet-tiny").weights_hash


def test_sam_caches_embedding_and_maps_prompts() -> None:
    m = create_model("test/sam-tiny", device="cpu", precision="fp32")
    with pytest.raises(ConfigError, match="set_image"):
        m.predict(boxes=[0, 0, 4, 4])
    img = np.random.default_rng(3).integers(0, 256, (3, 48, 80), dtype=np.uint8)
    m.set_image(img)
    a = m.predict(boxes=[2, 2, 40, 30])
    b = m.predict(points=[[[10, 10], [20, 20]], [[30, 30], [5, 40]]], point_labels=[[1, 0], [1, 1]])
    c = m.predict(boxes=[[2, 2, 40, 30]], points=[[[10, 10]]])
    assert m.encoder_calls == 1  # new prompts ran only the decoder
    assert a.shape == (1, 48, 80) and a.dtype == bool and b.shape == (2, 48, 80) and c.shape == (1, 48, 80)
    assert m.low_res_logits.shape == (1, 32, 32)  # 4x the 8x8 embedding grid
    assert m.iou_scores.shape == (1,)
    with pytest.raises(InputError, match="x1 >= x0"):
        m.predict(boxes=[10, 10, 2, 2])
    # mapped like SamProcessor: longest side 80 -> 64, short side 48 -> round(38.4) = 38
    grid = m._to_grid(np.array([[0, 0, 80, 48]], np.float32))
    np.testing.assert_allclose(grid, [[0, 0, 64, 38]], rtol=1e-5)


def test_medsam_recipe_straight_resize_and_minmax() -> None:
    m = create_model("test/medsam-tiny", device="cpu")
    img = np.random.default_rng(4).normal(100, 50, (30, 90)).astype(np.float32)
    x = m.preprocess([img])[0]
    assert x.shape == (3, 64, 64) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    m.set_image(img)
    np.testing.assert_allclose(m._to_grid(np.array([[0, 0, 90, 30]], np.float32)), [[0, 0, 64, 64]], rtol=1e-5)
    assert m.predict(boxes=[0, 0, 45, 15]).shape == (1, 30, 90)


def test_card_json_round_trip() -> None:
    from medfm.models.card import card_from_dict, card_to_dict

    for card in list_model_cards():
        assert card_from_dict(card_to_dict(card)).id == card.id
    custom = ModelCard(id="x/y", backend="timm", source=None, license="-", capabilities=frozenset({"image_encoder"}),
                       preprocess=Preprocess(size=(16, 16), intensity="window", window=(40.0, 400.0)))
    assert card_from_dict(card_to_dict(custom)) == custom
    legacy = card_to_dict(custom)  # a model_card.json written before ``intensity`` replaced ``scale``
    legacy["preprocess"] = {k: v for k, v in legacy["preprocess"].items() if k not in ("intensity", "ct_window")}
    assert card_from_dict({**legacy, "preprocess": {**legacy["preprocess"], "scale": "unit"}}) == custom
    old_medsam = {**legacy["preprocess"], "window": None, "scale": "minmax"}
    assert card_from_dict({**legacy, "preprocess": old_medsam}).preprocess.intensity == "minmax"
    with pytest.raises(ConfigError, match="unknown key"):
        card_from_dict({**card_to_dict(custom), "colour": "red"})
    assert dataclasses.replace(custom, id="x/z").id == "x/z"


def test_unreachable_hub_fails_fast_without_offline_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    from medfm.models import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "endpoint_reachable", lambda timeout=2.0: False)
    t0 = time.perf_counter()
    with pytest.raises(MissingWeightsError, match="not reachable"):
        create_model("sam/vit-base", device="cpu")
    assert time.perf_counter() - t0 < 2.0


def test_unknown_device_and_missing_cuda() -> None:
    with pytest.raises(ConfigError, match="device"):
        create_model("test/vit-tiny-timm", device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            create_model("test/vit-tiny-timm", device="cuda")
