"""Configuration of self-supervised pretraining and feature distillation."""

from __future__ import annotations

from dataclasses import dataclass

METHODS = ("dino", "simclr", "mae")


@dataclass
class PretrainConfig:
    """One pretraining run. ``minutes`` bounds wall time (checked at epoch ends); ``image_size``
    None keeps the data's native size. ``checkpoint_every`` is in epochs."""

    method: str = "simclr"
    arch: str = "resnet18"
    epochs: int = 100
    minutes: float | None = 15.0
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.2
    image_size: int | None = None
    mask_ratio: float = 0.75
    momentum: float = 0.996
    projection_dim: int = 128
    seed: int = 0
    checkpoint_every: int = 1
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("epochs must be >= 1 and batch_size >= 2")


@dataclass
class DistillConfig:
    """Feature distillation of a teacher encoder into a small student; the student is selected
    by its loss on a held-out ``val_fraction`` of the (unlabelled) images."""

    student: str = "resnet18"
    epochs: int = 60
    minutes: float | None = 15.0
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    image_size: int | None = None
    val_fraction: float = 0.1
    seed: int = 0
    precision: str = "auto"
