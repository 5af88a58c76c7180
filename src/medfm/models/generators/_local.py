"""Find a generator's weights on disk before anything touches the hub.

A card's ``source`` is a local folder (absolute path, ``~`` path, or ``local-dir:PATH``) or a
hub id (``org/repo``). Hub ids are looked up in medfm's model cache and the local Hugging Face cache only
(``medfm.models.hub.locate``: no network), so an absent model fails fast with a
``MissingWeightsError`` instead of the hub client's ~46 s of retries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medfm.errors import ConfigError, MissingWeightsError
from medfm.models.card import ModelCard


def _as_local_path(source: str) -> Path | None:
    """The folder ``source`` names when it is a path rather than a hub id (None for hub ids)."""
    if source.startswith("local-dir:"):
        return Path(source[len("local-dir:") :]).expanduser()
    p = Path(source).expanduser()
    if source.startswith(("/", "~", ".")) or p.exists() or source.count("/") != 1:
        return p
    return None


def resolve_weights_folder(card: ModelCard, path: str | Path | None = None) -> Path:
    """Local folder holding ``config.json`` and the weights of ``card`` (or of ``path``).

    Raises ``MissingWeightsError`` naming what is missing and how to fetch it; never calls the
    network.
    """
    source = str(path) if path is not None else card.source
    if not source:
        raise MissingWeightsError(f"model '{card.id}' has no weight source; pass a local folder")
    local = Path(path).expanduser() if path is not None else _as_local_path(source)
    if local is not None:
        if not (local / "config.json").is_file():
            raise MissingWeightsError(f"{local}: no config.json there (model '{card.id}' expects a saved model folder)")
        return local
    from medfm.models import hub

    folder = hub.locate(card)
    if folder is None:
        why = "not in medfm's model cache or the Hugging Face cache"
        raise hub.missing_weights_error(card, why + (" (HF_HUB_OFFLINE is set)" if hub.hub_offline() else ""))
    if not (folder / "config.json").is_file():
        raise MissingWeightsError(f"model '{card.id}': {folder} has no config.json (incomplete download)")
    return folder


# Above this many bytes the weights are identified by names, sizes and the snapshot folder
# (hashing 15 GB of a 7B model would cost minutes on every load).
FULL_HASH_LIMIT = 1 << 30


def folder_weights_hash(folder: Path) -> str | None:
    """Identity of the weights in ``folder``: sha256 of the files, or ``meta:`` + a hash of
    (name, size) and the folder name for checkpoints over ``FULL_HASH_LIMIT`` bytes."""
    import hashlib

    from medfm.models.adapters._common import files_hash, weight_files

    files = weight_files(folder)
    if not files:
        return None
    if sum(f.stat().st_size for f in files) <= FULL_HASH_LIMIT:
        return files_hash(files)
    h = hashlib.sha256(folder.resolve().name.encode())
    for f in files:
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return "meta:" + h.hexdigest()


def load_transformers_pair(
    card: ModelCard,
    folder: Path,
    preprocessor: str,
    model_class: str,
    device: str,
    dtype: str | None,
    device_map: str | None,
    quant: Any,
) -> tuple[Any, Any]:
    """Load ``transformers.<preprocessor>`` and ``transformers.<model_class>`` from ``folder``
    with the card's dtype / device-map / remote-code settings; the model ends in eval mode on
    ``device`` (unless a device map or quantization placed it). Load failures -> ConfigError."""
    from medfm._optional import optional_import
    from medfm.models.adapters._common import quiet_transformers
    from medfm.models.generators._base import torch_dtype

    transformers = optional_import("transformers")
    quiet_transformers()
    cfg = card.config
    trust = bool(cfg.get("trust_remote_code", False))
    device_map = device_map if device_map is not None else cfg.get("device_map")
    try:
        pre = getattr(transformers, preprocessor).from_pretrained(str(folder), trust_remote_code=trust)
        model = getattr(transformers, model_class).from_pretrained(
            str(folder),
            dtype=torch_dtype(dtype if dtype is not None else cfg.get("dtype", "auto")),
            device_map=device_map,
            trust_remote_code=trust,
            quantization_config=quant,
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model '{card.id}': cannot load from {folder} ({type(exc).__name__}: {exc})") from exc
    if device_map is None and quant is None:
        model.to(device)
    model.eval()
    return pre, model
