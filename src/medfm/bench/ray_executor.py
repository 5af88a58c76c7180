"""Bench cells as Ray tasks: one task per cell, with resource requests, retries and progress.

``RayExecutor(address=...)`` joins a cluster (``"auto"``, ``"HOST:PORT"``, ``"ray://..."``) or
starts a one-machine runtime; ``map`` keeps at most ``workers`` cells in flight, each a task
asking for ``cpus`` CPUs, ``gpus`` GPUs and ``memory_gb`` memory, placed round-robin over the
nodes (Ray's ``SPREAD`` strategy). A cell whose task fails for
any reason but a ``MedfmError`` (a worker killed, a node lost, an out-of-memory kill) is
resubmitted up to ``max_retries`` times and then handed to the runner as failed, never dropped;
a result that arrives twice for one cell (a retried task that had finished after all) is kept
once. The cell cache the runner's cell function writes must be on storage every worker reaches
(one machine: any path; a cluster: a shared mount), since workers write it and the driver only
collects records.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from medfm.bench.executor import set_execution
from medfm.bench.spec import Cell
from medfm.errors import ConfigError, MedfmError

R = TypeVar("R")


def _run_cell(fn: Callable[[Cell], Any], cell: Cell, execution: dict[str, Any], threads: int) -> tuple[Any, str, int, float]:
    """The task body on a worker: (the cell's result, node id, worker pid, seconds in the cell)."""
    import ray

    from medfm._runtime import configure_threads

    configure_threads(threads)
    set_execution(execution)
    t0 = time.perf_counter()
    result = fn(cell)
    return result, ray.get_runtime_context().get_node_id(), os.getpid(), time.perf_counter() - t0


@dataclass
class RayStats:
    """What the last ``map`` did: cells done, retries, failures, duplicates, where and how long."""

    cells: int = 0
    retries: int = 0
    failed: int = 0
    duplicates: int = 0
    nodes_used: dict[str, int] = field(default_factory=dict)
    pids: set[int] = field(default_factory=set)
    cell_seconds: float = 0.0  # time inside the cells (on the workers)
    wall_seconds: float = 0.0  # submit to result, summed over cells
    startup_seconds: float = 0.0  # connecting to / starting the runtime

    def overhead_per_cell(self) -> float:
        """Mean seconds per cell spent outside the cell (scheduling, transfer, worker start)."""
        return (self.wall_seconds - self.cell_seconds) / self.cells if self.cells else 0.0


class RayExecutor:
    """Runs cells as Ray tasks (see the module docstring); ``close()`` stops a runtime it started."""

    def __init__(
        self, address: str | None = None, workers: int | None = None, max_retries: int = 2, cpus: float = 1.0,
        gpus: float = 0.0, memory_gb: float | None = None, log: Callable[[str], None] | None = None,
    ) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}")
        if max_retries < 0:
            raise ConfigError(f"--max-retries must be >= 0, got {max_retries}")
        if cpus <= 0 or gpus < 0 or (memory_gb is not None and memory_gb <= 0):
            raise ConfigError("per-cell resources: CPUs must be > 0, GPUs >= 0, memory > 0")
        self.address, self.workers, self.max_retries = address, workers, max_retries
        self.cpus, self.gpus, self.memory_gb = cpus, gpus, memory_gb
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.stats = RayStats()
        self._runtime: Any = None
        self._size: dict[str, Any] = {}

    # runtime -------------------------------------------------------------------------
    def runtime(self) -> Any:
        """The connected runtime (started or joined on first use)."""
        if self._runtime is None:
            from medfm._ray import connect

            t0 = time.perf_counter()
            n_cpus = None
            if self.address is None:
                n_cpus = max(1, int(round((self.workers or os.cpu_count() or 1) * self.cpus)))
            self._runtime = connect(self.address, num_cpus=n_cpus, num_gpus=None)
            self._size = self._runtime.size()
            self.stats.startup_seconds = time.perf_counter() - t0
        return self._runtime

    def concurrency(self) -> int:
        """Cells in flight: ``workers``, else as many as the cluster's CPUs (GPUs) allow."""
        if self.workers:
            return self.workers
        size = self._size or self.runtime().size()
        by_cpu = int(size["cpus"] // self.cpus) if self.cpus else 1
        by_gpu = int(size["gpus"] // self.gpus) if self.gpus else by_cpu
        return max(1, min(by_cpu, by_gpu))

    def describe(self) -> dict[str, Any]:
        """For provenance: executor kind, cluster size, workers and per-cell resources."""
        self.runtime()
        return {
            "kind": "ray", "address": self.address or "local", "nodes": self._size.get("nodes"),
            "cluster_cpus": self._size.get("cpus"), "cluster_gpus": self._size.get("gpus"),
            "workers": self.concurrency(), "cpus_per_cell": self.cpus, "gpus_per_cell": self.gpus,
        }

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.shutdown()
            self._runtime = None

    # cells ---------------------------------------------------------------------------
    def map(self, fn: Callable[[Cell], R], cells: Sequence[Cell]) -> Iterator[tuple[Cell, R | BaseException]]:
        """Yield ``(cell, result or exception)`` as cells finish; each cell exactly once."""
        ray = self.runtime().ray
        self.stats = RayStats(startup_seconds=self.stats.startup_seconds)
        if not cells:
            return
        info = self.describe()
        threads = max(1, int(self.cpus))
        from medfm._ray import worker_env

        options: dict[str, Any] = {
            "num_cpus": self.cpus, "num_gpus": self.gpus, "max_retries": 0, "name": "medfm-cell",
            "runtime_env": {"env_vars": worker_env(threads)},
            # cells are independent and heavy: place them round-robin over the nodes rather than
            # packing the driver's node first (Ray's default), so a cluster is used from the first cell
            "scheduling_strategy": "SPREAD",
        }
        if self.memory_gb:
            options["memory"] = int(self.memory_gb * 1024**3)
        task = ray.remote(_run_cell).options(**options)
        fn_ref = ray.put(fn)
        todo: deque[int] = deque(range(len(cells)))
        attempts = [0] * len(cells)
        pending: dict[Any, tuple[int, float]] = {}
        finished: set[int] = set()
        window = self.concurrency()
        try:
            while todo or pending:
                while todo and len(pending) < window:
                    i = todo.popleft()
                    pending[task.remote(fn_ref, cells[i], info, threads)] = (i, time.perf_counter())
                ready, _ = ray.wait(list(pending), num_returns=1)
                ref = ready[0]
                i, t_submit = pending.pop(ref)
                try:
                    result, node, pid, secs = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a task error, a killed worker, a lost node
                    err = getattr(exc, "cause", None) or exc
                    if isinstance(err, MedfmError) or attempts[i] >= self.max_retries:
                        self.stats.failed += 1
                        self.log(f"ray: {cells[i].label()} failed after {attempts[i] + 1} attempt(s): {_one_line(exc)}")
                        yield cells[i], err
                        continue
                    attempts[i] += 1
                    self.stats.retries += 1
                    self.log(f"ray: {cells[i].label()} failed ({_one_line(exc)}); retry {attempts[i]}/{self.max_retries}")
                    todo.appendleft(i)
                    continue
                if i in finished:
                    self.stats.duplicates += 1
                    continue
                finished.add(i)
                st = self.stats
                st.cells += 1
                st.nodes_used[node] = st.nodes_used.get(node, 0) + 1
                st.pids.add(pid)
                st.cell_seconds += secs
                st.wall_seconds += time.perf_counter() - t_submit
                yield cells[i], result
        finally:
            # only while connected: any Ray call after ray.shutdown() would start a new local instance
            for ref in pending if ray.is_initialized() else ():
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort when the driver stops early
                    pass
            if self.stats.retries or self.stats.failed:
                self.log(f"ray: {self.stats.cells} cell(s) done on {len(self.stats.nodes_used)} node(s), "
                         f"{self.stats.retries} retried, {self.stats.failed} failed")


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "cause", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"[:300]
