"""Training state of ``train-seg`` and its checkpoint: one file, written atomically and durably.

The checkpoint (``checkpoint.pt``) holds all a resumed run needs: counters, clocks, history, the
best val score with the best weights, the last weights, the optimiser and the random states. A kill
at any moment leaves the previous checkpoint or the new one, never a mix (newer weights beside an
older best score). ``model.safetensors`` (the selected weights users load) is exported from the
checkpoint after it is written, and exported again on resume. Every write goes to a temporary file
that is fsynced before it is renamed onto the target (and the folder fsynced after).
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfm._paths import write_durably
from medfm.errors import InputError

if TYPE_CHECKING:
    import torch

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


@dataclass
class TrainState:
    """Where a run is: counters, clocks (seconds), the best val Dice and when, every epoch's record."""

    epoch: int = 0
    step: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0
    best: float = -math.inf
    best_epoch: int = -1
    first_val: float | None = None  # the first validation's Dice, to tell a run that never improved
    first_val_epoch: int = -1
    n_val: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def record_val(self, dice: float) -> bool:
        """Record this epoch's val Dice; True when it is the best so far."""
        self.n_val += 1
        if self.first_val is None:
            self.first_val, self.first_val_epoch = dice, self.epoch
        if dice > self.best:
            self.best, self.best_epoch = dice, self.epoch
            return True
        return False

    def never_improved(self) -> bool:
        """Validated more than once and never scored above the first validation (or never above 0)."""
        if self.first_val is None:
            return False
        return (self.n_val >= 2 and not self.best > self.first_val) or not self.best > 0

    def save(self, path: Path, net: torch.nn.Module, opt: Any, loader_rng: torch.Generator,
             best_weights: dict[str, torch.Tensor] | None) -> None:
        """One checkpoint file holding this state, the last and best weights, optimiser and RNGs."""
        import torch

        from medfm.tasks.segmentation.model import weights_to_save

        doc = {"format": CHECKPOINT_FORMAT, "state": asdict(self), "weights": weights_to_save(net),
               "best_weights": best_weights, "optimizer": opt.state_dict(),
               "torch_rng": torch.get_rng_state(), "loader_rng": loader_rng.get_state()}
        buf = io.BytesIO()
        torch.save(doc, buf)
        write_durably(path, buf.getvalue())

    @classmethod
    def load(cls, path: Path, net: torch.nn.Module, opt: Any,
             loader_rng: torch.Generator) -> tuple[TrainState, dict[str, torch.Tensor] | None]:
        """Restore net, optimiser and RNGs from ``path``; returns (state, best weights or None)."""
        import torch

        from medfm.tasks.segmentation.model import apply_weights

        try:
            doc = torch.load(path, weights_only=True)
            state = cls(**doc["state"])
        except Exception as exc:  # truncated, foreign or older file: name it, do not guess
            raise InputError(f"{path}: not a readable train-seg checkpoint ({type(exc).__name__}: {exc})") from exc
        apply_weights(net, doc["weights"], path)
        opt.load_state_dict(doc["optimizer"])
        torch.set_rng_state(doc["torch_rng"])
        loader_rng.set_state(doc["loader_rng"])
        return state, doc["best_weights"]
