"""``medfm embed --executor ray``: a split's shards embedded on Ray Data by actors that hold the model.

The shards still to compute (the embedding cache's chunks ``[start, stop)`` of the split that
are missing or fail their checksum) become a Ray dataset (``ray.data.from_items``, one block per
shard); ``map_batches`` runs them through a callable class that loads the model once per actor
(``concurrency`` = ``workers`` actors of ``cpus_per_worker`` CPUs, or ``gpus_per_worker`` GPUs
each, one GPU per actor by default when the model runs on CUDA) and the dataset lazily, and
embeds each shard in batches (bf16 autocast or fp32, exactly as the local path). The driver
streams the results and writes each shard into the cache entry as it arrives, atomically with
its checksum: one output shard per input shard, so a crash (driver, actor or node) resumes at
the missing shards and the arrays equal the local path's. Ray Data restarts a dead actor and
retries its shard.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from medfm.errors import MedfmError
from medfm.models.embed import CacheStats, EmbeddingCache, EmbedJob, split_images


class _EmbedShards:
    """Ray Data UDF: the model and dataset in one actor; a batch of shard rows -> their arrays
    (``.npy`` bytes, one row per shard) and when / where each was computed."""

    def __init__(self, job: EmbedJob, threads: int, split: str) -> None:
        from medfm._runtime import configure_threads
        from medfm.models import create_model

        configure_threads(threads)
        self.job, self.split = job, split
        self.adapter = create_model(job.model, device=job.device, precision=job.precision)
        self.adapter.require("image_encoder", "medfm embed")
        self._split: Any = None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from medfm.models.embed import embed_arrays

        if self._split is None:
            from medfm.data import load_dataset

            self._split = load_dataset(self.job.dataset, self.job.data_dir).split(self.split)
        blobs, t0s, t1s = [], [], []
        for s, e in zip(batch["start"], batch["stop"], strict=True):
            t0 = time.time()
            emb = embed_arrays(self.adapter, split_images(self._split, int(s), int(e)),
                               batch_size=self.job.batch_size, progress=False)
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(emb, dtype=np.float32))
            blobs.append(buf.getvalue())
            t0s.append(t0)
            t1s.append(time.time())
        n = len(blobs)
        return {"shard": np.asarray(batch["shard"]), "npy": np.array(blobs, dtype=object),
                "t0": np.asarray(t0s), "t1": np.asarray(t1s), "pid": np.full(n, os.getpid())}


def _probe(job: EmbedJob, threads: int) -> dict[str, Any]:
    """On a worker with the actors' resources: what the model is (for the manifest and the cache key)."""
    from medfm._runtime import configure_threads
    from medfm.models import create_model
    from medfm.models.embed import compute_dtype

    configure_threads(threads)
    a = create_model(job.model, device=job.device, precision=job.precision)
    a.require("image_encoder", "medfm embed")
    return {"info": {"model": a.card.id, "weights_hash": a.weights_hash, "weights_source": a.weights_source,
                     "device": a.device, "dtype": compute_dtype(a)},
            "key_view": SimpleNamespace(card=a.card, weights_hash=a.weights_hash, device=a.device, precision=a.precision)}


