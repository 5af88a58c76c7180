"""medfm's own encoders (trained by ``medfm pretrain`` / ``medfm distill``) and their adapter.

A native model folder holds ``model_card.json`` (a ModelCard, backend ``native``) and
``model.safetensors``; ``arch`` + ``config`` in the card rebuild the architecture exactly.
Architectures: ``resnet18`` (timm, 2D; small-image stem below 64 px as in MedMNIST's 28-px
ResNet), ``resnet18`` 3D (MONAI), ``vit-tiny`` / ``vit-small`` (timm 2D, MONAI 3D).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medfm._paths import atomic_path, file_hash
from medfm.errors import ConfigError, InputError, MissingWeightsError
from medfm.models.base import ModelAdapter
from medfm.models.card import ModelCard, Preprocess, card_from_dict, card_to_dict

if TYPE_CHECKING:
    import torch

NATIVE_ARCHS = ("resnet18", "vit-tiny", "vit-small")
_VIT_WIDTH = {"vit-tiny": (192, 3), "vit-small": (384, 6)}


def _patch_size(image_size: int) -> int:
    """ViT patch of 2D images (and of 3D ViTs saved before cards recorded ``patch_size``)."""
    return 4 if image_size <= 64 else (8 if image_size <= 128 else 16)


def _patch_size_3d(image_size: int) -> int:
    """ViT patch of 3D volumes: the smallest of 4 / 8 / 16 / 32 that divides the size and leaves at
    most 8^3 = 512 tokens (the 2D rule's patch 4 makes 4,096 tokens of a 64^3 volume, whose
    attention maps alone need ~25 GB per layer at batch 128)."""
    for patch in (4, 8, 16, 32):
        if image_size % patch == 0 and (image_size // patch) ** 3 <= 512:
            return patch
    return _patch_size(image_size)


def build_native_encoder(
    arch: str, in_channels: int, ndim: int, image_size: int, patch_size: int | None = None,
) -> torch.nn.Module:
    """Build an encoder mapping (N, C, H, W) or (N, C, D, H, W) -> (N, embed_dim).

    The module has an ``embed_dim`` attribute (ViTs also ``patch_size``, which
    ``save_native_model`` writes into the card; None: the default for the size and ndim).
    Raises ConfigError for unknown combinations.
    """
    from torch import nn

    if arch not in NATIVE_ARCHS:
        raise ConfigError(f"unknown architecture '{arch}'; choose one of {', '.join(NATIVE_ARCHS)}")
    if ndim not in (2, 3):
        raise ConfigError(f"architecture '{arch}' takes 2D or 3D images, got ndim={ndim}")
    if arch == "resnet18" and ndim == 2:
        import timm

        net = timm.create_model("resnet18", pretrained=False, num_classes=0, in_chans=in_channels)
        if image_size < 64:  # keep spatial resolution on tiny images (3x3 stride-1 stem, no max-pool)
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        net.embed_dim = net.num_features
        return net
    if arch == "resnet18":
        from monai.networks.nets import resnet18

        small = image_size < 64  # tiny volumes: 3x3x3 stride-2 stem, no max-pool (28^3 -> 14^3)
        net = resnet18(
            spatial_dims=3, n_input_channels=in_channels, num_classes=1, feed_forward=False,
            conv1_t_size=3 if small else 7, conv1_t_stride=2, no_max_pool=small,
        )
        net.embed_dim = 512
        return net
    width, heads = _VIT_WIDTH[arch]
    patch = patch_size or (_patch_size(image_size) if ndim == 2 else _patch_size_3d(image_size))
    if image_size % patch:
        raise ConfigError(f"{arch}: image size {image_size} is not a multiple of the patch size {patch}")
    if ndim == 2:
        from timm.models.vision_transformer import VisionTransformer

        net = VisionTransformer(
            img_size=image_size, patch_size=patch, in_chans=in_channels, num_classes=0,
            embed_dim=width, depth=12, num_heads=heads, global_pool="avg", class_token=True,
        )
        net.embed_dim, net.patch_size = width, patch
        return net
    from monai.networks.nets import ViT

    class MeanTokenViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vit = ViT(
                in_channels=in_channels, img_size=(image_size,) * 3, patch_size=patch, hidden_size=width,
                mlp_dim=width * 4, num_layers=12, num_heads=heads, classification=False, spatial_dims=3,
            )
            self.embed_dim, self.patch_size = width, patch

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            tokens, _ = self.vit(x)
            return tokens.mean(dim=1)

    return MeanTokenViT()


def native_card(
    model_id: str, arch: str, in_channels: int, ndim: int, image_size: int, embed_dim: int,
    description: str = "", **config: Any,
) -> ModelCard:
    """Card of a native encoder: inputs scaled to [0, 1] then (x - 0.5) / 0.5."""
    return ModelCard(
        id=model_id, backend="native", source=None, license="same as the training data",
        capabilities=frozenset({"image_encoder"}),
        preprocess=Preprocess(
            size=(image_size, image_size), channels=in_channels, mean=(0.5,) * in_channels,
            std=(0.5,) * in_channels, resize="resize", interpolation="bilinear",
        ),
        embed_dim=embed_dim, arch=arch,
        config={"in_channels": in_channels, "ndim": ndim, "image_size": image_size, **config},
        description=description,
    )


def save_native_model(module: torch.nn.Module, card: ModelCard, folder: str | Path) -> Path:
    """Write ``model.safetensors`` then ``model_card.json`` (the card last: a folder with a
    card is complete). Returns the folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if getattr(module, "patch_size", None) is not None and "patch_size" not in card.config:
        card = dataclasses.replace(card, config={**card.config, "patch_size": int(module.patch_size)})
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    with atomic_path(folder / "model_card.json") as tmp:
        tmp.write_text(json.dumps(card_to_dict(card), indent=2))
    return folder


