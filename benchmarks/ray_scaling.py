"""Ray scale-out against the local executor, measured in one run on this machine.

Embeddings/s: one split embedded in-process (local, 1 thread), then on Ray Data by 1 and 2
actors (1 CPU each) over shards, each into a fresh cache. The rate is the images over the span
from the first shard's start to the last shard's end on the actors (the steady state); the wall
rate, which also pays Ray Data's start and the actors loading the model, is printed beside it. Cells/s: a kNN grid on cached embeddings
through the local executor and the Ray executor with 1 and 2 workers; Ray's overhead per cell
(submit to result, minus the time inside the cell) against the cell's own time.

    OMP_NUM_THREADS=1 MEDFM_DATA=... nice -n 10 python benchmarks/ray_scaling.py [--model random/vit-b16 --images 48]

Goal on a 2-core machine: 2 Ray workers >= 1.7x one worker for embedding. The numbers depend
on what else runs: on a shared machine, read them with the load average printed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MEDFM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def embed_rates(args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    from medfm.data import load_dataset
    from medfm.models.embed import EmbeddingCache, EmbedJob, _LocalEmbedder
    from medfm.models.embed_ray import RayEmbedder

    sd = load_dataset(args.dataset).split(args.split)
    n = min(args.images, len(sd))
    key = f"{sd.checksum()}:first{n}"
    base = {"dataset": args.dataset, "model": args.model, "splits": [args.split], "limit": n,
            "batch_size": args.batch_size, "precision": args.precision, "shard_size": args.shard_size}
    rates: dict[str, float] = {}
    local = _LocalEmbedder(EmbedJob(**base))
    t0 = time.perf_counter()
    local.embed_split(sd, args.split, n, key, EmbeddingCache(tmp / "emb-local"))
    rates["local"] = n / (time.perf_counter() - t0)
    print(f"embed local (1 thread):   {rates['local']:7.1f} img/s  ({n} images, {args.model}, {args.precision})", flush=True)
    for workers in (1, 2):
        t_start = time.perf_counter()
        eng = RayEmbedder(EmbedJob(**base, executor="ray", workers=workers))
        startup = time.perf_counter() - t_start
        t0 = time.perf_counter()
        eng.embed_split(sd, args.split, n, key, EmbeddingCache(tmp / f"emb-ray{workers}"))
        wall = time.perf_counter() - t0
        span = max(t["t1"] for t in eng.timing) - min(t["t0"] for t in eng.timing)
        rates[f"ray{workers}"] = n / span
        actors = len({t["pid"] for t in eng.timing})
        first = min(t["t0"] for t in eng.timing)
        for pid in sorted({t["pid"] for t in eng.timing}):
            mine = [t for t in eng.timing if t["pid"] == pid]
            busy = sum(t["t1"] - t["t0"] for t in mine)
            print(f"  actor {pid}: {len(mine)} shard(s), first at +{min(t['t0'] for t in mine) - first:.1f} s, "
                  f"last done at +{max(t['t1'] for t in mine) - first:.1f} s, {sum(t['rows'] for t in mine) / busy:.2f} img/s while busy",
                  flush=True)
        eng.close()
        print(f"embed ray, {workers} actor(s):   {rates[f'ray{workers}']:7.1f} img/s on {actors} actor(s) "
              f"(wall {n / wall:.1f} img/s incl. Ray Data start and actors loading the model; "
              f"probe {startup:.1f} s)", flush=True)
    return rates


def cell_rates(args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    from medfm.bench import BenchSpec, CellCache, InProcessExecutor, run_bench
    from medfm.bench.ray_executor import RayExecutor

    spec = BenchSpec(datasets=[args.dataset], models=[args.cell_model], protocols=["knn", "linear_probe"],
                     shots=[1, 2, 4, 8], seeds=args.seeds, n_boot=args.n_boot, precision="fp32")
    # warm the embedding cache so every executor times the cells, not the first embedding
    run_bench(spec, tmp / "warm", executor=InProcessExecutor(), cache=CellCache(tmp / "cells-warm"), store=False, report=False)
    rates: dict[str, float] = {}
    t0 = time.perf_counter()
    run = run_bench(spec, tmp / "local", executor=InProcessExecutor(), cache=CellCache(tmp / "cells-local"),
                    store=False, report=False)
    rates["local"] = len(run.records) / (time.perf_counter() - t0)
    own = sum(r.seconds + r.extra.get("input_seconds", 0) for r in run.records) / len(run.records)
    print(f"cells local:              {rates['local']:7.2f} cells/s  ({len(run.records)} kNN + linear-probe cells, {own * 1000:.0f} ms each)", flush=True)
    for workers in (1, 2):
        ex = RayExecutor(workers=workers)
        # warm the workers (import torch and medfm, open the dataset, load the cached features):
        # a long grid pays this once per worker; the timed run below is the steady state
        t0 = time.perf_counter()
        run_bench(spec, tmp / f"ray{workers}-warm", executor=ex, cache=CellCache(tmp / f"cells-ray{workers}-warm"),
                  store=False, report=False)
        print(f"cells ray, {workers} worker(s): first pass (worker start) {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        run = run_bench(spec, tmp / f"ray{workers}", executor=ex, cache=CellCache(tmp / f"cells-ray{workers}"),
                        store=False, report=False)
        rates[f"ray{workers}"] = len(run.records) / (time.perf_counter() - t0)
        st = ex.stats
        print(f"cells ray, {workers} worker(s):    {rates[f'ray{workers}']:7.2f} cells/s  (in the cell "
              f"{st.cell_seconds / st.cells * 1000:.0f} ms, Ray overhead {st.overhead_per_cell() * 1000:.0f} ms per cell)", flush=True)
    return rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="breastmnist")
    p.add_argument("--split", default="train")
    p.add_argument("--model", default="random/vit-b16", help="embedding model (a real-size ViT-B by default)")
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--shard-size", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--precision", default="auto")
    p.add_argument("--cell-model", default="test/vit-tiny-timm")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--n-boot", type=int, default=200)
    args = p.parse_args()

    from medfm._ray import connect

    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    t0 = time.perf_counter()
    rt = connect(None, num_cpus=2)  # one runtime of 2 CPUs; the 1- and 2-worker runs share it
    print(f"ray runtime start: {time.perf_counter() - t0:.1f} s", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="medfm-ray-bench-") as d:
            os.environ["MEDFM_HOME"] = str(Path(d) / "home")
            emb = embed_rates(args, Path(d))
            cells = cell_rates(args, Path(d))
    finally:
        rt.shutdown()
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(f"RATIO embed ray2/ray1 = {emb['ray2'] / emb['ray1']:.2f} (goal >= 1.7); ray1/local = {emb['ray1'] / emb['local']:.2f}; "
          f"ray2/local = {emb['ray2'] / emb['local']:.2f}")
    print(f"RATIO cells ray2/ray1 = {cells['ray2'] / cells['ray1']:.2f}; ray1/local = {cells['ray1'] / cells['local']:.2f}; "
          f"ray2/local = {cells['ray2'] / cells['local']:.2f}")


if __name__ == "__main__":
    main()
