"""Metrics: pure functions on arrays, each with a bootstrap confidence interval.

``medfm.metrics.classification`` (AUROC, accuracy, balanced accuracy, F1, ECE, QWK),
``segmentation`` (Dice, IoU, HD95, ASSD, NSD in mm), ``survival`` (C-index, td-AUC, IBS),
``text`` (VQA, BLEU, ROUGE-L, CIDEr, METEOR, BERTScore, clinical efficacy), ``image_synthesis``
(Frechet distance, precision / recall) and ``bootstrap`` (seeded, stratified percentile bootstrap).

Each module declares the direction of its metrics in ``HIGHER_IS_BETTER`` (name -> True, False,
or None for a descriptive value such as a volume), as torchmetrics' ``Metric.higher_is_better``;
:func:`higher_is_better` combines them so every report and leaderboard ranks the same way and
an unknown metric is an error, never a guess from its name.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping

from medfm.errors import ConfigError


def _tables() -> dict[str, Mapping[str, bool | None]]:
    """{module name: HIGHER_IS_BETTER} of every module of this package that declares one."""
    out = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        table = getattr(module, "HIGHER_IS_BETTER", None)
        if isinstance(table, Mapping):
            out[module.__name__] = table
    return out


def _combine(tables: Mapping[str, Mapping[str, bool | None]]) -> dict[str, bool | None]:
    """One table from the modules' tables; a name two modules rank oppositely is a bug (raises)."""
    out: dict[str, bool | None] = {}
    owner: dict[str, str] = {}
    for module, table in tables.items():
        for name, direction in table.items():
            if name in out and out[name] != direction:
                raise ConfigError(
                    f"metric '{name}': {owner[name]} says higher_is_better={out[name]}, {module} says {direction}"
                )
            out[name] = direction
            owner.setdefault(name, module)
    return out


DIRECTIONS: dict[str, bool | None] = _combine(_tables())


def base_name(metric: str) -> str:
    """The declared name behind a qualified one: ``dice[1]`` (per label) and
    ``accuracy[qtype=open]`` (per group) rank as ``dice`` and ``accuracy``."""
    return metric.split("[", 1)[0] if metric.endswith("]") else metric


def direction(metric: str) -> bool | None:
    """True (higher is better), False (lower is better) or None (descriptive, not ranked).

    Raises ConfigError for a metric no metrics module declares.
    """
    name = base_name(metric)
    if name not in DIRECTIONS:
        from medfm._registry import suggest

        raise ConfigError(
            f"unknown metric '{metric}': no medfm.metrics module declares whether higher is better."
            f"{suggest(name, sorted(DIRECTIONS))}"
        )
    return DIRECTIONS[name]


def higher_is_better(metric: str) -> bool:
    """Whether a larger ``metric`` ranks first; ConfigError for an unknown or descriptive metric.

    >>> higher_is_better("auroc"), higher_is_better("hd95_mm"), higher_is_better("dice[2]")
    (True, False, True)
    """
    d = direction(metric)
    if d is None:
        raise ConfigError(f"metric '{metric}' is descriptive (e.g. a volume): it has no better direction to rank by")
    return d


def is_ranked(metric: str) -> bool:
    """Whether ``metric`` is known and has a direction (a leaderboard can rank by it)."""
    return base_name(metric) in DIRECTIONS and DIRECTIONS[base_name(metric)] is not None


__all__ = ["DIRECTIONS", "base_name", "direction", "higher_is_better", "is_ranked"]
