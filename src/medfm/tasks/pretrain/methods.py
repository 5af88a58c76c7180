"""The self-supervised objectives: SimCLR, DINO and MAE, with losses and heads from lightly.

Each method is an ``nn.Module`` holding the encoder and returns its scalar loss for a batch
of raw (un-augmented) images; ``encoder`` is what is kept after pretraining.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from medfm._optional import optional_import
from medfm.errors import ConfigError

ViewFn = Callable[[torch.Tensor], torch.Tensor]


class SimCLR(nn.Module):
    """Contrastive: two views per image, NT-Xent loss on a projection head."""

    def __init__(self, encoder: nn.Module, projection_dim: int, temperature: float) -> None:
        super().__init__()
        NTXentLoss = optional_import("lightly.loss").NTXentLoss
        SimCLRProjectionHead = optional_import("lightly.models.modules").SimCLRProjectionHead

        self.encoder = encoder
        self.head = SimCLRProjectionHead(encoder.embed_dim, 512, projection_dim)
        self.criterion = NTXentLoss(temperature=temperature)

    def forward(self, x: torch.Tensor, view: ViewFn, epoch: int) -> torch.Tensor:
        z0 = self.head(self.encoder(view(x)))
        z1 = self.head(self.encoder(view(x)))
        return self.criterion(z0, z1)

    def after_step(self, progress: float) -> None:
        return None


class DINO(nn.Module):
    """Self-distillation: a momentum teacher's centred, sharpened outputs supervise the student."""

    def __init__(self, encoder: nn.Module, projection_dim: int, momentum: float, epochs: int) -> None:
        super().__init__()
        DINOLoss = optional_import("lightly.loss").DINOLoss
        DINOProjectionHead = optional_import("lightly.models.modules").DINOProjectionHead

        out_dim = 2048
        self.encoder = encoder
        self.head = DINOProjectionHead(encoder.embed_dim, 512, projection_dim, out_dim, freeze_last_layer=1)
        self.teacher_encoder = copy.deepcopy(encoder)
        self.teacher_head = DINOProjectionHead(encoder.embed_dim, 512, projection_dim, out_dim)
        self.teacher_head.load_state_dict(self.head.state_dict())
        for p in list(self.teacher_encoder.parameters()) + list(self.teacher_head.parameters()):
            p.requires_grad = False
        self.criterion = DINOLoss(output_dim=out_dim, warmup_teacher_temp_epochs=max(1, epochs // 10))
        self.base_momentum = momentum

    def forward(self, x: torch.Tensor, view: ViewFn, epoch: int) -> torch.Tensor:
        views = [view(x), view(x)]
        with torch.no_grad():
            teacher = [self.teacher_head(self.teacher_encoder(v)) for v in views]
        student = [self.head(self.encoder(v)) for v in views]
        return self.criterion(teacher, student, epoch=epoch)

    def after_step(self, progress: float) -> None:
        """EMA update of the teacher; momentum follows a cosine schedule to 1."""
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule

        m = cosine_schedule(int(progress * 1000), 1000, self.base_momentum, 1.0)
        update_momentum(self.encoder, self.teacher_encoder, m)
        update_momentum(self.head, self.teacher_head, m)


class MAE(nn.Module):
    """Masked autoencoding (2D ViT): reconstruct the pixels of masked patches (normalised MSE)."""

    def __init__(self, encoder: nn.Module, mask_ratio: float) -> None:
        super().__init__()
        modules = optional_import("lightly.models.modules")

        vit = encoder
        self.encoder = encoder
        self.backbone = modules.MaskedVisionTransformerTIMM(vit=vit)
        self.patch = vit.patch_embed.patch_size[0]
        self.sequence_length = self.backbone.sequence_length
        decoder_dim = 128
        # lightly's MAE recipe: project encoder tokens to the decoder width, decode the full
        # sequence (mask tokens at the masked places), predict the pixels of each patch
        self.decoder_embed = nn.Linear(vit.embed_dim, decoder_dim)
        self.decoder = modules.MaskedVisionTransformerDecoderTIMM(
            num_patches=vit.patch_embed.num_patches, embed_dim=decoder_dim, depth=2, num_heads=4,
        )
        self.decoder_pred = nn.Linear(decoder_dim, self.patch**2 * vit.patch_embed.proj.in_channels)
        self.mask_ratio = mask_ratio

    def forward(self, x: torch.Tensor, view: ViewFn, epoch: int) -> torch.Tensor:
        from lightly.models import utils

        images = view(x)
        b = images.shape[0]
        idx_keep, idx_mask = utils.random_token_mask(
            size=(b, self.sequence_length), mask_ratio=self.mask_ratio, device=images.device
        )
        encoded = self.decoder_embed(self.backbone.encode(images=images, idx_keep=idx_keep))
        batch = utils.repeat_token(self.decoder.mask_token, (b, self.sequence_length)).to(encoded.dtype)
        batch = utils.set_at_index(batch, idx_keep, encoded)
        decoded = self.decoder(batch)  # adds the positional embedding, then the blocks and norm
        pred = self.decoder_pred(utils.get_at_index(decoded, idx_mask))
        patches = utils.patchify(images, self.patch)
        target = utils.get_at_index(patches, idx_mask - 1)  # idx includes the class token
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
        return ((pred - target) ** 2).mean()

    def after_step(self, progress: float) -> None:
        return None


def build_method(name: str, encoder: nn.Module, arch: str, ndim: int, cfg) -> nn.Module:  # noqa: ANN001
    """Wrap ``encoder`` in the objective ``name``; ConfigError where the pair does not fit."""
    if name == "simclr":
        return SimCLR(encoder, cfg.projection_dim, cfg.temperature)
    if name == "dino":
        return DINO(encoder, cfg.projection_dim, cfg.momentum, cfg.epochs)
    if name == "mae":
        if not arch.startswith("vit") or ndim != 2:
            raise ConfigError(f"method 'mae' needs a 2D ViT encoder (vit-tiny or vit-small), got arch '{arch}' on {ndim}D images")
        return MAE(encoder, cfg.mask_ratio)
    raise ConfigError(f"unknown pretraining method '{name}'")
