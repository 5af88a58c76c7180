"""Feature distillation: train a small native student to reproduce a teacher's embeddings.

Targets are the teacher's embeddings of each image and of its horizontal mirror (computed
once), standardised per dimension; the student (plus a linear projector used only in
training) minimises MSE + (1 - cosine). The epoch with the lowest loss on held-out images is
kept. No label is read.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medfm._config import to_dict
from medfm._paths import atomic_write_text
from medfm._progress import track
from medfm._runtime import autocast_dtype, default_device
from medfm.errors import ConfigError, TrainingDivergedError
from medfm.models.base import ModelAdapter
from medfm.models.card import ModelCard
from medfm.models.native import build_native_encoder, native_card, save_native_model
from medfm.tasks.pretrain.config import DistillConfig
from medfm.tasks.pretrain.trainer import check_images, resize_to, to_unit


@dataclass
class DistillResult:
    folder: Path
    card: ModelCard
    train_losses: list[float]
    val_losses: list[float]
    best_epoch: int
    seconds: float
    stopped: str


def teacher_targets(teacher: ModelAdapter, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Teacher embeddings (N, D) of the images and of their horizontal mirrors."""
    from medfm.models.embed import embed_arrays

    plain = embed_arrays(teacher, images, batch_size=batch_size)
    mirrored = embed_arrays(teacher, np.ascontiguousarray(images[..., ::-1]), batch_size=batch_size)
    return plain, mirrored


def distill(
    teacher: ModelAdapter,
    images: np.ndarray,
    cfg: DistillConfig,
    out: str | Path,
    model_id: str = "distilled/student",
    source: str = "images",
    targets: tuple[np.ndarray, np.ndarray] | None = None,
    device: str | None = None,
    show_progress: bool = True,
) -> DistillResult:
    """Distil ``teacher`` into ``cfg.student`` on ``images`` (N, C, H, W); save to ``out/student``."""
    out = Path(out)
    ndim, native = check_images(images, source)
    size = cfg.image_size or native
    device = device or default_device()
    teacher.require("image_encoder", "distillation")
    plain, mirrored = targets if targets is not None else teacher_targets(teacher, images)
    mu, sd = plain.mean(0), plain.std(0) + 1e-6
    t_plain = torch.from_numpy((plain - mu) / sd).float()
    t_mirror = torch.from_numpy((mirrored - mu) / sd).float()

    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(images))
    n_val = max(1, int(round(cfg.val_fraction * len(images))))
    val_idx, train_idx = order[:n_val], order[n_val:]
    x = _student_inputs(images, size)

    torch.manual_seed(cfg.seed)
    student = build_native_encoder(cfg.student, int(images.shape[1]), ndim, size)
    projector = nn.Linear(student.embed_dim, plain.shape[1])
    model = nn.Sequential(student, projector).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    amp = autocast_dtype(device, cfg.precision)
    dev_type = "cuda" if device.startswith("cuda") else "cpu"
    loss_fn = _distill_loss

    best = (float("inf"), -1, None)
    train_losses: list[float] = []
    val_losses: list[float] = []
    t0 = time.perf_counter()
    stopped = "epochs"
    for epoch in track(range(cfg.epochs), desc=f"distill -> {cfg.student}", unit="epoch", live=None if show_progress else False):
        if cfg.minutes is not None and time.perf_counter() - t0 > cfg.minutes * 60:
            stopped = "time budget"
            break
        total = _train_epoch(model, opt, x, t_plain, t_mirror, train_idx, cfg, epoch, device, amp)
        sched.step()
        train_losses.append(total)
        model.eval()
        with torch.inference_mode(), torch.autocast(dev_type, dtype=amp or torch.float32, enabled=amp is not None):
            vi = torch.from_numpy(val_idx)
            vloss = float(loss_fn(model(x[vi].to(device)), t_plain[vi].to(device)))
        val_losses.append(vloss)
        if vloss < best[0]:
            best = (vloss, epoch, {k: v.detach().clone() for k, v in student.state_dict().items()})
    if best[2] is None:
        raise ConfigError(f"distillation ran no epoch (time budget {cfg.minutes} min)")
    student.load_state_dict(best[2])
    seconds = time.perf_counter() - t0
    card = native_card(
        model_id, cfg.student, int(images.shape[1]), ndim, size, student.embed_dim,
        description=f"{cfg.student} distilled from {teacher.card.id} on {source} (best epoch {best[1] + 1}, unlabelled)",
        teacher=teacher.card.id, teacher_weights_hash=teacher.weights_hash,
    )
    folder = save_native_model(student, card, out / "student")
    history: dict[str, Any] = {
        "train_losses": train_losses, "val_losses": val_losses, "best_epoch": best[1] + 1,
        "config": to_dict(cfg), "teacher": teacher.card.id, "seconds": seconds, "stopped": stopped,
    }
    atomic_write_text(out / "distill.json", json.dumps(history, indent=2))
    return DistillResult(folder, card, train_losses, val_losses, best[1] + 1, seconds, stopped)


def _distill_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE plus cosine distance to the (standardised) teacher features, in fp32."""
    pred = pred.float()
    return nn.functional.mse_loss(pred, target) + (1 - nn.functional.cosine_similarity(pred, target, dim=1)).mean()


def _student_inputs(images: np.ndarray, size: int) -> torch.Tensor:
    """Images in [-1, 1] at the student's size (resized as in pretraining when it differs from native)."""
    return (resize_to(to_unit(images), size) - 0.5) / 0.5


def _train_epoch(
    model: nn.Module, opt: Any, x: torch.Tensor, t_plain: torch.Tensor, t_mirror: torch.Tensor,
    train_idx: np.ndarray, cfg: DistillConfig, epoch: int, device: str, amp: Any,
) -> float:
    """One epoch over seeded shuffled batches, half of each mirrored (with the teacher's mirrored
    features as targets); returns the mean loss; a non-finite loss stops the run."""
    dev_type = "cuda" if device.startswith("cuda") else "cpu"
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    perm = torch.from_numpy(train_idx)[torch.randperm(len(train_idx), generator=g)]
    model.train()
    total, batches = 0.0, 0
    for s in range(0, len(perm), cfg.batch_size):
        idx = perm[s:s + cfg.batch_size]
        flip = torch.rand(len(idx), generator=g) < 0.5
        xb = x[idx].clone()
        xb[flip] = xb[flip].flip(-1)
        target = torch.where(flip[:, None], t_mirror[idx], t_plain[idx]).to(device)
        with torch.autocast(dev_type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = _distill_loss(model(xb.to(device)), target)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingDivergedError(
                f"distillation loss is {value} at epoch {epoch + 1}, batch {batches + 1} "
                f"({'fp32' if amp is None else 'bf16 autocast'}, lr {cfg.lr:g}); stopped; try --precision fp32 or a lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += value
        batches += 1
    return total / max(1, batches)
