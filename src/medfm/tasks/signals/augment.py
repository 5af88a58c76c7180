"""1D augmentations for self-supervised pretraining on signal windows (B, C, L) tensors.

One random view = random crop (kept length ``crop`` of L, resized back to L), amplitude scaling,
Gaussian noise and a low-frequency baseline wander (a random sinusoid below 0.5 Hz plus offset),
each drawn per sample; the ECG-specific pieces follow the usual practice of contrastive ECG
pretraining (e.g. CLOCS, Kiyasseh et al. 2021).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class SignalViewConfig:
    """Strengths of the view: ``crop`` (min share of L kept), ``scale`` (amplitude factor in
    [1 - scale, 1 + scale]), ``noise`` (std of Gaussian noise, in units of the standardised
    signal), ``wander`` (amplitude of the baseline sinusoid), ``fs`` (Hz, for the wander's
    frequency)."""

    crop: float = 0.8
    scale: float = 0.2
    noise: float = 0.05
    wander: float = 0.3
    fs: float = 120.0


def random_view(x: torch.Tensor, cfg: SignalViewConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """One augmented view of (B, C, L) ``x`` (same shape and dtype)."""
    b, c, n = x.shape
    g = generator
    dev = x.device
    # crop a random window of length in [crop * L, L] and resize it back to L
    keep = (cfg.crop + (1 - cfg.crop) * torch.rand(b, generator=g)).clamp(max=1.0)
    start = torch.rand(b, generator=g) * (1 - keep)
    grid = start[:, None] + keep[:, None] * torch.linspace(0, 1, n)[None, :]  # (B, L) in [0, 1]
    grid = (grid * 2 - 1).to(dev)
    sample_grid = torch.stack([grid, torch.zeros_like(grid)], dim=-1)[:, None]  # (B, 1, L, 2)
    out = F.grid_sample(x[:, :, None, :], sample_grid, align_corners=True).squeeze(2)
    scale = 1 + cfg.scale * (2 * torch.rand(b, 1, 1, generator=g) - 1)
    out = out * scale.to(dev)
    out = out + cfg.noise * torch.randn(out.shape, generator=g).to(dev)
    t = torch.arange(n, dtype=torch.float32) / cfg.fs
    freq = 0.05 + 0.45 * torch.rand(b, 1, generator=g)
    phase = 2 * math.pi * torch.rand(b, 1, generator=g)
    amp = cfg.wander * torch.rand(b, 1, generator=g)
    offset = cfg.wander * (2 * torch.rand(b, 1, generator=g) - 1)
    wander = amp * torch.sin(2 * math.pi * freq * t[None, :] + phase) + offset
    return out + wander[:, None, :].to(dev)
