"""How cells run: one small interface, in-process by default.

An executor takes a cell function and cells and yields ``(cell, result_or_error)`` as each
finishes (in any order). The runner's cell function is a picklable ``functools.partial`` of
``compute_cell`` (a pure function of the cell and the on-disk caches), so a Ray or
process-pool executor only needs ``map``: ship ``fn`` and each cell to a worker unchanged.
``RayExecutor`` (``medfm.bench.ray_executor``) runs each cell as a Ray task.

Every executor yields each cell exactly once, and tells the process computing a cell how it is
run (:func:`set_execution`), which the cell's record keeps in its provenance
(``provenance["executor"]``: kind, nodes, workers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from medfm.bench.spec import Cell

R = TypeVar("R")

LOCAL_EXECUTION: dict[str, Any] = {"kind": "local", "nodes": 1, "workers": 1}
_execution: dict[str, Any] = dict(LOCAL_EXECUTION)


def set_execution(info: dict[str, Any]) -> None:
    """Set how this process's cells are being run (called by an executor before a cell)."""
    global _execution
    _execution = dict(info)


def current_execution() -> dict[str, Any]:
    """How the cell computed now in this process is run, for its record's provenance."""
    return dict(_execution)


class Executor(Protocol):
    """Runs cells; yields each cell with its result or the exception it raised."""

    def map(self, fn: Callable[[Cell], R], cells: Sequence[Cell]) -> Iterator[tuple[Cell, R | BaseException]]: ...


class InProcessExecutor:
    """Runs cells one after another in this process (shares in-memory model/embedding caches)."""

    def describe(self) -> dict[str, Any]:
        return dict(LOCAL_EXECUTION)

    def map(self, fn: Callable[[Cell], R], cells: Sequence[Cell]) -> Iterator[tuple[Cell, R | BaseException]]:
        set_execution(LOCAL_EXECUTION)
        for cell in cells:
            try:
                result: R | BaseException = fn(cell)
            except Exception as exc:  # noqa: BLE001 - handed back to the runner, which decides
                result = exc
            yield cell, result
