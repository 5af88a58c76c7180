"""What produced a result: library versions, git commit, hashes of data and weights."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

_PACKAGES = (
    "medfm", "torch", "torchvision", "numpy", "monai", "timm", "transformers", "open_clip_torch",
    "peft", "scikit-learn", "scikit-survival", "torchmetrics", "pydicom", "nibabel",
)


@functools.cache
def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


@functools.cache
def git_commit() -> str | None:
    """Commit of the medfm source tree when it is a git checkout (editable installs)."""
    here = Path(__file__).resolve().parent
    try:
        res = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


# weights hash -> where those weights came from ({"weights_source", "weights_revision"}),
# noted by the model zoo when it builds a model, read by ``results.make_provenance`` so every
# record made with those weights names the hub commit they were downloaded at.
_WEIGHTS: dict[str, dict[str, str]] = {}


def note_weights(weights_hash: str | None, **info: str | None) -> None:
    """Remember what is known about the weights with ``weights_hash`` (None values are dropped)."""
    if weights_hash:
        _WEIGHTS.setdefault(weights_hash, {}).update({k: v for k, v in info.items() if v is not None})


def weights_info(weights_hash: str | None) -> dict[str, str]:
    """What ``note_weights`` recorded for ``weights_hash`` (empty when nothing is known)."""
    return dict(_WEIGHTS.get(weights_hash or "", {}))
