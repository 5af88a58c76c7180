"""Pieces every torch adapter shares: seeded init, weight files, hashes, the encoder base class."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfm.errors import InputError, MissingWeightsError
from medfm.models.base import ModelAdapter
from medfm.models.card import ModelCard

if TYPE_CHECKING:
    import torch

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_HASH_MEMO: dict[tuple[str, int, int], str] = {}


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's RNG seeded to ``seed``, restoring the caller's RNG state after."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised on (path, size, mtime) so reloading a model does not re-hash."""
    from medfm._paths import file_hash

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_MEMO:
        _HASH_MEMO[key] = file_hash(path)
    return _HASH_MEMO[key]


def weight_files(folder: Path) -> list[Path]:
    """Weight files directly in ``folder`` (sorted), the files ``weights_hash`` covers."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def files_hash(paths: list[Path]) -> str:
    """One sha256 over several weight files (names and contents)."""
    if len(paths) == 1:
        return file_sha256(paths[0])
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(file_sha256(p).encode())
    return h.hexdigest()


def state_dict_hash(module: torch.nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes, bytes): identity of random inits."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file or a torch checkpoint read with ``weights_only=True``.

    A checkpoint wrapping its tensors under ``state_dict`` / ``model`` is unwrapped.
    """
    import torch

    if not path.is_file():
        raise MissingWeightsError(f"{path}: weight file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise InputError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return obj


def load_into(module: torch.nn.Module, path: Path, strict: bool = True) -> None:
    """Load weights from ``path`` into ``module``; a key mismatch names the file."""
    state = load_state_dict_file(path)
    try:
        module.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not fit this architecture ({str(exc)[:400]})") from exc


def save_module(module: torch.nn.Module, path: Path) -> None:
    """Write a module's weights as safetensors (handles tied/shared tensors), atomically."""
    from safetensors.torch import save_model

    from medfm._paths import atomic_path

    with atomic_path(path) as tmp:
        save_model(module, str(tmp))


def write_json(path: Path, obj: Any) -> None:
    from medfm._paths import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


def quiet_transformers() -> None:
    """Silence transformers' per-load info chatter (warnings and errors still show)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


class TorchAdapter(ModelAdapter):
    """An adapter around torch modules: ``tower`` maps (N, C, H, W) -> (N, D), differentiably.

    ``encode_image`` = ``tower`` under inference mode and autocast; fine-tuning code calls
    ``trainable_module()`` (the same tower) with gradients instead.
    """

    tower: torch.nn.Module | None = None

    def __init__(self, card: ModelCard, device: str = "cpu") -> None:
        super().__init__(card, device)

    def _place(self, *modules: torch.nn.Module | None) -> None:
        for m in modules:
            if m is not None:
                m.to(self.device).eval()

    def encode_image(self, batch: torch.Tensor) -> torch.Tensor:
        """Preprocessed batch (N, C, H, W) -> image embeddings (N, D) float32 (unnormalised)."""
        self.require("image_encoder", "encode_image")
        assert self.tower is not None
        with self.autocast():
            out = self.tower(batch.to(self.device, non_blocking=True))
        return out.float()

    def trainable_module(self) -> torch.nn.Module:
        if self.tower is None:
            raise NotImplementedError(f"model '{self.card.id}' has no image tower to train")
        return self.tower

    def modules_for_hash(self) -> list[torch.nn.Module]:
        """Modules whose state dict identifies a random init (default: the tower)."""
        return [self.tower] if self.tower is not None else []
