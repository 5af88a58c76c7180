"""``medfm embed --executor ray``: shards of a split embedded by Ray actors that hold the model.

Each actor (``workers`` of them: N CPU actors, or one per GPU with ``gpus_per_worker=1``) loads
the model once and the dataset lazily, and embeds the shard ``[start, stop)`` it is handed in
batches (bf16 autocast or fp32, as the local path). Shards are the embedding cache's chunks:
the driver writes each returned shard into the cache entry atomically with its checksum, so a
crash (driver, actor or node) resumes at the first missing shard and the arrays equal the local
path's. A dead actor is restarted by Ray and its shard retried.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from medfm.models.embed import CacheStats, EmbedJob, EmbeddingCache, split_images


class _EmbedActor:
    """Model + dataset in a Ray worker; ``embed(split, start, stop)`` -> (stop-start, D) float32."""

    def __init__(self, job: EmbedJob, threads: int) -> None:
        from medfm._runtime import configure_threads
        from medfm.models import create_model

        configure_threads(threads)
        self.job = job
        self.adapter = create_model(job.model, device=job.device, precision=job.precision)
        self.adapter.require("image_encoder", "medfm embed")
        self._ds: Any = None

    def describe(self) -> dict[str, Any]:
        from medfm.models.embed import compute_dtype

        a = self.adapter
        return {"model": a.card.id, "weights_hash": a.weights_hash, "weights_source": a.weights_source,
                "device": a.device, "dtype": compute_dtype(a)}

    def cache_key(self, data_key: str, n: int) -> tuple[str, dict[str, Any]]:
        return EmbeddingCache(Path(tempfile.gettempdir())).key(self.adapter, data_key, n)

    def embed(self, split: str, start: int, stop: int) -> np.ndarray:
        from medfm.data import load_dataset
        from medfm.models.embed import embed_arrays

        if self._ds is None:
            self._ds = load_dataset(self.job.dataset, self.job.data_dir)
        images = split_images(self._ds.split(split), start, stop)
        return embed_arrays(self.adapter, images, batch_size=self.job.batch_size, progress=False)


class RayEmbedder:
    """Actor pool over shards (see the module docstring); ``close()`` stops what it started."""

    def __init__(self, job: EmbedJob) -> None:
        from medfm._ray import connect, worker_env

        self.job = job
        cpus, gpus = job.cpus_per_worker, job.gpus_per_worker
        n_local = None if job.address else max(1, int(round((job.workers or 1) * cpus)))
        self.rt = connect(job.address, num_cpus=n_local)
        size = self.rt.size()
        self.size = size
        if job.workers:
            n = job.workers
        elif gpus:
            n = max(1, int(size["gpus"] // gpus))
        else:
            n = max(1, int(size["cpus"] // cpus))
        threads = max(1, int(cpus))
        actor = self.rt.ray.remote(_EmbedActor).options(
            num_cpus=cpus, num_gpus=gpus, max_restarts=2, max_task_retries=2,
            runtime_env={"env_vars": worker_env(threads)},
        )
        self.actors = [actor.remote(job, threads) for _ in range(n)]
        self._info = self.rt.ray.get(self.actors[0].describe.remote())

    def describe(self) -> dict[str, Any]:
        return {**self._info, "executor": {"kind": "ray", "address": self.job.address or "local",
                                           "nodes": self.size["nodes"], "workers": len(self.actors)}}

    def embed_split(self, split: Any, name: str, n: int, key: str, cache: EmbeddingCache | None) -> tuple[np.ndarray, CacheStats | None]:
        ray = self.rt.ray
        tmp = None
        if cache is None:  # shards still need a home while the split is computed
            tmp = tempfile.mkdtemp(prefix="medfm-shards-")
            cache = EmbeddingCache(Path(tmp))
        try:
            ckey, fields = ray.get(self.actors[0].cache_key.remote(key, n))
            d = cache.open_entry(ckey, fields, self.job.shard_size)
            stats = CacheStats(key=ckey, path=str(d))
            size = self.job.shard_size
            shards = [(i, s, min(n, s + size)) for i, s in enumerate(range(0, n, size))]
            todo = []
            for i, s, e in shards:
                if cache.read_chunk(d, i, e - s) is None:
                    if cache._chunk_path(d, i).exists():
                        stats.chunks_corrupt.append(i)
                    todo.append((i, s, e))
            stats.chunks_hit = len(shards) - len(todo)
            free = list(self.actors)
            pending: dict[Any, tuple[Any, int]] = {}
            while todo or pending:
                while todo and free:
                    a = free.pop()
                    i, s, e = todo.pop(0)
                    pending[a.embed.remote(name, s, e)] = (a, i)
                ready, _ = ray.wait(list(pending), num_returns=1)
                a, i = pending.pop(ready[0])
                cache.write_chunk(d, i, ray.get(ready[0]))  # the driver alone writes: one index, no races
                stats.chunks_computed += 1
                free.append(a)
            parts = [cache.read_chunk(d, i, e - s) for i, s, e in shards]
            if any(p is None for p in parts):
                from medfm.errors import MedfmError

                raise MedfmError(f"embedding cache entry {d}: a shard vanished while the split was embedded")
            dim = self._info.get("dim") or 0
            emb = np.concatenate(parts, axis=0) if parts else np.zeros((0, dim), np.float32)
            return emb, (None if tmp else stats)
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)

    def close(self) -> None:
        for a in self.actors:
            try:
                self.rt.ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors = []
        if self.rt.started:
            self.rt.shutdown()
