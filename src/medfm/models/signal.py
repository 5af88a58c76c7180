"""1D encoders for physiological signals: a ResNet-1D and a small transformer.

Each maps (B, C, L) float tensors (channels x time samples) to (B, embed_dim) embeddings and
carries ``embed_dim`` so the pretraining objectives (``medfm.tasks.pretrain.methods``) and the
classification heads can wrap it. ``create_signal_encoder(name, in_channels)`` builds one by
name from ``SIGNAL_ENCODERS`` (``signal/resnet1d-small``, ``signal/transformer1d-tiny``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from medfm._registry import Registry


class _Block1d(nn.Module):
    """Basic residual block: two 1D convolutions with batch norm, strided shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv1d(cin, cout, kernel, stride, pad, bias=False)
        self.bn1 = nn.BatchNorm1d(cout)
        self.conv2 = nn.Conv1d(cout, cout, kernel, 1, pad, bias=False)
        self.bn2 = nn.BatchNorm1d(cout)
        self.short = (nn.Sequential(nn.Conv1d(cin, cout, 1, stride, bias=False), nn.BatchNorm1d(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.short(x))


class ResNet1d(nn.Module):
    """ResNet for (B, C, L) signals: a stem convolution, ``len(widths)`` stages of ``depth``
    residual blocks (each stage after the first halves L), global average pooling."""

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (32, 64, 128), depth: int = 2,
                 kernel: int = 7) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(in_channels, widths[0], 15, 2, 7, bias=False),
                                  nn.BatchNorm1d(widths[0]), nn.ReLU())
        blocks: list[nn.Module] = []
        cin = widths[0]
        for i, w in enumerate(widths):
            for j in range(depth):
                blocks.append(_Block1d(cin, w, 2 if (j == 0 and i > 0) else 1, kernel))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.embed_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)).mean(dim=-1)


class Transformer1d(nn.Module):
    """Small transformer for (B, C, L) signals: non-overlapping patches of ``patch`` samples
    embedded linearly, a learned [CLS] token and sinusoid-free learned positions (up to
    ``max_len`` samples), ``depth`` pre-norm encoder layers; the [CLS] output is the embedding."""

    def __init__(self, in_channels: int = 1, patch: int = 12, dim: int = 64, depth: int = 3, heads: int = 4,
                 max_len: int = 4096) -> None:
        super().__init__()
        self.patch = patch
        self.embed = nn.Conv1d(in_channels, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, max_len // patch + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 4, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.embed_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).transpose(1, 2)  # (B, L / patch, dim)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1)
        tokens = tokens + self.pos[:, : tokens.shape[1]]
        return self.norm(self.encoder(tokens)[:, 0])


@dataclass(frozen=True)
class SignalEncoderCard:
    """A registered 1D encoder: ``id``, what it is, and its builder ``build(in_channels) -> nn.Module``."""

    id: str
    description: str
    build: Callable[[int], nn.Module]


SIGNAL_ENCODERS: Registry[SignalEncoderCard] = Registry("signal encoder")
for _card in (
    SignalEncoderCard("signal/resnet1d-small", "ResNet-1D, 3 stages (32, 64, 128 channels) x 2 blocks, kernel 7",
                      lambda c: ResNet1d(c)),
    SignalEncoderCard("signal/transformer1d-tiny", "transformer, 12-sample patches, 3 layers, width 64, 4 heads",
                      lambda c: Transformer1d(c)),
):
    SIGNAL_ENCODERS.register(_card.id, _card)


def create_signal_encoder(name: str, in_channels: int = 1, seed: int | None = None) -> nn.Module:
    """Build the registered encoder ``name`` (random init, seeded when ``seed`` is given)."""
    card = SIGNAL_ENCODERS.get(name)
    if seed is not None:
        torch.manual_seed(seed)
    return card.build(in_channels)


def list_signal_encoders() -> list[str]:
    """Ids of the registered 1D encoders."""
    return SIGNAL_ENCODERS.names()
