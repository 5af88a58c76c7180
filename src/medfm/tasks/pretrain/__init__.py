"""Self-supervised pretraining (SimCLR, DINO, MAE) and feature distillation of encoders."""

from medfm.tasks.pretrain.config import DistillConfig, PretrainConfig
from medfm.tasks.pretrain.trainer import PretrainResult, pretrain

__all__ = ["DistillConfig", "PretrainConfig", "PretrainResult", "pretrain"]
