"""Runtime choices made once: device, thread count, whether bf16 autocast pays off."""

from __future__ import annotations

import functools
import os

from medfm.errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp32")  # compute precision of models: bf16 autocast where it pays off, or fp32


def check_precision(precision: str, what: str = "precision") -> str:
    """``precision`` when it is one of ``PRECISIONS``, else one ConfigError line naming ``what``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"{what} must be auto, bf16 or fp32, got {precision!r}")
    return precision


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX-BF16 or AVX512-BF16 (bf16 matmul several times fp32)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def env_threads() -> int | None:
    """The thread count the user set (``MEDFM_THREADS``, else ``OMP_NUM_THREADS``); None if neither."""
    for var in ("MEDFM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").isdigit() and int(os.environ[var]) > 0:
            return int(os.environ[var])
    return None


def default_threads() -> int:
    """Threads for torch: ``MEDFM_THREADS`` (``medfm --threads``), else ``OMP_NUM_THREADS``,
    else the cores not already busy (cores minus the 1-minute load average, at least 1).

    medfm does not assume it owns the machine: on a shared 2-core machine two processes each
    using 2 threads fight (spin-waiting threads, up to 10x slower), so a busy machine gets fewer.
    """
    n = env_threads()
    if n:
        return n
    cores = os.cpu_count() or 1
    try:
        busy = round(os.getloadavg()[0])
    except OSError:
        busy = 0
    return max(1, min(cores, cores - busy))


def configure_threads(n: int | None = None) -> int:
    import torch

    n = n or default_threads()
    torch.set_num_threads(n)
    return n


def autocast_dtype(device: str, precision: str = "auto"):  # -> torch.dtype | None
    """bf16 on CUDA and on CPUs with fast bf16 unless ``precision='fp32'``; None = no autocast."""
    import torch

    if precision == "fp32":
        return None
    if precision == "bf16":
        if not device.startswith("cuda") and not cpu_has_fast_bf16():
            _warn_slow_bf16()
        return torch.bfloat16
    if device.startswith("cuda") or cpu_has_fast_bf16():
        return torch.bfloat16
    return None


@functools.cache
def _warn_slow_bf16() -> None:
    """Once per process: explicit bf16 on a CPU without bf16 units is emulated and very slow."""
    import warnings

    warnings.warn(
        "precision bf16 on a CPU without AMX-BF16 / AVX512-BF16 units: bf16 is emulated there and can be "
        "tens of times slower than fp32 (a 3D ResNet-18 training step: ~40x on a 2-core EPYC); "
        "use precision auto or fp32 on this machine",
        RuntimeWarning,
        stacklevel=3,
    )
