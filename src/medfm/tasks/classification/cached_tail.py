"""Cache the frozen trunk, train the tail: partial fine-tuning / LoRA of the last stage of a
large encoder on activations computed once, so each epoch costs only the tail's forward/backward.

``cache_activations`` runs a frozen trunk over images in resumable chunks (one ``.npy`` per
chunk, joined when complete); ``train_tail`` trains ``tail`` (cached activation -> embedding)
plus a linear head with AdamW and early stopping on the validation AUROC, restoring the best
weights. Used by ``benchmarks/pretrained_finetune3d.py`` (Merlin's CT encoder: trunk = stem +
layer1..3, tail = layer4 + GAP).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medfm.errors import ConfigError


def cache_activations(trunk: Callable[[torch.Tensor], torch.Tensor], images: Any,
                      preprocess: Callable[[Any], torch.Tensor], folder: Path, chunk: int = 32,
                      batch_size: int = 8, progress: Callable[[str], None] | None = None) -> np.ndarray:
    """(N, ...) float32 trunk outputs of ``images`` (no grad), cached under ``folder``:
    ``chunk-XXXXX.npy`` per ``chunk`` images (a rerun resumes at the first missing chunk), then
    ``all.npy`` once every chunk is there. ``folder`` must identify model + data + rows."""
    folder = Path(folder)
    done = folder / "all.npy"
    n = len(images)
    if done.is_file():
        out = np.load(done, mmap_mode="r")
        if out.shape[0] == n:
            return np.asarray(out)
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for c, start in enumerate(range(0, n, chunk)):
        path = folder / f"chunk-{c:05d}.npy"
        if not path.is_file():
            t = time.perf_counter()
            outs = []
            with torch.inference_mode():
                for b in range(start, min(start + chunk, n), batch_size):
                    x = preprocess(images[b:min(b + batch_size, start + chunk, n)])
                    outs.append(trunk(x).float().cpu().numpy())
            tmp = folder / f"chunk-{c:05d}.tmp.npy"
            np.save(tmp, np.concatenate(outs))
            tmp.replace(path)
            if progress is not None:
                progress(f"{folder.name}: chunk {c + 1}/{-(-n // chunk)} in {time.perf_counter() - t:.0f} s")
        parts.append(np.load(path))
    out = np.concatenate(parts) if parts else np.zeros((0,), np.float32)
    tmp = folder / "all.tmp.npy"
    np.save(tmp, out)
    tmp.replace(done)
    for c in range(len(parts)):
        (folder / f"chunk-{c:05d}.npy").unlink(missing_ok=True)
    return out


class TailClassifier(nn.Module):
    """``tail`` (cached activation -> (N, D) embedding) followed by a linear head."""

    def __init__(self, tail: nn.Module, embed_dim: int, n_classes: int) -> None:
        super().__init__()
        self.tail = tail
        self.head = nn.Linear(embed_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.tail(x))


@dataclass
class TailConfig:
    """Training settings of ``train_tail`` (chosen on validation by the caller)."""

    lr: float = 1e-4
    head_lr: float = 1e-3
    weight_decay: float = 0.05
    epochs: int = 20
    patience: int = 4
    batch_size: int = 16
    min_steps: int = 1  # optimizer steps per epoch at least (tiny few-shot sets: several steps per val check)
    class_weighted: bool = True
    freeze_bn: bool = True  # BatchNorm keeps its running statistics (few-shot batches are tiny)
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def auroc_from_logits(y: np.ndarray, logits: np.ndarray) -> float:
    """AUROC from logits: binary uses the margin logit1 - logit0 (softmax saturates to exact 0/1
    ties when activations are huge, e.g. a random-init ResNet-152); multiclass a float64 softmax."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return float("nan")
    z = np.asarray(logits, dtype=np.float64)
    if z.shape[1] == 2:
        return float(roc_auc_score(y, z[:, 1] - z[:, 0]))
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return float(roc_auc_score(y, z / z.sum(axis=1, keepdims=True), multi_class="ovr"))


def predict(model: nn.Module, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Logits (N, C) of ``model`` on cached activations, eval mode, no grad."""
    model.eval()
    outs = []
    with torch.inference_mode():
        for b in range(0, len(x), batch_size):
            outs.append(model(torch.from_numpy(np.array(x[b:b + batch_size], dtype=np.float32))).float().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def train_tail(model: TailClassifier, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
               cfg: TailConfig) -> dict[str, Any]:
    """Train ``model``'s trainable parameters (AdamW: ``cfg.lr`` for the tail, ``cfg.head_lr``
    for the head; (class-weighted) cross-entropy), evaluate the validation AUROC every epoch,
    stop after ``cfg.patience`` epochs without gain and restore the best weights. Returns
    ``{"val_auroc", "best_epoch", "epochs_run", "seconds", "trainable"}``."""
    y = np.asarray(y, dtype=np.int64)
    if len(x) != len(y) or len(x) == 0:
        raise ConfigError(f"train_tail: {len(x)} activations for {len(y)} labels")
    n_classes = model.head.out_features
    gen = torch.Generator().manual_seed(cfg.seed)
    head_params = [p for p in model.head.parameters() if p.requires_grad]
    tail_params = [p for p in model.tail.parameters() if p.requires_grad]
    groups = [{"params": head_params, "lr": cfg.head_lr}]
    if tail_params:
        groups.append({"params": tail_params, "lr": cfg.lr})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    weight = None
    if cfg.class_weighted:
        counts = np.bincount(y, minlength=n_classes).astype(np.float64)
        weight = torch.tensor(len(y) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(y)
    best, best_state, best_epoch, bad, epoch = -np.inf, None, 0, 0, 0
    t0 = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        if cfg.freeze_bn:
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        bs = min(cfg.batch_size, len(xt))
        if -(-len(xt) // bs) >= cfg.min_steps:  # one pass over the data, last batch smaller
            order = torch.randperm(len(xt), generator=gen)
            batches = [order[b:b + bs] for b in range(0, len(xt), bs)]
        else:  # ``min_steps`` full batches drawn from consecutive permutations
            reps = -(-cfg.min_steps * bs // len(xt))
            order = torch.cat([torch.randperm(len(xt), generator=gen) for _ in range(reps)])
            batches = [order[i * bs:(i + 1) * bs] for i in range(cfg.min_steps)]
        for idx in batches:
            if len(idx) < 2 and len(order) > 1 and not cfg.freeze_bn:
                continue  # BatchNorm in train mode needs 2+ samples
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
        val = auroc_from_logits(np.asarray(y_val), predict(model, x_val))
        if val > best:
            best, best_epoch, bad = val, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"val_auroc": float(best), "best_epoch": best_epoch, "epochs_run": epoch,
            "seconds": time.perf_counter() - t0, "trainable": int(trainable)}
