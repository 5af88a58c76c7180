"""open_clip models (BiomedCLIP and other ``hf-hub:`` CLIPs): image and text towers.

A weights folder holds ``open_clip_config.json`` (``{"model_cfg": ..., "preprocess_cfg": ...}``)
and a checkpoint, the layout of open_clip hub repos; it is loaded with
``open_clip.create_model("local-dir:<folder>")`` (``.bin`` with ``weights_only=True``) and the
tokenizer with ``open_clip.get_tokenizer("local-dir:<folder>")``. Random-init test models
build ``open_clip.CLIP(**card.config["model_cfg"])`` and use open_clip's bundled BPE tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medfm._optional import optional_import
from medfm.errors import ConfigError, MissingWeightsError
from medfm.models.adapters._common import TorchAdapter, load_into, save_module, seeded, write_json
from medfm.models.card import ModelCard

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"


class OpenClipImageTower(nn.Module):
    """(N, C, H, W) -> (N, D) projected image features, as ``model.encode_image``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.visual = model.visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)


class OpenClipAdapter(TorchAdapter):
    def __init__(self, card: ModelCard, model: Any, tokenizer: Any, model_cfg: dict, device: str) -> None:
        super().__init__(card, device)
        self.model = model
        self.tokenizer = tokenizer
        self.model_cfg = model_cfg
        self.tower = OpenClipImageTower(model)
        scale = getattr(model, "logit_scale", None)
        bias = getattr(model, "logit_bias", None)
        self.logit_scale = float(scale.detach().exp()) if scale is not None else None
        self.logit_bias = float(bias.detach()) if bias is not None else None
        self._place(model)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Strings -> projected text embeddings (N, D) float32, unnormalised."""
        self.require("text_encoder", "encode_text")
        tokens = self.tokenizer(list(texts)).to(self.device)
        with self.autocast():
            out = self.model.encode_text(tokens)
        return out.float()

    def modules_for_hash(self) -> list[torch.nn.Module]:
        return [self.model]


FOLDER_FILE: str | None = "open_clip_config.json"


def build(card: ModelCard, folder: Path | None, weights: Path | None, device: str, **options: Any) -> OpenClipAdapter:
    open_clip = optional_import("open_clip")
    if weights is not None and weights.is_dir():
        folder, weights = weights, None
    if folder is not None:
        if not (folder / CONFIG_NAME).is_file():
            raise MissingWeightsError(f"{folder}: no {CONFIG_NAME}; not an open_clip model folder for {card.id}")
        import json

        model_cfg = json.loads((folder / CONFIG_NAME).read_text())["model_cfg"]
        try:
            model = open_clip.create_model(f"local-dir:{folder}", weights_only=True)
            tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}", context_length=card.context_length)
        except OSError as exc:  # a text tower / tokenizer from another hub repo is not cached
            extra = ", ".join(card.extra_repos) or "its text tower's repo"
            raise MissingWeightsError(
                f"{folder}: open_clip could not load '{card.id}' offline ({str(exc)[:200]}). It also reads {extra} "
                f"from the Hugging Face cache: run `medfm models pull {card.id}` on a connected machine and copy "
                "both the medfm cache and the Hugging Face cache (HF_HOME) to this machine"
            ) from exc
        return OpenClipAdapter(card, model.eval(), tokenizer, model_cfg, device)
    model_cfg = card.config.get("model_cfg")
    if not model_cfg:
        raise ConfigError(f"model card {card.id}: open_clip random init needs config['model_cfg']")
    with seeded(int(card.config.get("seed", 0))):
        model = open_clip.CLIP(**model_cfg)
    if weights is not None:
        load_into(model, weights)
    ctx = card.context_length or model_cfg.get("text_cfg", {}).get("context_length", 77)
    tokenizer = open_clip.SimpleTokenizer(context_length=ctx)
    return OpenClipAdapter(card, model.eval(), tokenizer, model_cfg, device)


def save(adapter: OpenClipAdapter, folder: Path) -> None:
    pp = adapter.card.preprocess
    write_json(
        folder / CONFIG_NAME,
        {
            "model_cfg": adapter.model_cfg,
            "preprocess_cfg": {"mean": list(pp.mean), "std": list(pp.std), "size": list(pp.output_size)},
        },
    )
    save_module(adapter.model, folder / WEIGHTS_NAME)


def save_trained(module: Any, card: ModelCard, folder: Path) -> None:
    from medfm.models.base import cannot_save

    raise cannot_save(card)
