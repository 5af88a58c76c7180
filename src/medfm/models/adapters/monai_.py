"""MONAI networks as image encoders: DenseNet (121/169/custom), ResNet and SwinUNETR's Swin encoder, 2D.

Card: ``arch`` = ``densenet`` | ``densenet121`` | ``densenet169`` | ``resnet`` | ``swinunetr``; ``config["net_kwargs"]`` = the
MONAI constructor kwargs (``spatial_dims`` defaults to 2, input channels follow
``preprocess.channels``); ``config["seed"]`` seeds a random init. The tower is the network's
feature extractor followed by global average pooling: (N, C, H, W) -> (N, D).
Weights: ``model.safetensors`` in a medfm folder, or a state dict file of the tower.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medfm.errors import ConfigError, MissingWeightsError
from medfm.models.adapters._common import TorchAdapter, load_into, save_module, seeded
from medfm.models.card import ModelCard

WEIGHTS_NAME = "model.safetensors"


def _tower(card: ModelCard) -> nn.Module:
    from monai.networks import nets

    kw = dict(card.config.get("net_kwargs", {}))
    kw.setdefault("spatial_dims", 2)
    arch = (card.arch or "").lower()
    ch = card.preprocess.channels
    if arch in ("densenet", "densenet121", "densenet169"):
        cls = {"densenet": nets.DenseNet, "densenet121": nets.DenseNet121, "densenet169": nets.DenseNet169}[arch]
        kw.setdefault("in_channels", ch)
        kw.setdefault("out_channels", 1)  # classifier is dropped below
        net = cls(**kw)
        return nn.Sequential(net.features, net.class_layers.relu, net.class_layers.pool, net.class_layers.flatten)
    if arch == "resnet":
        kw.setdefault("n_input_channels", ch)
        kw["feed_forward"] = False
        return nets.ResNet(**kw)
    if arch == "swinunetr":
        kw.setdefault("in_channels", ch)
        kw.setdefault("out_channels", 1)  # decoder unused: only the Swin transformer encoder is kept
        return SwinEncoder(nets.SwinUNETR(**kw))
    raise ConfigError(
        f"model card {card.id}: monai backend arch must be densenet/densenet121/densenet169/resnet/swinunetr, "
        f"got {card.arch!r}"
    )


class SwinEncoder(nn.Module):
    """SwinUNETR's ``swinViT`` (the encoder half): deepest feature map, globally averaged."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.swinViT = net.swinViT
        self.normalize = net.normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.swinViT(x, self.normalize)[-1].flatten(2).mean(-1)


class MonaiAdapter(TorchAdapter):
    def __init__(self, card: ModelCard, tower: torch.nn.Module, device: str) -> None:
        super().__init__(card, device)
        self.tower = tower
        self._place(tower)


FOLDER_FILE: str | None = None  # any weight file (model.safetensors when medfm wrote it)


def build(card: ModelCard, folder: Path | None, weights: Path | None, device: str, **options: Any) -> MonaiAdapter:
    with seeded(int(card.config.get("seed", 0))):
        tower = _tower(card)
    if weights is not None and weights.is_dir():
        folder, weights = weights, None
    if folder is not None:
        weights = folder / WEIGHTS_NAME
        if not weights.is_file():
            raise MissingWeightsError(f"{folder}: no {WEIGHTS_NAME} for {card.id}")
    if weights is not None:
        load_into(tower, weights)
    return MonaiAdapter(card, tower, device)


def save(adapter: MonaiAdapter, folder: Path) -> None:
    assert adapter.tower is not None
    save_module(adapter.tower, folder / WEIGHTS_NAME)


def save_trained(module: torch.nn.Module, card: ModelCard, folder: Path) -> None:
    """The fine-tuned tower from ``trainable_module()``, as safetensors."""
    save_module(module, folder / WEIGHTS_NAME)
