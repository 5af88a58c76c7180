"""Batched image embeddings with preprocessing overlapped with compute, and a resumable cache.

``embed_arrays`` prepares batch i+1 in a background thread while batch i runs through the
model (``torch.inference_mode``, bf16 autocast where it pays), and returns float32 (N, D).
``embed_cached`` stores results under a key made of the weights hash, the preprocessing, the
data key (a content checksum of the images) and the compute dtype, in chunks: each chunk is
written atomically (temp file + rename) with its sha256 in the entry's index, so an
interrupted run resumes at the first missing chunk and a truncated or corrupted chunk is
detected and recomputed. ``embed_dataset(EmbedJob(...))`` is what ``medfm embed`` runs: every
split of a dataset, in this process or on Ray actors (``medfm.models.embed_ray``) over the same
chunks, arrays and a manifest written to the output folder.
"""

from __future__ import annotations

import hashlib
import json
import queue
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medfm._paths import atomic_path, atomic_write_text, file_hash, home
from medfm._runtime import check_precision
from medfm.errors import ConfigError, InputError
from medfm.models.base import ModelAdapter

if TYPE_CHECKING:
    import torch

ImagesLike = np.ndarray | Sequence[np.ndarray]
CACHE_FORMAT = 1


def _n_images(images: ImagesLike, ndim: int = 2) -> int:
    """Number of images; a stacked array must be (N, [C,] H, W), or (N, [C,] D, H, W) for a 3D model."""
    if isinstance(images, np.ndarray):
        if images.ndim not in (ndim + 1, ndim + 2):
            axes = "H, W" if ndim == 2 else "D, H, W"
            hint = " (a batch of 3D volumes? a 2D model takes 2D slices)" if ndim == 2 and images.ndim == 5 else ""
            raise InputError(f"images: expected (N, {axes}) or (N, C, {axes}), got shape {images.shape}{hint}")
        return int(images.shape[0])
    return len(images)


