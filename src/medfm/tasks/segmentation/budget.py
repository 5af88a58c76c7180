"""How long a training run may go: wall clock, this process's CPU time, optimiser steps, epochs.

Whichever runs out first ends the run, and the fraction used drives the learning-rate decay. CPU
time is the budget to give on a shared machine (wall time depends on the neighbours, CPU time does
not). A resumed run continues both clocks from the values its checkpoint recorded.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field


@dataclass
class Budget:
    """Limits of one run (None / 0 = no limit on that axis) and its two clocks."""

    minutes: float | None = None
    cpu_minutes: float | None = None
    max_steps: int | None = None
    epochs: int = 1000
    _wall0: float = field(default=0.0, repr=False)
    _cpu0: float = field(default=0.0, repr=False)

    def start(self, elapsed: float = 0.0, cpu: float = 0.0) -> Budget:
        """Start the clocks, continuing from ``elapsed`` wall and ``cpu`` CPU seconds (resume)."""
        self._wall0 = time.perf_counter() - elapsed
        self._cpu0 = time.process_time() - cpu
        return self

    def elapsed(self) -> float:
        """Wall seconds used so far (including before a resume)."""
        return time.perf_counter() - self._wall0

    def cpu(self) -> float:
        """CPU seconds of this process used so far (including before a resume)."""
        return time.process_time() - self._cpu0

    def out_of_time(self) -> bool:
        wall = self.minutes * 60 if self.minutes else math.inf
        cpu = self.cpu_minutes * 60 if self.cpu_minutes else math.inf
        return self.elapsed() >= wall or self.cpu() >= cpu

    def steps_done(self, step: int) -> bool:
        return bool(self.max_steps) and step >= self.max_steps

    def epochs_done(self, epoch: int) -> bool:
        return epoch >= self.epochs

    def fraction(self, epoch: int, step: int) -> float:
        """Share of the budget used, by whichever limit is nearest (0..1): drives the LR decay."""
        f = epoch / max(self.epochs, 1)
        if self.minutes:
            f = max(f, self.elapsed() / (self.minutes * 60))
        if self.cpu_minutes:
            f = max(f, self.cpu() / (self.cpu_minutes * 60))
        if self.max_steps:
            f = max(f, step / self.max_steps)
        return min(f, 1.0)
