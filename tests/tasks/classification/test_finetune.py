"""Fine-tuning tiny zoo models: LoRA changes only LoRA + head weights; the caller's model is untouched."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from medfm.errors import ConfigError
from medfm.tasks.classification import PROTOCOLS, finetune
from medfm.tasks.classification.finetune import FinetuneConfig


def _state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list:
    """The tower copies the protocol trains (``finetune.clone_module`` of the model's tower)."""
    seen: list = []

    def capture(module):
        out = copy.deepcopy(module)
        seen.append(out)
        return out

    monkeypatch.setattr(finetune, "clone_module", capture)
    return seen


def test_lora_on_timm_vit_changes_only_lora_and_head(captured: list, make_images) -> None:
    from medfm.models import create_model

    model = create_model("test/vit-tiny-timm", device="cpu")
    before = _state(model.trainable_module())
    data = make_images(n=(24, 8, 10))
    cfg = FinetuneConfig(method="lora", epochs=2, batch_size=8, lr=1e-2, patience=None, precision="fp32")
    pred = PROTOCOLS.get("finetune").run(model, data, cfg, seed=0)
    assert pred.test_scores.shape == (10, 2) and pred.info["trained"] is True
    assert pred.info["lora_modules"] == 2  # one fused qkv per block, depth 2
    # the caller's model is unchanged
    for k, v in _state(model.trainable_module()).items():
        assert np.array_equal(v.numpy(), before[k].numpy()), k
    (tower,) = captured
    after = _state(tower)
    lora = {k for k in after if "lora_" in k}
    assert lora and any("lora_B" in k and after[k].abs().sum() > 0 for k in lora)  # B starts at 0
    for k, v in after.items():
        if k in lora:
            continue
        base = k.replace(".base_layer", "")
        assert np.array_equal(v.numpy(), before[base].numpy()), f"non-LoRA weight {k} changed"
    n_lora = sum(v.numel() for k, v in tower.named_parameters() if "lora_" in k)
    assert pred.info["trainable_params"] == n_lora + (32 * 2 + 2)  # + linear head (D=32, C=2)


@pytest.mark.parametrize("model_id", ["test/vit-tiny-hf", "test/open-clip-tiny"])
def test_default_lora_targets_per_backend(model_id: str, make_images) -> None:
    from medfm.models import create_model

    model = create_model(model_id, device="cpu")
    cfg = FinetuneConfig(epochs=1, batch_size=8, patience=None)
    pred = PROTOCOLS.get("finetune").run(model, make_images(n=(8, 4, 4)), cfg, seed=0)
    # 2 blocks x (q_proj, v_proj) for transformers; 2 blocks x (c_fc, c_proj) for open_clip's ViT
    assert pred.info["lora_modules"] == 4
    with pytest.raises(ConfigError, match="match no layer"):
        PROTOCOLS.get("finetune").run(model, make_images(n=(8, 4, 4)), FinetuneConfig(epochs=1, lora_targets=("nope",)), seed=0)


def test_head_only_keeps_the_tower_and_full_trains_it(captured: list, make_images) -> None:
    from medfm.models import create_model

    model = create_model("test/vit-tiny-timm", device="cpu")
    before = _state(model.trainable_module())
    data = make_images(n=(8, 4, 4))
    PROTOCOLS.get("finetune").run(model, data, FinetuneConfig(method="head", epochs=1, batch_size=8), seed=0)
    PROTOCOLS.get("finetune").run(model, data, FinetuneConfig(method="full", epochs=1, batch_size=8, lr=1e-2), seed=0)
    head_tower, full_tower = captured
    assert all(np.array_equal(v.numpy(), before[k].numpy()) for k, v in _state(head_tower).items())
    assert any(not np.array_equal(v.numpy(), before[k].numpy()) for k, v in _state(full_tower).items())


def test_unknown_backend_needs_explicit_targets() -> None:
    with pytest.raises(ConfigError, match="no default LoRA target"):
        finetune.lora_targets_for("monai", FinetuneConfig())
    assert finetune.lora_targets_for("monai", FinetuneConfig(lora_targets=("fc",))) == ("fc",)
    with pytest.raises(ConfigError, match="method must be"):
        FinetuneConfig(method="adapter")
