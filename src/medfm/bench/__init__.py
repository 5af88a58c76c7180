"""Benchmarks: a spec grid of independent cells, a per-cell cache, resume, a results store.

>>> from medfm.bench import BenchSpec, run_bench   # doctest: +SKIP
>>> run = run_bench(BenchSpec(models=["test/vit-tiny-timm"], protocols=["knn"]), "runs/x")  # doctest: +SKIP
"""

from medfm.bench.cache import CellCache
from medfm.bench.executor import Executor, InProcessExecutor
from medfm.bench.runner import (
    BenchRun,
    CellContext,
    CellOutcome,
    compute_cell,
    default_models,
    default_out_dir,
    metric_task,
    plan,
    run_bench,
)
from medfm.bench.spec import ALL, BenchSpec, Cell, ProtocolInfo, expand, parse_shots
from medfm.bench.store import ResultsStore

__all__ = [
    "ALL", "BenchRun", "BenchSpec", "Cell", "CellCache", "CellContext", "CellOutcome", "Executor",
    "InProcessExecutor", "ProtocolInfo", "ResultsStore", "compute_cell", "default_models", "default_out_dir",
    "expand", "metric_task", "parse_shots", "plan", "run_bench",
]