def _batches(adapter: ModelAdapter, images: ImagesLike, batch_size: int, pin: bool) -> Iterator[torch.Tensor]:
    """Preprocessed batches, produced one ahead in a background thread (errors re-raised here)."""
    n = _n_images(images, adapter.card.input_ndim)
    q: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def work() -> None:
        try:
            for s in range(0, n, batch_size):
                if stop.is_set():
                    return
                batch = adapter.preprocess(images[s : s + batch_size])  # type: ignore[index]
                q.put(batch.pin_memory() if pin else batch)
            q.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
            q.put(exc)

    thread = threading.Thread(target=work, name="medfm-preprocess", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def embed_arrays(
    adapter: ModelAdapter,
    images: ImagesLike,
    batch_size: int = 64,
    precision: str = "auto",
    progress: bool = True,
    desc: str = "",
) -> np.ndarray:
    """Images (a stacked (N, [C,] H, W) array or a list of (H, W) / (C, H, W)) -> (N, D) float32.

    ``precision``: "auto" keeps the adapter's setting; "bf16" / "fp32" override it for this call.
    Progress (images/s) goes to stderr when ``progress``.
    """
    from medfm._progress import track

    adapter.require("image_encoder", "embedding images")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    check_precision(precision)
    n = _n_images(images, adapter.card.input_ndim)
    old = adapter.precision
    if precision != "auto":
        adapter.precision = precision
    try:
        parts: list[np.ndarray] = []
        batches: Any = _batches(adapter, images, batch_size, pin=adapter.device.startswith("cuda"))
        if progress:
            batches = track(batches, total=n, desc=desc or f"embed {adapter.card.id}", unit="img",
                            weight=lambda b: int(b.shape[0]))
        for batch in batches:
            parts.append(adapter.encode_image(batch).cpu().numpy().astype(np.float32, copy=False))
    finally:
        adapter.precision = old
    if not parts:
        return np.zeros((0, adapter.card.embed_dim or 0), dtype=np.float32)
    return np.concatenate(parts, axis=0)


def compute_dtype(adapter: ModelAdapter, precision: str = "auto") -> str:
    """"bfloat16" or "float32": the dtype the forward will run in (part of the cache key)."""
    from medfm._runtime import autocast_dtype

    dtype = autocast_dtype(adapter.device, adapter.precision if precision == "auto" else precision)
    return "bfloat16" if dtype is not None else "float32"


@dataclass
class CacheStats:
    """What the last ``embed_cached`` call did: chunks read from the cache vs computed."""

    key: str = ""
    path: str = ""
    chunks_hit: int = 0
    chunks_computed: int = 0
    chunks_corrupt: list[int] = field(default_factory=list)


class EmbeddingCache:
    """Folder of cached embeddings: ``<root>/<key>/{meta.json, index.json, chunk-000000.npy, ...}``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else home() / "embeddings"
        self.last = CacheStats()

    def key(self, adapter: ModelAdapter, data_key: str, n: int, precision: str = "auto") -> tuple[str, dict[str, Any]]:
        """(hex key, the fields it hashes): weights, preprocessing, pooling, data, N, dtype."""
        from medfm._config import to_dict

        if not adapter.weights_hash:
            raise ConfigError(f"model '{adapter.card.id}' has no weights hash; cannot cache its embeddings")
        fields = {
            "format": CACHE_FORMAT,
            "model": adapter.card.id,
            "weights_hash": adapter.weights_hash,
            "preprocess": to_dict(adapter.card.preprocess),
            "pool": adapter.card.config.get("pool"),
            "data_key": data_key,
            "n": n,
            "dtype": compute_dtype(adapter, precision),
        }
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:40], fields

    def entry_dir(self, key: str) -> Path:
        return self.root / key

    # -- chunk files -------------------------------------------------------------------
    @staticmethod
    def _chunk_path(d: Path, i: int) -> Path:
        return d / f"chunk-{i:06d}.npy"

    @staticmethod
    def _read_index(d: Path) -> dict[str, Any]:
        try:
            return json.loads((d / "index.json").read_text())
        except (OSError, ValueError):
            return {}

    def read_chunk(self, d: Path, i: int, rows: int) -> np.ndarray | None:
        """The chunk when present and intact (hash and shape match its index entry), else None."""
        p = self._chunk_path(d, i)
        info = self._read_index(d).get(str(i))
        if not p.is_file() or not info or info.get("rows") != rows:
            return None
        if file_hash(p) != info.get("sha256"):
            return None
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError):
            return None
        return arr if arr.ndim == 2 and arr.shape[0] == rows else None

    def write_chunk(self, d: Path, i: int, arr: np.ndarray) -> None:
        p = self._chunk_path(d, i)
        with atomic_path(p) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(arr, dtype=np.float32))
        index = self._read_index(d)
        index[str(i)] = {"rows": int(arr.shape[0]), "sha256": file_hash(p)}
        atomic_write_text(d / "index.json", json.dumps(index, indent=1, sort_keys=True))

    def open_entry(self, key: str, fields: dict[str, Any], chunk_size: int) -> tuple[Path, int]:
        """Entry folder for ``key`` and its chunk size. An entry with the same fields keeps the
        chunk size it was started with (its chunks stay valid whatever size a later caller asks
        for: embeddings do not depend on it); an entry of another layout is started afresh."""
        d = self.entry_dir(key)
        try:
            old = json.loads((d / "meta.json").read_text())
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict):
            size = old.get("chunk_size")
            if isinstance(size, int) and size > 0 and {k: v for k, v in old.items() if k != "chunk_size"} == fields:
                return d, size
        if d.exists():
            shutil.rmtree(d)  # medfm's own cache entry, stale layout
        d.mkdir(parents=True, exist_ok=True)
        meta = {**fields, "chunk_size": chunk_size}
        atomic_write_text(d / "meta.json", json.dumps(meta, indent=1, sort_keys=True))
        return d, chunk_size


def embed_cached(
    adapter: ModelAdapter,
    images: ImagesLike,
    data_key: str,
    cache: EmbeddingCache | None = None,
    chunk_size: int = 2048,
    **kw: Any,
) -> np.ndarray:
    """``embed_arrays`` with a disk cache; ``data_key`` must identify the images' content.

    Key = weights hash + preprocessing + pooling + ``data_key`` + N + compute dtype. Chunks of
    ``chunk_size`` images are saved as they finish (resume after interruption); ``cache.last``
    tells how many chunks were read vs computed. ``kw`` goes to ``embed_arrays``.
    """
    if not data_key:
        raise ConfigError("embed_cached needs a data_key (a checksum of the images)")
    cache = cache or EmbeddingCache()
    n = _n_images(images, adapter.card.input_ndim)
    key, fields = cache.key(adapter, data_key, n, kw.get("precision", "auto"))
    d, chunk_size = cache.open_entry(key, fields, chunk_size)  # an entry started with other chunks keeps them
    stats = CacheStats(key=key, path=str(d))
    parts: list[np.ndarray] = []
    for i, s in enumerate(range(0, n, chunk_size)):
        e = min(n, s + chunk_size)
        arr = cache.read_chunk(d, i, e - s)
        if arr is None:
            if cache._chunk_path(d, i).exists():
                stats.chunks_corrupt.append(i)
            base = kw.get("desc") or f"embed {adapter.card.id}"
            call = {**kw, "desc": f"{base} [{s}:{e}]" if n > chunk_size else base}
            arr = embed_arrays(adapter, images[s:e], **call)  # type: ignore[index]
            cache.write_chunk(d, i, arr)
            stats.chunks_computed += 1
        else:
            stats.chunks_hit += 1
        parts.append(arr)
    cache.last = stats
    if not parts:
        return np.zeros((0, adapter.card.embed_dim or 0), dtype=np.float32)
    return np.concatenate(parts, axis=0)


# --------------------------------------------------------------------------------------
# Dataset level: what ``medfm embed`` runs (one call, local or on Ray)
# --------------------------------------------------------------------------------------
def split_images(split: Any, start: int = 0, stop: int | None = None) -> ImagesLike:
    """Images ``start:stop`` of a dataset split: the split's stacked array when it has one
    (MedMNIST), else the samples' (C, H, W) arrays read one by one (only those asked for)."""
    stop = len(split) if stop is None else min(stop, len(split))
    stacked = split.images()
    if stacked is not None:
        return stacked[start:stop]
    return [split[i].image.array for i in range(start, stop)]


@dataclass
class EmbedJob:
    """What to embed and how: a dataset's splits with one model; ``out`` gets ``<split>.npy``,
    ``<split>_labels.npy`` and ``manifest.json`` (written last). ``executor`` "ray" spreads
    shards of ``shard_size`` images over ``workers`` actors (see ``medfm.models.embed_ray``)."""

    dataset: str
    model: str
    splits: list[str] = field(default_factory=list)  # empty = every split
    data_dir: str | None = None
    batch_size: int = 64
    precision: str = "auto"
    device: str | None = None
    limit: int | None = None
    out: Path | None = None
    force: bool = False
    use_cache: bool = True
    cache_dir: Path | None = None
    executor: str = "local"
    address: str | None = None
    workers: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    shard_size: int = 2048


def embed_dataset(job: EmbedJob, log: Any = None) -> dict[str, Any]:
    """Embed every split of ``job`` and return the manifest (also written to ``job.out``).

    Local: the model runs in this process through :func:`embed_cached` (chunks of
    ``shard_size``). Ray: the same chunks are computed by actors and written into the same cache
    entry, so both paths give the same arrays and either resumes the other's partial work.
    ``log(line)`` gets one line per split.
    """
    from medfm import __version__
    from medfm._provenance import versions
    from medfm._runtime import configure_threads
    from medfm.data import load_dataset

    check_precision(job.precision, "--precision")
    if job.executor not in ("local", "ray"):
        raise ConfigError(f"--executor must be local or ray, got {job.executor!r}")
    if job.shard_size < 1:
        raise ConfigError(f"shard size must be >= 1, got {job.shard_size}")
    if job.executor == "ray":
        from medfm._optional import optional_import

        optional_import("ray")  # one line naming the extra, before any work or output folder
    out_dir = _prepare_out(job)
    ds = load_dataset(job.dataset, job.data_dir)
    names = list(job.splits) or list(ds.splits)
    cache = EmbeddingCache(job.cache_dir) if job.use_cache else None
    if job.executor == "ray":
        from medfm.models.embed_ray import RayEmbedder

        engine: Any = RayEmbedder(job)
    else:
        configure_threads()
        engine = _LocalEmbedder(job)
    try:
        manifest: dict[str, Any] = {
            "medfm_version": __version__, "dataset": job.dataset, "model_arg": job.model, **engine.describe(),
            "batch_size": job.batch_size, "limit": job.limit, "shard_size": job.shard_size,
            "versions": versions(), "splits": {},
        }
        for name in names:
            sd = ds.split(name)
            n = len(sd) if job.limit is None else min(job.limit, len(sd))
            key = sd.checksum() if job.limit is None else f"{sd.checksum()}:first{job.limit}"
            t0 = time.perf_counter()
            emb, stats = engine.embed_split(sd, name, n, key, cache)
            sec = time.perf_counter() - t0
            labels = np.asarray(sd.labels)[:n]
            info: dict[str, Any] = {
                "n": int(emb.shape[0]), "dim": int(emb.shape[1]) if emb.ndim == 2 else 0, "data_checksum": key,
                "seconds": round(sec, 3), "images_per_s": round(emb.shape[0] / sec, 1) if sec > 0 else None,
                "cache": None if stats is None else {"hit": stats.chunks_hit, "computed": stats.chunks_computed, "entry": stats.path},
            }
            if out_dir is not None:
                for fname, arr in ((f"{name}.npy", emb), (f"{name}_labels.npy", labels)):
                    with atomic_path(out_dir / fname) as tmp:
                        with open(tmp, "wb") as f:
                            np.save(f, arr)
                info["file"], info["labels_file"] = f"{name}.npy", f"{name}_labels.npy"
            manifest["splits"][name] = info
            if log is not None:
                log(f"{name}: {info['n']} x {info['dim']} in {sec:.1f}s")
    finally:
        engine.close()
    if out_dir is not None:
        atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2, default=str))
        manifest["out"] = str(out_dir)
    return manifest


