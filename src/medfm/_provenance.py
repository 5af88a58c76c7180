"""What produced a result: library versions, git commit, hashes of data and weights."""

from __future__ import annotations

import functools
import os
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


def git_state(folder: Path) -> dict[str, object]:
    """``{"commit", "dirty"}`` of the git checkout whose tracked files include ``folder``'s
    ``__init__.py``; both None when it is not one (a wheel install, even inside another repo).
    ``dirty``: uncommitted changes to tracked files under ``folder`` or the checkout's top-level
    ``benchmarks/`` (whose scripts produce results too); docs and tests do not count."""
    def git(*args: str) -> subprocess.CompletedProcess | None:
        try:
            # no optional locks: `status` must not take index.lock from under a user's own git command
            env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
            return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=5, env=env)
        except (OSError, subprocess.TimeoutExpired):
            return None

    none = {"commit": None, "dirty": None}
    tracked = git("ls-files", "--error-unmatch", "__init__.py")
    if tracked is None or tracked.returncode != 0:
        return none
    head, status = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(top)benchmarks")
    if head is None or head.returncode != 0 or not head.stdout.strip():
        return none
    dirty = None if status is None or status.returncode != 0 else bool(status.stdout.strip())
    return {"commit": head.stdout.strip(), "dirty": dirty}


@functools.cache
def source_state() -> dict[str, object]:
    """The medfm source tree's git state, read once, when medfm is first imported: the code a
    process runs is what it imported, so a commit made while a long run goes on is not named."""
    return git_state(Path(__file__).resolve().parent)


def git_commit() -> str | None:
    """Commit of the medfm source tree when it is a git checkout (editable installs)."""
    commit = source_state()["commit"]
    return str(commit) if commit else None


def git_dirty() -> bool | None:
    """Whether the medfm source tree had uncommitted changes to tracked files at import (None: unknown)."""
    dirty = source_state()["dirty"]
    return None if dirty is None else bool(dirty)


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
