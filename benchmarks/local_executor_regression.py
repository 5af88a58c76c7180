"""The local executor now against the code before the Ray work (#16), measured in one run.

The Ray issue moved the cell cache and the results store onto fsspec (atomic writes with
checksums) and put an executor seam in the runner. This checks that a plain local run did not
get slower: the same grid (kNN + linear probe on cached features, with the per-cell cache and
the SQLite results store, as ``medfm bench`` does by default) timed under the current source
tree and under a git worktree of ``--baseline`` (default: the commit before the first Ray
commit), alternating A/B ``--repeats`` times in fresh processes, each with its own embedding
cache warmed first so only the cells are timed.

    OMP_NUM_THREADS=1 MEDFM_DATA=... python benchmarks/local_executor_regression.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = r"""
import json, sys, time
from pathlib import Path
src, out, home = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
sys.path.insert(0, src)
import medfm
assert medfm.__file__.startswith(src), (medfm.__file__, src)
from medfm.bench import BenchSpec, CellCache, InProcessExecutor, ResultsStore, run_bench
spec = BenchSpec(datasets=["breastmnist"], models=["test/vit-tiny-timm"], protocols=["knn", "linear_probe"],
                 shots=[1, 2, 4, 8], seeds=int(sys.argv[4]), n_boot=200, precision="fp32")
run_bench(spec, out / "warm", executor=InProcessExecutor(), cache=CellCache(out / "cells-warm"), store=False, report=False)
t0 = time.perf_counter()
run = run_bench(spec, out / "timed", executor=InProcessExecutor(), cache=CellCache(out / "cells"),
                store=ResultsStore(out / "results.sqlite"), report=False)
print(json.dumps({"seconds": time.perf_counter() - t0, "cells": len(run.records)}))
"""


def first_ray_commit() -> str:
    """The parent of the first commit whose subject starts with ``ray``."""
    log = subprocess.run(["git", "log", "--reverse", "--format=%H %s"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    first = next(line.split()[0] for line in log if line.split(maxsplit=1)[1].startswith("ray"))
    return f"{first}^"


def timed(src: Path, work: Path, seeds: int) -> dict:
    env = {**os.environ, "MEDFM_HOME": str(work / "home"), "PYTHONPATH": str(src)}
    res = subprocess.run([sys.executable, "-c", CHILD, str(src), str(work), str(work / "home"), str(seeds)],
                         capture_output=True, text=True, env=env)
    if res.returncode:
        raise SystemExit(f"run under {src} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", default=None, help="git revision to compare with (default: before the first Ray commit)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    rev = args.baseline or first_ray_commit()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; baseline {rev}", flush=True)
    with tempfile.TemporaryDirectory(prefix="medfm-local-exec-") as d:
        base = Path(d) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base), rev], cwd=ROOT, check=True)
        try:
            times: dict[str, list[float]] = {"current": [], "baseline": []}
            for i in range(args.repeats):
                for name, src in (("current", ROOT / "src"), ("baseline", base / "src")):
                    r = timed(src, Path(d) / f"{name}-{i}", args.seeds)
                    times[name].append(r["seconds"])
                    print(f"{name:8s} run {i + 1}: {r['cells']} cells in {r['seconds']:.2f} s "
                          f"({r['cells'] / r['seconds']:.2f} cells/s)", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    cur, old = statistics.median(times["current"]), statistics.median(times["baseline"])
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(f"RATIO local executor current/baseline time = {cur / old:.2f} (median of {args.repeats}; "
          f"goal <= 1.0 within noise: the local executor no slower than before the Ray work)")


if __name__ == "__main__":
    main()
