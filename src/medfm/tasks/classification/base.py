"""The protocol registry: one entry per evaluation protocol, each a module of this package."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from medfm._config import from_dict
from medfm._registry import Registry

NEEDS = ("features", "images", "model+images", "model+text")

# shots values the runner sweeps for few-shot evaluation (None = every training example)
FEW_SHOT_K: tuple[int | None, ...] = (1, 2, 4, 8, 16, 32, None)


@dataclass(frozen=True)
class Protocol:
    """A classification protocol.

    ``needs`` says what ``run`` takes:

    - ``features``: ``run(data: FeatureSplits, cfg, seed, shots) -> Predictions``
    - ``images``: ``run(data: ImageSplits, cfg, seed, shots) -> Predictions``
    - ``model+images`` / ``model+text``: ``run(model: ModelAdapter, data: ImageSplits, cfg, seed, shots)``
      (``model+text`` = the model needs a text encoder, e.g. zero-shot).
    """

    name: str
    needs: str
    config_cls: type
    run: Callable[..., Any]
    description: str = ""

    def __post_init__(self) -> None:
        if self.needs not in NEEDS:
            raise ValueError(f"protocol {self.name}: needs must be one of {NEEDS}, got {self.needs!r}")

    def make_config(self, values: dict[str, Any] | None = None) -> Any:
        """Config dataclass from a mapping (unknown keys -> ConfigError), defaults for the rest."""
        if values is None:
            return self.config_cls()
        if isinstance(values, self.config_cls):
            return values
        return from_dict(self.config_cls, dict(values), where=f"protocol '{self.name}' config")

    @property
    def needs_model(self) -> bool:
        return self.needs.startswith("model+")


PROTOCOLS: Registry[Protocol] = Registry("protocol")


def register_protocol(protocol: Protocol) -> Protocol:
    """Add ``protocol`` to ``PROTOCOLS`` under its name."""
    return PROTOCOLS.register(protocol.name, protocol)


def get_protocol(name: str) -> Protocol:
    """Look a protocol up by name (ConfigError with a suggestion on a typo)."""
    return PROTOCOLS.get(name)
