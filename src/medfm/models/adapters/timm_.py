"""timm image encoders: ``timm.create_model(card.arch, pretrained=False, num_classes=0, ...)``.

Card fields: ``arch`` = timm model name; ``config["timm_kwargs"]`` = extra constructor kwargs
(e.g. ``img_size``, ``depth`` for tiny test variants, ``init_values`` for UNI);
``config["seed"]`` seeds a random init. Embedding = timm's pooled features (``num_classes=0``).
Weights: a medfm folder's ``model.safetensors`` (strict), or any timm-compatible file given as
``weights=`` (loaded through ``pretrained_cfg_overlay=dict(file=...)`` so timm filters heads and
resizes position embeddings; ``.bin``/``.pth`` with ``weights_only=True``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfm._optional import optional_import
from medfm.errors import ConfigError
from medfm.models.adapters._common import (
    TorchAdapter,
    load_into,
    save_module,
    seeded,
    weight_files,
)
from medfm.models.card import ModelCard

if TYPE_CHECKING:
    import torch

WEIGHTS_NAME = "model.safetensors"


class TimmAdapter(TorchAdapter):
    """Image encoder around a timm model (``tower`` is the timm model itself)."""

    def __init__(self, card: ModelCard, model: torch.nn.Module, device: str) -> None:
        super().__init__(card, device)
        self.tower = model
        self._place(model)


def _kwargs(card: ModelCard) -> dict:
    kw = dict(card.config.get("timm_kwargs", {}))
    kw.setdefault("num_classes", 0)
    return kw


FOLDER_FILE: str | None = None  # any weight file (model.safetensors when medfm wrote it)


def build(card: ModelCard, folder: Path | None, weights: Path | None, device: str, **options: Any) -> TimmAdapter:
    timm = optional_import("timm")
    if not card.arch:
        raise ConfigError(f"model card {card.id}: timm backend needs 'arch' (a timm model name)")
    kw = _kwargs(card)
    if weights is not None and weights.is_file():
        model = timm.create_model(card.arch, pretrained=True, pretrained_cfg_overlay={"file": str(weights)}, **kw)
        return TimmAdapter(card, model, device)
    with seeded(int(card.config.get("seed", 0))):
        model = timm.create_model(card.arch, pretrained=False, **kw)
    if folder is not None:
        own = folder / WEIGHTS_NAME
        files = [own] if own.is_file() else weight_files(folder)
        if not files:
            from medfm.errors import MissingWeightsError

            raise MissingWeightsError(f"{folder}: no weight file (.safetensors/.bin/.pth) for {card.id}")
        if own.is_file():
            load_into(model, own)
        else:
            model = timm.create_model(card.arch, pretrained=True, pretrained_cfg_overlay={"file": str(files[0])}, **kw)
    return TimmAdapter(card, model, device)


def save(adapter: TimmAdapter, folder: Path) -> None:
    assert adapter.tower is not None
    save_module(adapter.tower, folder / WEIGHTS_NAME)


def save_trained(module: torch.nn.Module, card: ModelCard, folder: Path) -> None:
    """The fine-tuned tower from ``trainable_module()``, as safetensors."""
    save_module(module, folder / WEIGHTS_NAME)
