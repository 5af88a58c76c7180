"""Backends listed for visibility that plain transformers cannot build (LLaVA-Med)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medfm.errors import ConfigError
from medfm.models.card import ModelCard


def _refuse(card: ModelCard) -> ConfigError:
    needs = card.config.get("needs", "code medfm does not ship")
    return ConfigError(
        f"model '{card.id}' ({card.source}) cannot be created by medfm: its architecture is not in "
        f"transformers (model_type 'llava_mistral' is unknown to it), so it needs {needs}. Install that code "
        "and serve the model behind an OpenAI-compatible server, then use an 'openai_http' card "
        "(medfm.models.generators.http_card)."
    )


FOLDER_FILE: str | None = None


def build(card: ModelCard, folder: Path | None, weights: Path | None, device: str, **options: Any) -> Any:
    raise _refuse(card)


def save(adapter: Any, folder: Path) -> None:
    raise _refuse(adapter.card)


def save_trained(module: Any, card: ModelCard, folder: Path) -> None:
    raise _refuse(card)