def _medfm_error(exc: BaseException) -> MedfmError | None:
    """The MedfmError behind a Ray Data failure (a bad image, a missing model), if there is one."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, MedfmError):
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return None


class RayEmbedder:
    """Ray Data over shards (see the module docstring); ``close()`` stops what it started."""

    def __init__(self, job: EmbedJob) -> None:
        from medfm._ray import connect, worker_env

        self.job = job
        cpus = job.cpus_per_worker
        n_local = None if job.address else max(1, round((job.workers or 1) * cpus))
        self.rt = connect(job.address, num_cpus=n_local)
        self.size = self.rt.size()
        gpus = job.gpus_per_worker
        if not gpus and ((job.device or "").startswith("cuda") or (job.device is None and self.size["gpus"] >= 1)):
            gpus = 1.0  # a CUDA model: one GPU per actor (Ray hides GPUs from actors that ask for none)
        self.gpus = gpus
        if job.workers:
            n = job.workers
        elif gpus:
            n = max(1, int(self.size["gpus"] // gpus))
        else:
            n = max(1, int(self.size["cpus"] // cpus))
        self.n_actors, self.threads = n, max(1, int(cpus))
        self.env = worker_env(self.threads)
        ray = self.rt.ray
        t0 = time.perf_counter()
        probe = ray.remote(_probe).options(num_cpus=cpus, num_gpus=gpus, runtime_env={"env_vars": self.env})
        try:
            got = ray.get(probe.remote(job, self.threads))
        except Exception as exc:
            inner = _medfm_error(exc)
            if inner is None:
                raise
            self.close()
            raise inner from None
        self.probe_seconds = time.perf_counter() - t0
        self._info, self._key_view = got["info"], got["key_view"]
        self.timing: list[dict[str, Any]] = []  # per computed shard of the last split: pid, t0, t1, rows
        self._quiet_ray_data()

    def _quiet_ray_data(self) -> None:
        """No progress bars or execution banners from Ray Data (medfm prints one line per split)."""
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.enable_auto_log_stats = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # failures still raise from iter_rows

    def describe(self) -> dict[str, Any]:
        return {**self._info, "executor": {"kind": "ray", "engine": "ray.data", "address": self.job.address or "local",
                                           "nodes": self.size["nodes"], "workers": self.n_actors,
                                           "gpus_per_worker": self.gpus}}

    def embed_split(self, split: Any, name: str, n: int, key: str, cache: EmbeddingCache | None) -> tuple[np.ndarray, CacheStats | None]:
        tmp = None
        if cache is None:  # shards still need a home while the split is computed
            tmp = tempfile.mkdtemp(prefix="medfm-shards-")
            cache = EmbeddingCache(Path(tmp))
        try:
            ckey, fields = cache.key(self._key_view, key, n)  # type: ignore[arg-type]
            d, size = cache.open_entry(ckey, fields, self.job.shard_size)  # shards = the entry's chunks
            stats = CacheStats(key=ckey, path=str(d))
            shards = [(i, s, min(n, s + size)) for i, s in enumerate(range(0, n, size))]
            todo = []
            for i, s, e in shards:
                if cache.read_chunk(d, i, e - s) is None:
                    if cache._chunk_path(d, i).exists():
                        stats.chunks_corrupt.append(i)
                    todo.append((i, s, e))
            stats.chunks_hit = len(shards) - len(todo)
            self.timing = []
            if todo:
                stats.chunks_computed = self._compute(name, todo, cache, d)
            parts = [cache.read_chunk(d, i, e - s) for i, s, e in shards]
            if any(p is None for p in parts):
                raise MedfmError(f"embedding cache entry {d}: a shard vanished while the split was embedded")
            dim = self._info.get("dim") or 0
            emb = np.concatenate(parts, axis=0) if parts else np.zeros((0, dim), np.float32)
            return emb, (None if tmp else stats)
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    def _compute(self, name: str, todo: list[tuple[int, int, int]], cache: EmbeddingCache, d: Path) -> int:
        """Run the missing shards through Ray Data; write each into the cache as it arrives."""
        import ray.data

        items = [{"shard": i, "start": s, "stop": e} for i, s, e in todo]
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _EmbedShards, fn_constructor_args=(self.job, self.threads, name), batch_size=1, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(self.n_actors, len(items))), num_cpus=self.job.cpus_per_worker,
            num_gpus=self.gpus or None, runtime_env={"env_vars": self.env},
        )  # Ray Data's actors restart when they die, and their shards are retried
        rows = {i: e - s for i, s, e in todo}
        done = 0
        try:
            for row in ds.iter_rows():
                i = int(row["shard"])
                arr = np.load(io.BytesIO(row["npy"]), allow_pickle=False)
                if arr.ndim != 2 or arr.shape[0] != rows[i]:
                    raise MedfmError(f"embedding shard {i} of {name}: got {arr.shape}, expected {rows[i]} rows")
                cache.write_chunk(d, i, arr)  # the driver alone writes: one index, no races
                self.timing.append({"shard": i, "pid": int(row["pid"]), "t0": float(row["t0"]), "t1": float(row["t1"]),
                                    "rows": rows[i]})
                done += 1
        except MedfmError:
            raise
        except Exception as exc:
            inner = _medfm_error(exc)
            if inner is not None:
                raise inner from None
            raise
        return done

    def close(self) -> None:
        if self.rt.started:
            self.rt.shutdown()
