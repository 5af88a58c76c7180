"""Fine-tuning a model's image tower with a linear head: full, LoRA (peft) or head only.

The tower is ``model.trainable_module()`` (maps a preprocessed batch (N, C, H, W) to
embeddings (N, D) with gradients); the caller's model is never modified: training runs on
a deep copy. AdamW with linear warm-up and cosine decay, validation AUROC after each epoch,
early stopping, and the best-validation weights restored before predicting the test split.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from medfm._optional import optional_import
from medfm._runtime import check_precision
from medfm.errors import ConfigError
from medfm.tasks.classification._train import (
    AUGMENTS,
    fit,
    fused_kwargs,
    lr_lambda_cosine,
    predict_proba,
    seeded_torch,
    torch_threads,
)
from medfm.tasks.classification.base import Protocol, register_protocol
from medfm.tasks.classification.data import ImageSplits, Predictions, train_indices

METHODS = ("lora", "full", "head")

# LoRA target module names per card backend. timm ViTs fuse q, k, v into one ``qkv`` Linear;
# transformers 5 ViT / DINOv2 / CLIP / SigLIP use ``q_proj`` / ``v_proj``; open_clip's own ViT
# blocks use nn.MultiheadAttention (whose out_proj is not called as a module, so LoRA there
# would be silently ignored), hence the MLP's ``c_fc`` / ``c_proj``; open_clip towers with a
# timm trunk (BiomedCLIP) match ``qkv``.
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "timm": ("qkv",),
    "hf": ("q_proj", "v_proj"),
    "transformers": ("q_proj", "v_proj"),
    "open_clip": ("qkv", "c_fc", "c_proj"),
    # pip-packaged CNNs (medfm.models.adapters.pretrained_pkg): the 1x1/3x3 convs of the
    # EfficientNet inverted residuals (conv_pw, conv_pwl), DenseNet layers (conv1, conv2) and
    # I3ResNet bottlenecks (conv1, conv2, conv3); peft wraps Conv2d and Conv3d.
    "pretrained": ("conv_pw", "conv_pwl", "conv1", "conv2", "conv3"),
}


@dataclass
class FinetuneConfig:
    """``method``: "lora" (adapters on ``lora_targets``, default per backend), "full" (every
    tower weight) or "head" (frozen tower). ``lr`` applies to the tower / LoRA weights,
    ``head_lr`` to the linear head; ``warmup_epochs`` of linear warm-up then cosine decay;
    ``patience`` epochs without a better validation AUROC stop training (None: never)."""

    method: str = "lora"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] | None = None
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    head_lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    patience: int | None = 3
    augment: str = "flip"
    precision: str = "auto"
    num_threads: int | None = None
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"finetune: method must be one of {METHODS}, got '{self.method}'")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.head_lr <= 0 or self.lora_rank < 1:
            raise ConfigError("finetune: epochs, batch_size, lr, head_lr and lora_rank must be positive")
        if self.augment not in AUGMENTS:
            raise ConfigError(f"finetune: augment must be one of {AUGMENTS}, got '{self.augment}'")
        check_precision(self.precision, "finetune: precision")


def clone_module(module: Any) -> Any:
    """A deep copy of ``module``: training never touches the caller's model."""
    return copy.deepcopy(module)


def lora_targets_for(backend: str, cfg: FinetuneConfig) -> tuple[str, ...]:
    """The module names LoRA wraps: ``cfg.lora_targets`` or the backend's default."""
    if cfg.lora_targets:
        return tuple(cfg.lora_targets)
    if backend not in LORA_TARGETS:
        raise ConfigError(
            f"finetune: no default LoRA target modules for backend '{backend}'; set lora_targets "
            f"(names of Linear layers in the image tower) or use method 'full' / 'head'"
        )
    return LORA_TARGETS[backend]


def apply_lora(tower: Any, targets: tuple[str, ...], cfg: FinetuneConfig) -> int:
    """Inject LoRA adapters into ``tower`` in place; freeze everything else. Returns #wrapped."""
    peft = optional_import("peft")
    import torch

    lora_cfg = peft.LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                               target_modules=list(targets))
    try:
        peft.inject_adapter_in_model(lora_cfg, tower)
    except ValueError as exc:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in tower.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ConfigError(f"finetune: LoRA targets {list(targets)} match no layer of the tower ({exc}); "
                          f"Linear layer names present: {linear[:20]}") from exc
    wrapped = 0
    for name, p in tower.named_parameters():
        p.requires_grad = "lora_" in name
    for m in tower.modules():
        wrapped += int(hasattr(m, "lora_A"))
    return wrapped


def run(model: Any, data: ImageSplits, cfg: FinetuneConfig, seed: int = 0, shots: int | None = None) -> Predictions:
    """Fine-tune a copy of ``model``'s image tower plus a linear head on ``data``."""
    import torch

    from medfm._runtime import autocast_dtype

    t0 = time.perf_counter()
    model.require("image_encoder", "fine-tuning")
    idx = train_indices(data, shots, seed, "finetune")
    device = model.device
    amp = autocast_dtype(device, cfg.precision)

    with torch_threads(cfg.num_threads) as threads, seeded_torch(seed, device):
        tower = clone_module(model.trainable_module()).to(device)
        n_lora = 0
        if cfg.method == "lora":
            n_lora = apply_lora(tower, lora_targets_for(model.card.backend, cfg), cfg)
        else:
            for p in tower.parameters():
                p.requires_grad = cfg.method == "full"

        def to_input(x: np.ndarray) -> Any:
            return model.preprocess(list(x)).to(device)

        with torch.no_grad():
            dim = int(tower.eval()(to_input(data.train_x[:2])).shape[-1])
        head = torch.nn.Linear(dim, data.n_classes).to(device)
        net = torch.nn.ModuleDict({"tower": tower, "head": head})

        def forward(x: Any) -> Any:
            return head(tower(x).float())

        tower_params = [p for p in tower.parameters() if p.requires_grad]
        groups = [{"params": list(head.parameters()), "lr": cfg.head_lr}]
        if tower_params:
            groups.append({"params": tower_params, "lr": cfg.lr})
        opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, **fused_kwargs(device))
        steps = int(np.ceil(len(idx) / cfg.batch_size))
        sched = lr_lambda_cosine(steps * cfg.epochs, int(round(cfg.warmup_epochs * steps)))
        result = fit(
            net, forward, to_input, (data.train_x[idx], data.train_y[idx]), (data.val_x, data.val_y), data.task,
            opt, sched, cfg.epochs, cfg.batch_size, seed, device, amp, augment=cfg.augment, patience=cfg.patience,
            eval_batch_size=cfg.batch_size, progress="finetune" if cfg.verbose else "",
        )
        test_scores = predict_proba(forward, to_input, data.test_x, data.task, cfg.batch_size, device, amp)
        val_scores = predict_proba(forward, to_input, data.val_x, data.task, cfg.batch_size, device, amp)
    n_trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    info = {
        "trained": True, "model_trained": cfg.method != "head", "method": cfg.method,
        "lora_modules": n_lora, "trainable_params": int(n_trainable),
        "best_epoch": result.best_epoch, "best_val_auroc": result.best_val, "epochs": result.epochs_run,
        "train_seconds": time.perf_counter() - t0, "n_train": int(len(idx)), "device": device, "threads": threads,
        "autocast": str(amp) if amp is not None else None, "history": result.history,
    }
    return Predictions(test_scores, data.test_y, val_scores, info)


PROTOCOL = register_protocol(
    Protocol("finetune", "model+images", FinetuneConfig, run, "fine-tune the image tower (LoRA/full/head) + linear head")
)
