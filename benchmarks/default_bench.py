"""Wall time of the README's main command, ``medfm bench`` with no arguments, from a cold cache.

Runs the exact command in a temporary folder with an empty ``MEDFM_HOME`` (no cached embeddings
or cells), then prints the wall time against the README's 10-minute target (ratio < 1 = met) and
where the time went: per model and protocol, the sum of the cells' own seconds (embedding time is
inside the first cell of each model). The load average is printed before and after: on a shared
machine the number says little.

    MEDFM_DATA=../shared/data nice -n 10 python benchmarks/default_bench.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

TARGET_SECONDS = 600.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", type=Path, help="run here (kept) instead of a temporary folder")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="medfm-default-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MEDFM_HOME": str(work / "home")}
    medfm = Path(sys.executable).with_name("medfm")
    print(f"load average before: {os.getloadavg()[0]:.1f}  (cores: {os.cpu_count()})")
    t0 = time.perf_counter()
    proc = subprocess.run([str(medfm), "bench"], cwd=work, env=env)
    wall = time.perf_counter() - t0
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if proc.returncode != 0:
        sys.exit(f"medfm bench exited {proc.returncode}")
    (run_dir,) = (work / "runs").iterdir()
    doc = json.loads((run_dir / "results.json").read_text())
    by = defaultdict(float)
    for r in doc["records"]:
        by[(r["model"], r["protocol"])] += float(r.get("seconds") or 0.0)
    print(f"\n{'model':32s} {'protocol':14s} {'cell seconds':>12s}")
    for (model, protocol), sec in sorted(by.items(), key=lambda kv: -kv[1]):
        print(f"{model:32s} {protocol:14s} {sec:12.1f}")
    n = len(doc["records"])
    print(f"\ncells: {n}  wall: {wall:.0f} s  target: {TARGET_SECONDS:.0f} s  wall / target: {wall / TARGET_SECONDS:.2f}")
    print(f"results: {run_dir / 'results.json'}")


if __name__ == "__main__":
    main()
