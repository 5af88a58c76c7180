"""Pretraining loop: epochs over unlabelled images, atomic checkpoints, exact resume.

Every random choice in epoch ``e`` (shuffling, views, masks) is seeded from (seed, e), so a
run resumed from the checkpoint after epoch ``e`` continues as the uninterrupted run would.
Labels never enter: the loop only sees an image array.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medfm._config import to_dict
from medfm._paths import atomic_path, atomic_write_text
from medfm._progress import track
from medfm._runtime import autocast_dtype, default_device
from medfm.errors import ConfigError, InputError, TrainingDivergedError
from medfm.models.card import ModelCard
from medfm.models.native import build_native_encoder, native_card, save_native_model
from medfm.tasks.pretrain.config import PretrainConfig
from medfm.tasks.pretrain.methods import build_method
from medfm.tasks.pretrain.views import build_view_transform

CHECKPOINT = "checkpoint.pt"
ENCODER_DIR = "encoder"


@dataclass
class PretrainResult:
    """What a pretraining run produced: the encoder folder (usable as ``--model PATH``)."""

    folder: Path
    card: ModelCard
    losses: list[float]
    epochs_done: int
    seconds: float
    stopped: str
    resumed_from: int = 0
    history: dict[str, Any] = field(default_factory=dict)


def check_images(images: np.ndarray, source: str) -> tuple[int, int]:
    """Validate an unlabelled image array (N, C, H, W) or (N, C, D, H, W) -> (ndim, size)."""
    if not isinstance(images, np.ndarray) or images.ndim not in (4, 5):
        shape = getattr(images, "shape", None)
        raise InputError(f"{source}: expected images (N, C, H, W) or (N, C, D, H, W), got shape {shape}")
    if len(images) < 2:
        raise InputError(f"{source}: needs at least 2 images for self-supervised training, got {len(images)}")
    spatial = images.shape[2:]
    if len(set(spatial)) != 1:
        raise InputError(f"{source}: images must be square (cubic in 3D), got spatial shape {spatial}")
    return images.ndim - 2, int(spatial[0])


def to_unit(images: np.ndarray) -> torch.Tensor:
    """uint8 -> [0, 1] by /255; other dtypes by the array's global min-max."""
    t = torch.from_numpy(np.ascontiguousarray(images)).float()
    if images.dtype == np.uint8:
        return t / 255.0
    lo, hi = float(t.min()), float(t.max())
    return (t - lo) / (hi - lo) if hi > lo else torch.zeros_like(t)


def resize_to(data: torch.Tensor, size: int, chunk: int = 64) -> torch.Tensor:
    """(N, C, *spatial) -> (N, C, size, ...) by (bi/tri)linear interpolation, as the saved encoder's
    ``preprocess`` resizes at inference; a no-op at the native size. Chunked to bound memory."""
    nd = data.ndim - 2
    if tuple(data.shape[2:]) == (size,) * nd:
        return data
    import torch.nn.functional as F

    mode = "bilinear" if nd == 2 else "trilinear"
    return torch.cat([F.interpolate(data[i:i + chunk], size=(size,) * nd, mode=mode, align_corners=False)
                      for i in range(0, len(data), chunk)])


def make_view_fn(transform: Any, size: int, ndim: int) -> Any:
    """Batch (N, C, ...) in [0, 1] -> augmented, normalised batch ((x - 0.5) / 0.5)."""

    def view(x: torch.Tensor) -> torch.Tensor:
        from monai.data import get_track_meta, set_track_meta

        # fp32 outside autocast (MONAI's resamplers take no bf16); plain tensors, no MetaTensor
        # bookkeeping (3x faster per image)
        tracking = get_track_meta()
        set_track_meta(False)
        try:
            with torch.autocast(x.device.type, enabled=False):
                out = torch.stack([torch.as_tensor(transform(img.cpu())) for img in x]).to(x.device)
        finally:
            set_track_meta(tracking)
        return ((out - 0.5) / 0.5).clamp(-1.0, 1.0)

    return view


