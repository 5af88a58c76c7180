"""The model registry and the one factory: ``create_model(id_or_folder) -> ModelAdapter``.

>>> from medfm.models import create_model
>>> m = create_model("test/vit-tiny-timm", device="cpu")      # doctest: +SKIP
>>> m.encode_image(m.preprocess([img])).shape                   # doctest: +SKIP
torch.Size([1, 32])

A saved model folder is ``model_card.json`` (the card) plus the backend's weight files
(``model.safetensors`` for timm / MONAI, ``save_pretrained`` files for transformers and SAM,
``open_clip_config.json`` + ``open_clip_model.safetensors`` for open_clip); ``save_model``
writes one and ``create_model(folder)`` reads it back.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfm._provenance import note_weights
from medfm._registry import Registry, suggest
from medfm._runtime import check_precision
from medfm.errors import ConfigError, InputError, MissingWeightsError
from medfm.models import hub, packaged
from medfm.models.base import Backend, ModelAdapter
from medfm.models.card import ModelCard, card_from_dict, card_to_dict
from medfm.models.cards import builtin_cards
from medfm.models.generators import GENERATOR_BACKENDS
from medfm.models.generators.cards import generator_cards

if TYPE_CHECKING:
    import torch

MODELS: Registry[ModelCard] = Registry("model")
BACKENDS: dict[str, str] = {
    "timm": "medfm.models.adapters.timm_",
    "hf": "medfm.models.adapters.hf",
    "open_clip": "medfm.models.adapters.open_clip_",
    "sam": "medfm.models.adapters.sam",
    "monai": "medfm.models.adapters.monai_",
    "native": "medfm.models.native",
    "pretrained": "medfm.models.adapters.pretrained_pkg",
    **GENERATOR_BACKENDS,
}


def register_model_card(card: ModelCard) -> ModelCard:
    """Add a card to the registry (duplicate ids are refused)."""
    if card.backend not in BACKENDS:
        raise ConfigError(f"model card {card.id}: unknown backend {card.backend!r}; one of {sorted(BACKENDS)}")
    return MODELS.register(card.id, card)


for _card in (*builtin_cards(), *generator_cards()):
    register_model_card(_card)


def list_model_cards() -> list[ModelCard]:
    """Registered cards plus medfm folders imported under new ids, sorted by id."""
    cards = {c.id: c for _, c in MODELS.items()}
    for c in hub.imported_cards():
        cards.setdefault(c.id, c)
    return [cards[k] for k in sorted(cards)]


def get_model_card(model_id: str) -> ModelCard:
    """The card of ``model_id``; unknown ids raise ConfigError with the nearest id."""
    if model_id in MODELS:
        return MODELS.get(model_id)
    for c in hub.imported_cards():
        if c.id == model_id:
            return c
    names = [c.id for c in list_model_cards()]
    raise ConfigError(f"unknown model '{model_id}'.{suggest(model_id, names)} See `medfm models list`.")


def backend_module(name: str) -> Backend:
    """The module implementing ``Backend`` for backend ``name``."""
    try:
        return importlib.import_module(BACKENDS[name])  # type: ignore[return-value]
    except KeyError:
        raise ConfigError(f"unknown model backend {name!r}; one of {sorted(BACKENDS)}") from None


def read_card_file(folder: Path) -> ModelCard:
    f = folder / hub.CARD_FILE
    if not f.is_file():
        raise InputError(
            f"{folder}: no {hub.CARD_FILE}, so this is not a medfm model folder. For a hub snapshot copied by "
            f"hand run `medfm models import ID {folder}` with the model's id (see `medfm models list`)"
        )
    try:
        data = json.loads(f.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{f}: cannot read the model card ({exc})") from exc
    return card_from_dict(data, where=str(f))


def weights_available(card: ModelCard) -> str:
    """'random-init' | 'local' | 'missing': whether ``create_model`` can run without a download."""
    if packaged.package_installed(card) or hub.locate(card) is not None:
        return "local"
    return "random-init" if card.source is None else "missing"


def create_model(
    id_or_path: str | Path | ModelCard,
    device: str | None = None,
    precision: str = "auto",
    weights: str | Path | None = None,
    fetch: bool = True,
    **options: Any,
) -> ModelAdapter:
    """Build a model adapter (encoder, segmenter or generator) from a registered id, a card or
    a saved medfm model folder: the one factory of medfm.

    ``device``: "cpu", "cuda", "cuda:1" (default: CUDA when present). ``precision``: "auto"
    (bf16 autocast on CUDA and on CPUs with fast bf16), "bf16" or "fp32". ``weights``: a
    folder or file overriding where the weights come from. Cards without a source (test/,
    random/) build a seeded random init. Missing weights raise MissingWeightsError quickly
    (no network retries) naming `medfm models pull` / `medfm models import`; ``fetch=False``
    never downloads. ``options`` go to generator backends (dtype, device_map, quantization,
    base_url, ...). The adapter knows its weights' hash, source and hub commit.
    """
    check_precision(precision)
    device = _check_device(device)
    card, folder, wfile = _resolve(id_or_path, weights, fetch)
    if options and "generator" not in card.capabilities:
        raise ConfigError(f"model '{card.id}' takes no options (got {sorted(options)}); only generators do")
    adapter = backend_module(card.backend).build(card, folder, wfile, device, **options)
    adapter.precision = precision
    adapter.weights_source = adapter.weights_source or str(folder or wfile or "random-init")
    adapter.weights_hash = adapter.weights_hash or _weights_hash(adapter, folder, wfile)
    adapter.weights_revision = hub.folder_commit(folder)
    note_weights(adapter.weights_hash, weights_source=adapter.weights_source, weights_revision=adapter.weights_revision)
    return adapter


def _check_device(device: str | None) -> str:
    from medfm._runtime import default_device

    device = device or default_device()
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for, but no CUDA device is available here; use --device cpu")
    elif device != "cpu" and not device.startswith(("mps", "xpu")):
        raise ConfigError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    return device


def _resolve(
    id_or_path: str | Path | ModelCard, weights: str | Path | None, fetch: bool
) -> tuple[ModelCard, Path | None, Path | None]:
    """(card, weights folder, weights file) for an id, a card or a saved model folder."""
    if isinstance(id_or_path, ModelCard):
        card = id_or_path
    else:
        path = Path(str(id_or_path)).expanduser()
        if path.is_dir():
            return read_card_file(path), path, None
        if str(id_or_path).endswith(".json") or (path.suffix and path.exists()):
            raise InputError(f"{path}: give the model folder (with {hub.CARD_FILE}), not a file")
        card = get_model_card(str(id_or_path))
    if weights is not None:
        w = Path(weights).expanduser()
        if not w.exists():
            raise MissingWeightsError(f"{w}: weights not found")
        return (card, w, None) if w.is_dir() else (card, None, w)
    if packaged.package_spec(card) is not None:  # weights from a pip package (medfm[pretrained]), else the hub
        folder, wfile = packaged.resolve(card, hub.locate, _fetch if fetch else None)
        return card, folder, wfile
    folder = hub.locate(card)
    if folder is None and card.source is not None and fetch:
        folder = _fetch(card)
    return card, folder, None


def _fetch(card: ModelCard) -> Path:
    """Download on a connected machine; otherwise fail fast with what to do."""
    if hub.hub_offline():
        raise hub.missing_weights_error(card, "not in medfm's cache or the Hugging Face cache, and HF_HUB_OFFLINE is set")
    if not hub.endpoint_reachable():
        raise hub.missing_weights_error(card, "not cached locally and the hub is not reachable")
    return hub.pull(card)


def _weights_hash(adapter: ModelAdapter, folder: Path | None, wfile: Path | None) -> str:
    from medfm.models.adapters._common import files_hash, state_dict_hash, weight_files

    if wfile is not None:
        return files_hash([wfile])
    if folder is not None:
        files = weight_files(folder)
        if files:
            return files_hash(files)
    import hashlib

    h = hashlib.sha256()
    for m in adapter.modules_for_hash():
        h.update(state_dict_hash(m).encode())
    return h.hexdigest()


def save_model(adapter_or_module: ModelAdapter | torch.nn.Module, card: ModelCard, folder: str | Path) -> Path:
    """Write a model folder that ``create_model(folder)`` loads: ``model_card.json`` + weights.

    Pass the adapter (any backend) or, after fine-tuning, the module from
    ``trainable_module()`` for timm / MONAI towers and transformers vision / SAM models.
    Weights are safetensors. ``folder`` must be new or empty (nothing is overwritten).
    """
    from medfm._paths import atomic_write_text, prepare_out_dir

    folder = prepare_out_dir(folder)
    backend = backend_module(card.backend)
    if isinstance(adapter_or_module, ModelAdapter):
        backend.save(adapter_or_module, folder)
    else:
        backend.save_trained(adapter_or_module, card, folder)
    atomic_write_text(folder / hub.CARD_FILE, json.dumps(card_to_dict(card), indent=2))
    return folder