def _prepare_out(job: EmbedJob) -> Path | None:
    from medfm._paths import prepare_out_dir

    return prepare_out_dir(job.out, force=job.force) if job.out is not None else None


class _LocalEmbedder:
    """The model in this process; splits through :func:`embed_cached` (or uncached)."""

    def __init__(self, job: EmbedJob) -> None:
        from medfm.models import create_model

        self.job = job
        self.adapter = create_model(job.model, device=job.device, precision=job.precision)
        self.adapter.require("image_encoder", "medfm embed")

    def describe(self) -> dict[str, Any]:
        a = self.adapter
        return {"model": a.card.id, "weights_hash": a.weights_hash, "weights_source": a.weights_source,
                "device": a.device, "dtype": compute_dtype(a), "executor": {"kind": "local", "nodes": 1, "workers": 1}}

    def embed_split(self, split: Any, name: str, n: int, key: str, cache: EmbeddingCache | None) -> tuple[np.ndarray, CacheStats | None]:
        images = split_images(split, 0, n)
        kw = {"batch_size": self.job.batch_size, "desc": f"embed {name}"}
        if cache is None:
            return embed_arrays(self.adapter, images, **kw), None
        emb = embed_cached(self.adapter, images, key, cache=cache, chunk_size=self.job.shard_size, **kw)
        return emb, cache.last

    def close(self) -> None:
        pass