def _lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def pretrain(
    images: np.ndarray,
    cfg: PretrainConfig,
    out: str | Path,
    model_id: str = "pretrained/encoder",
    source: str = "images",
    device: str | None = None,
    show_progress: bool = True,
) -> PretrainResult:
    """Pretrain ``cfg.arch`` with ``cfg.method`` on ``images``; checkpoints go to ``out``.

    If ``out/checkpoint.pt`` exists (an interrupted run with the same config) training resumes
    from it. The encoder is saved to ``out/encoder`` (safetensors + model card) only at the end.
    """
    out = Path(out)
    ndim, native = check_images(images, source)
    size = cfg.image_size or native
    device = device or default_device()
    in_ch = int(images.shape[1])
    torch.manual_seed(cfg.seed)
    encoder = build_native_encoder(cfg.arch, in_ch, ndim, size)
    method = build_method(cfg.method, encoder, cfg.arch, ndim, cfg).to(device)
    params = [p for p in method.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    data = resize_to(to_unit(images), size)
    n = len(data)
    batch = min(cfg.batch_size, n)
    steps_per_epoch = max(1, n // batch)  # drop the last incomplete batch (contrastive losses)
    total_steps = steps_per_epoch * cfg.epochs
    transform = build_view_transform(ndim, size)
    view = make_view_fn(transform, size, ndim)

    ckpt_path = out / CHECKPOINT
    losses, start_epoch, elapsed_before = _resume(ckpt_path, cfg, method, opt)
    resumed_from = start_epoch
    amp = autocast_dtype(device, cfg.precision)
    epoch_run = _Epoch(method, opt, data, view, transform, batch, steps_per_epoch, total_steps, cfg, device, amp)
    t0 = time.perf_counter()
    stopped = "epochs"
    epochs = range(start_epoch, cfg.epochs)
    iterator = track(epochs, total=len(epochs), desc=f"pretrain {cfg.method}/{cfg.arch}", unit="epoch", live=None if show_progress else False)
    for epoch in iterator:
        if cfg.minutes is not None and elapsed_before + time.perf_counter() - t0 > cfg.minutes * 60:
            stopped = "time budget"
            break
        losses.append(epoch_run.run(epoch))
        done = epoch + 1
        if done % cfg.checkpoint_every == 0 or done == cfg.epochs:
            _save_checkpoint(ckpt_path, done, method, opt, losses, elapsed_before + time.perf_counter() - t0, cfg)
    seconds = elapsed_before + time.perf_counter() - t0
    if not losses:
        raise ConfigError(f"pretraining ran no epoch (time budget {cfg.minutes} min already spent in {ckpt_path})")
    card = native_card(
        model_id, cfg.arch, in_ch, ndim, size, encoder.embed_dim,
        description=f"{cfg.method} pretraining of {cfg.arch} on {source} ({len(losses)} epochs, unlabelled)",
        method=cfg.method, epochs_done=len(losses),
    )
    folder = save_native_model(method.encoder, card, out / ENCODER_DIR)
    history = {"losses": losses, "config": to_dict(cfg), "seconds": seconds, "stopped": stopped, "resumed_from": resumed_from}
    atomic_write_text(out / "pretrain.json", json.dumps(history, indent=2))
    return PretrainResult(folder, card, losses, len(losses), seconds, stopped, resumed_from, history)


def _resume(ckpt_path: Path, cfg: PretrainConfig, method: Any, opt: Any) -> tuple[list[float], int, float]:
    """(losses, next epoch, seconds already spent) from ``ckpt_path``, or a fresh start when absent."""
    if not ckpt_path.is_file():
        return [], 0, 0.0
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    if ckpt.get("config") != json.dumps(to_dict(cfg), sort_keys=True):
        raise ConfigError(f"{ckpt_path}: checkpoint was made with a different configuration; use a new --out folder")
    method.load_state_dict(ckpt["state"])
    opt.load_state_dict(ckpt["optimizer"])
    return list(ckpt["losses"]), int(ckpt["epoch"]), float(ckpt["elapsed"])


def _save_checkpoint(path: Path, done: int, method: Any, opt: Any, losses: list[float], elapsed: float, cfg: PretrainConfig) -> None:
    """Everything a resumed run needs, in one file written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(
            {
                "epoch": done, "state": method.state_dict(), "optimizer": opt.state_dict(), "losses": losses,
                "elapsed": elapsed, "config": json.dumps(to_dict(cfg), sort_keys=True),
            },
            tmp,
        )


@dataclass
class _Epoch:
    """One pretraining epoch: seeded order and views, warm-up + cosine LR; a non-finite loss stops the run."""

    method: Any
    opt: Any
    data: torch.Tensor
    view: Any
    transform: Any
    batch: int
    steps_per_epoch: int
    total_steps: int
    cfg: PretrainConfig
    device: str
    amp: Any

    def run(self, epoch: int) -> float:
        """Train one epoch; returns its mean loss."""
        cfg, spe = self.cfg, self.steps_per_epoch
        seed = cfg.seed * 100_003 + epoch
        torch.manual_seed(seed)
        self.transform.set_random_state(seed=seed % (2**32))
        order = torch.from_numpy(np.random.default_rng(seed).permutation(len(self.data)))
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        self.method.train()
        total = 0.0
        for s in range(spe):
            step = epoch * spe + s
            for g in self.opt.param_groups:
                g["lr"] = _lr_at(step, self.total_steps, cfg.lr, warmup=min(10 * spe, self.total_steps // 10 + 1))
            x = self.data[order[s * self.batch:(s + 1) * self.batch]].to(self.device)
            with torch.autocast(device_type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                loss = self.method(x, self.view, epoch)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingDivergedError(
                    f"{cfg.method} pretraining loss is {value} at epoch {epoch + 1}, step {s + 1} "
                    f"({'fp32' if self.amp is None else 'bf16 autocast'}, lr {cfg.lr:g}); stopped; "
                    "try --precision fp32 or a lower --lr")
            self.opt.zero_grad(set_to_none=True)
            loss.float().backward()
            self.opt.step()
            self.method.after_step((step + 1) / self.total_steps)
            total += value
        return total / spe
