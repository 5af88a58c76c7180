"""How cells run: one small interface, in-process by default.

An executor takes a cell function and cells and yields ``(cell, result_or_error)`` as each
finishes (in any order). The runner's cell function is a picklable ``functools.partial`` of
``compute_cell`` (a pure function of the cell and the on-disk caches), so a Ray or
process-pool executor only needs ``map``: ship ``fn`` and each cell to a worker unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar

from medfm.bench.spec import Cell

R = TypeVar("R")


class Executor(Protocol):
    """Runs cells; yields each cell with its result or the exception it raised."""

    def map(self, fn: Callable[[Cell], R], cells: Sequence[Cell]) -> Iterator[tuple[Cell, R | BaseException]]: ...


class InProcessExecutor:
    """Runs cells one after another in this process (shares in-memory model/embedding caches)."""

    def map(self, fn: Callable[[Cell], R], cells: Sequence[Cell]) -> Iterator[tuple[Cell, R | BaseException]]:
        for cell in cells:
            try:
                result: R | BaseException = fn(cell)
            except Exception as exc:  # noqa: BLE001 - handed back to the runner, which decides
                result = exc
            yield cell, result
