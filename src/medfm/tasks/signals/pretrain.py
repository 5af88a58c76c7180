"""Self-supervised pretraining of a 1D encoder on unlabelled signal windows.

Reuses ``medfm.tasks.pretrain.methods`` (SimCLR, DINO: they only need an encoder with
``embed_dim`` and a view function) with the 1D views of ``medfm.tasks.signals.augment``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medfm.errors import ConfigError, InputError
from medfm.tasks.signals.augment import SignalViewConfig, random_view

METHODS = ("simclr", "dino")


@dataclass
class SignalPretrainConfig:
    """``method`` simclr or dino; AdamW with cosine decay for ``epochs`` over the windows in
    batches of ``batch_size``; ``views`` the augmentation strengths."""

    method: str = "simclr"
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    projection_dim: int = 64
    temperature: float = 0.2
    momentum: float = 0.99
    views: SignalViewConfig = field(default_factory=SignalViewConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"signal pretraining: method must be one of {METHODS}, got '{self.method}'")
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0:
            raise ConfigError("signal pretraining: epochs >= 1, batch_size >= 2 and lr > 0 required")


def pretrain_signal_encoder(encoder: Any, windows: np.ndarray, cfg: SignalPretrainConfig, seed: int = 0,
                            progress: bool = False) -> dict[str, Any]:
    """Train ``encoder`` (B, C, L) -> (B, D) in place on ``windows`` (N, C, L) float32 with
    ``cfg.method``; returns {"losses": per-epoch mean loss, "seconds"}."""
    import sys

    import torch

    from medfm.tasks.pretrain.methods import DINO, SimCLR

    x = torch.as_tensor(np.asarray(windows, dtype=np.float32))
    if x.ndim != 3 or len(x) < 2:
        raise InputError(f"signal pretraining: windows must be (N >= 2, C, L), got shape {tuple(x.shape)}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if cfg.method == "simclr":
        method = SimCLR(encoder, cfg.projection_dim, cfg.temperature)
    else:
        method = DINO(encoder, cfg.projection_dim, cfg.momentum, cfg.epochs)

    def view(batch: torch.Tensor) -> torch.Tensor:
        return random_view(batch, cfg.views, gen)

    params = [p for p in method.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(x) // cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / total, 1.0))))
    losses: list[float] = []
    t0 = time.perf_counter()
    step = 0
    method.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(x), generator=gen)
        run = 0.0
        for i in range(steps_per_epoch):
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            loss = method(x[idx], view, epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            method.after_step(step / total)
            run += float(loss.detach())
        losses.append(run / steps_per_epoch)
        if progress:
            print(f"pretrain {cfg.method}: epoch {epoch + 1}/{cfg.epochs} loss {losses[-1]:.4f} "
                  f"({time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
    encoder.eval()
    return {"losses": [round(v, 5) for v in losses], "seconds": round(time.perf_counter() - t0, 2)}
