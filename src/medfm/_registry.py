"""A small typed registry: refuses duplicate names and suggests the nearest name on a typo."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from medfm.errors import ConfigError

T = TypeVar("T")


def suggest(name: str, choices: list[str]) -> str:
    """Return ' Did you mean X?' for the closest of ``choices``, or '' when nothing is close."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if not close:
        lowered = [c for c in choices if name.lower() in c.lower()]
        close = lowered[:1]
    return f" Did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """Name -> object mapping for one kind of thing (datasets, models, protocols).

    >>> r: Registry[int] = Registry("number"); r.register("one", 1); r.get("one")
    1
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if name in self._items:
            raise ConfigError(f"{self.kind} '{name}' is already registered")
        self._items[name] = item
        return item

    def decorator(self, name: str) -> Callable[[T], T]:
        """Register the decorated object under ``name``."""

        def wrap(item: T) -> T:
            return self.register(name, item)

        return wrap

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} '{name}'.{suggest(name, list(self._items))} "
                f"See `medfm {self.kind}s list`."
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())
