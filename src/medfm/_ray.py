"""Joining or starting a Ray runtime for medfm's Ray executors (bench cells, embedding shards).

Nothing here imports ``ray`` until :func:`connect` is called; without the ``scale`` extra that
call raises a ConfigError naming it. With no address, a one-machine runtime is started on
loopback with a small object store (cells return records, shards return small arrays, so
Ray's default of 30% of RAM would only take memory from the models).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from medfm._optional import optional_import
from medfm.errors import ConfigError

DEFAULT_OBJECT_STORE_MB = 200
# Passed to every worker so that a cell computes the same way wherever it runs.
FORWARDED_ENV = (
    "MEDFM_HOME", "MEDFM_DATA", "MEDFM_THREADS", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME",
    "OMP_WAIT_POLICY", "MEDFM_CELL_CACHE", "MEDFM_STORE",
    # where URL caches live (not secrets: each node reads its own credentials or instance role)
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE",
)
FORWARDED_PREFIXES = ("FSSPEC_",)  # fsspec's per-protocol settings, e.g. FSSPEC_S3_ENDPOINT_URL
_SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD", "_KEY", "CREDENTIAL")  # never forwarded (FSSPEC_S3_KEY, ...)


@dataclass
class RayRuntime:
    """A connected runtime: the ``ray`` module, whether medfm started it, and the cluster's size."""

    ray: Any
    started: bool
    address: str | None

    def size(self) -> dict[str, Any]:
        """Nodes alive and total CPUs / GPUs, for provenance and progress lines."""
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        res = self.ray.cluster_resources()
        return {"nodes": len(nodes), "cpus": float(res.get("CPU", 0)), "gpus": float(res.get("GPU", 0))}

    def shutdown(self) -> None:
        """Disconnect (and stop the runtime when medfm started it)."""
        if self.ray.is_initialized():
            self.ray.shutdown()


def worker_env(threads: int) -> dict[str, str]:
    """Environment for Ray workers: medfm's settings from the driver, ``threads`` BLAS/torch threads."""
    env = {k: v for k, v in os.environ.items() if k in FORWARDED_ENV
           or (k.startswith(FORWARDED_PREFIXES) and not any(w in k for w in _SECRET_WORDS))}
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "MEDFM_THREADS": str(threads)})
    return env


def connect(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None,
            object_store_mb: int = DEFAULT_OBJECT_STORE_MB) -> RayRuntime:
    """Join the cluster at ``address`` ("auto", "HOST:PORT", "ray://HOST:PORT") or, with None,
    start a one-machine runtime on loopback with ``num_cpus`` CPUs.

    Raises ConfigError (one line) when ray is not installed or the cluster cannot be reached.
    """
    local = address is None
    if local:
        # one-machine mode: Ray keeps "127.0.0.1" as the node address and binds loopback only
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = optional_import("ray")
    if ray.is_initialized():
        return RayRuntime(ray, started=False, address=address)
    kw: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    try:
        if local:
            ray.init(num_cpus=num_cpus, num_gpus=num_gpus, object_store_memory=object_store_mb * 1024 * 1024,
                     include_dashboard=False, **kw)
        else:
            ray.init(address=address, **kw)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = "a local Ray runtime" if local else f"the Ray cluster at {address}"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"could not start or reach {where}: {first}") from exc
    return RayRuntime(ray, started=local, address=address)