def read_card(folder: str | Path) -> ModelCard:
    path = Path(folder) / "model_card.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MissingWeightsError(f"{path}: cannot read model card ({exc})") from exc
    return card_from_dict(data, where=str(path))


class NativeAdapter(ModelAdapter):
    """Image encoder adapter for native models; takes 2D (C, H, W) or 3D (C, D, H, W) arrays."""

    def __init__(self, card: ModelCard, module: torch.nn.Module, device: str = "cpu", precision: str = "auto") -> None:
        super().__init__(card, device)
        self.precision = precision
        self.module = module.to(device).eval()
        self.ndim = int(card.config.get("ndim", 2))

    def preprocess(self, images: Any, modality: str | None = None) -> torch.Tensor:
        """Intensity by the card's rule (``medfm.models.transforms.to_unit``); resize; (x - mean) / std."""
        import torch
        import torch.nn.functional as F

        from medfm.models.transforms import minmax, to_unit

        pre = self.card.preprocess
        size = int(self.card.config.get("image_size", pre.size[0]))
        out = []
        for i, img in enumerate(images):
            a = np.asarray(img)
            if a.ndim == self.ndim:
                a = a[None]
            if a.ndim != self.ndim + 1:
                raise InputError(
                    f"image {i}: shape {a.shape} does not fit model '{self.card.id}', which takes "
                    f"{self.ndim}D images with {pre.channels} channel(s)"
                )
            if a.shape[0] != pre.channels:
                if pre.channels == 1 and a.shape[0] == 3:
                    a = a.mean(axis=0, keepdims=True)
                elif pre.channels == 3 and a.shape[0] == 1:
                    a = np.repeat(a, 3, axis=0)
                else:
                    raise InputError(f"image {i}: {a.shape[0]} channels, model '{self.card.id}' takes {pre.channels}")
            t = to_unit(a, pre, modality)
            if tuple(t.shape[1:]) != (size,) * self.ndim:
                mode = "bilinear" if self.ndim == 2 else "trilinear"
                t = F.interpolate(t[None], size=(size,) * self.ndim, mode=mode, align_corners=False)[0]
            out.append(minmax(t) if pre.intensity == "minmax" else t)
        batch = torch.stack(out)
        shape = (1, -1) + (1,) * self.ndim
        mean = torch.tensor(pre.mean).view(shape)
        std = torch.tensor(pre.std).view(shape)
        return (batch - mean) / std

    def encode_image(self, batch: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.module(batch.to(self.device)).float()

    def trainable_module(self) -> torch.nn.Module:
        return self.module

    def modules_for_hash(self) -> list[torch.nn.Module]:
        return [self.module]


FOLDER_FILE: str | None = "model.safetensors"


def build(card: ModelCard, folder: Path | None, weights: Path | None, device: str, **options: Any) -> NativeAdapter:
    """Backend entry point of ``medfm.models.create_model`` for ``backend: native`` cards."""
    from safetensors.torch import load_file

    c = card.config
    # cards written before ``patch_size`` was recorded used the 2D rule in 3D too
    patch = int(c.get("patch_size") or _patch_size(int(c["image_size"])))
    module = build_native_encoder(card.arch or "", int(c["in_channels"]), int(c["ndim"]), int(c["image_size"]), patch)
    wfile = weights if weights is not None else (folder / "model.safetensors" if folder is not None else None)
    if wfile is None or not wfile.is_file():
        raise MissingWeightsError(f"{folder or card.id}: model.safetensors is missing (an incomplete or interrupted save?)")
    try:
        module.load_state_dict(load_file(str(wfile)))
    except RuntimeError as exc:
        raise InputError(f"{wfile}: weights do not match architecture '{card.arch}' ({str(exc)[:200]})") from exc
    return NativeAdapter(card, module, device=device)


def save(adapter: NativeAdapter, folder: Path) -> None:
    from medfm.models.adapters._common import save_module

    save_module(adapter.module, folder / "model.safetensors")


def save_trained(module: torch.nn.Module, card: ModelCard, folder: Path) -> None:
    """A fine-tuned native encoder (``trainable_module()``), as safetensors."""
    from medfm.models.adapters._common import save_module

    save_module(module, folder / "model.safetensors")


def load_native_model(folder: str | Path, device: str = "cpu", precision: str = "auto") -> NativeAdapter:
    """Rebuild a native encoder from its folder (same as ``create_model(folder)``)."""
    folder = Path(folder)
    adapter = build(read_card(folder), folder, None, device)
    adapter.precision = precision
    adapter.weights_hash = file_hash(folder / "model.safetensors")
    adapter.weights_source = str(folder)
    return adapter
