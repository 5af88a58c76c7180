"""The dataset registry: cards by name, each with the loader that reads it.

Built-in cards are registered on first lookup (``import medfm.data`` stays light): every
module that defines datasets (``medmnist``, ``builtin``, ``survival``) hands its cards and
loaders to ``register_card`` here, and nowhere else. The survival tables need pandas (the
``survival`` extra); without it their cards are left out.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from medfm._registry import Registry
from medfm.data.card import DatasetCard, SplitData
from medfm.data.fetch import Located
from medfm.errors import ConfigError

# (card, located files, **options) -> {split name: SplitData}
Loader = Callable[..., dict[str, SplitData]]

_loaders: dict[str, Loader] = {}
_state = {"loaded": False, "loading": False}


def _ensure_builtins() -> None:
    if _state["loaded"] or _state["loading"]:
        return
    _state["loading"] = True
    try:
        from medfm.data import builtin, medmnist

        for card in medmnist.make_cards():
            if card.name not in DATASETS._items:  # noqa: SLF001 - idempotent re-entry
                register_card(card, loader=medmnist.load)
        for card, loader in (*builtin.CARDS_AND_LOADERS, *_survival_cards()):
            if card.name not in DATASETS._items:  # noqa: SLF001
                register_card(card, loader=loader)
        _state["loaded"] = True
    finally:
        _state["loading"] = False


def _survival_cards() -> Sequence[tuple[DatasetCard, Loader]]:
    """The survival tables' cards and loader; none when pandas (the ``survival`` extra) is absent.
    Any other import error is a bug and propagates."""
    if importlib.util.find_spec("pandas") is None:
        return ()
    from medfm.data import survival

    return survival.CARDS_AND_LOADERS


class _CardRegistry(Registry[DatasetCard]):
    """Registry that registers the built-in cards before the first lookup."""

    def get(self, name: str) -> DatasetCard:
        _ensure_builtins()
        return super().get(name)

    def __contains__(self, name: object) -> bool:
        _ensure_builtins()
        return super().__contains__(name)

    def __iter__(self) -> Iterator[str]:
        _ensure_builtins()
        return super().__iter__()

    def __len__(self) -> int:
        _ensure_builtins()
        return super().__len__()

    def names(self) -> list[str]:
        _ensure_builtins()
        return super().names()

    def items(self) -> list[tuple[str, DatasetCard]]:
        _ensure_builtins()
        return super().items()


DATASETS: Registry[DatasetCard] = _CardRegistry("dataset")


def register_card(card: DatasetCard, loader: Loader | None = None) -> DatasetCard:
    """Add a card (duplicate names refused). ``loader(card, located, **options)`` returns the
    splits; a card without a loader is listed and shown but cannot be loaded."""
    DATASETS.register(card.name, card)
    if loader is not None:
        _loaders[card.name] = loader
    return card


def get_card(name: str) -> DatasetCard:
    """Card by name; an unknown name raises ConfigError with the nearest name (a card's
    folder name, e.g. ``hc18_fetal_head``, points to its card)."""
    if name not in DATASETS:
        by_folder = [n for n, card in DATASETS.items() if card.folder == name and not card.files]
        if by_folder:
            raise ConfigError(f"unknown dataset '{name}'. Did you mean '{by_folder[0]}'? (its folder is {name})")
    return DATASETS.get(name)


def list_cards() -> list[DatasetCard]:
    """Every registered card, sorted by name."""
    return [card for _, card in DATASETS.items()]


def get_loader(card: DatasetCard) -> Loader:
    try:
        return _loaders[card.name]
    except KeyError:
        raise ConfigError(f"dataset {card.name} has a card but no loader registered") from None


def load_splits(card: DatasetCard, located: Located, **options: Any) -> dict[str, SplitData]:
    return get_loader(card)(card, located, **options)
