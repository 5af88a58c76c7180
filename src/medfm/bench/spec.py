"""What a benchmark run is: a grid of datasets x models x protocols x shots x seeds.

``BenchSpec`` is the configuration (from YAML via ``medfm._config`` or from CLI flags);
``expand`` turns it into independent ``Cell``s, each a pure function of (cell, caches).
A protocol that does not fit a model is skipped with a note when the grid came from
defaults, and is a ``ConfigError`` when the user asked for exactly that combination.

A spec file (``medfm bench --config spec.yaml``)::

    datasets: [breastmnist, retinamnist]
    models: [random/vit-b16, scratch/resnet18]   # scratch/<arch> = the from-scratch baseline
    protocols: [knn, linear_probe, scratch]      # empty = every protocol that applies
    shots: [1, 4, 16, all]                       # labelled training images per class
    seeds: 3                                     # seeds per few-shot cell
    full_data_seeds: 1                           # seeds per full-data cell (default: seeds)
    protocol_config:
      scratch: {epochs: 20}
    protocol_shots:                              # per-protocol shots (default: shots)
      scratch: [all]
    n_boot: 1000
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from medfm import __version__
from medfm._config import from_dict, load_file, to_dict
from medfm._runtime import check_precision
from medfm.errors import ConfigError

ALL = "all"
# Bump when a Record's content for the same cell changes (new extra fields, metric changes):
# cached cells of the old format are then recomputed.
CELL_FORMAT = 1
DEFAULT_SHOTS: tuple[int | str, ...] = (1, 4, 16, ALL)
DEFAULT_DATASET = "breastmnist"
# The floor: a randomly initialised ViT whose features show what "no pre-training" gives.
RANDOM_FLOOR_MODEL = "random/vit-b16"
DEFAULT_SCRATCH_ARCH = "resnet18"
SCRATCH_PREFIX = "scratch/"
# finetune trains a whole image encoder: minutes per cell on a CPU, so the no-argument run
# leaves it out (ask for it with --protocol finetune).
DEFAULT_EXCLUDED_PROTOCOLS = ("finetune",)

# protocol "needs" -> model capabilities it requires (None: the protocol uses no model).
NEEDS_CAPABILITIES: dict[str, frozenset[str] | None] = {
    "features": frozenset({"image_encoder"}),
    "model+images": frozenset({"image_encoder"}),
    "model+text": frozenset({"image_encoder", "text_encoder"}),
    "images": None,
}


@dataclass
class BenchSpec:
    """A benchmark grid.

    ``models`` / ``protocols`` empty = the defaults (built-in offline model set; every
    protocol that applies). ``shots`` are labelled training images per class (``"all"`` =
    the full training split). ``seeds`` seeds (0..seeds-1) run per few-shot cell;
    ``full_data_seeds`` per full-data cell (None = ``seeds``). ``protocol_config`` holds
    per-protocol overrides of the protocol's config dataclass, e.g. ``{"knn": {"k": 10}}``;
    ``protocol_shots`` per-protocol shots instead of ``shots`` (e.g. scratch training only on
    the full split: ``{"scratch": ["all"]}``).
    """

    datasets: list[str] = field(default_factory=lambda: [DEFAULT_DATASET])
    models: list[str] = field(default_factory=list)
    protocols: list[str] = field(default_factory=list)
    shots: list[int | str] = field(default_factory=lambda: list(DEFAULT_SHOTS))
    seeds: int = 3
    full_data_seeds: int | None = None
    protocol_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    protocol_shots: dict[str, list[int | str]] = field(default_factory=dict)
    n_boot: int = 1000
    data_dir: str | None = None
    precision: str = "auto"
    batch_size: int = 64
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.shots = [parse_shot(s) for s in self.shots]
        if not self.datasets:
            raise ConfigError("bench spec: 'datasets' is empty; name at least one dataset")
        if not self.shots:
            raise ConfigError("bench spec: 'shots' is empty; use e.g. 1,4,16,all")
        if self.seeds < 1 or (self.full_data_seeds is not None and self.full_data_seeds < 1):
            raise ConfigError(f"bench spec: seeds must be >= 1, got {self.seeds}")
        check_precision(self.precision, "bench spec: precision")
        if self.n_boot < 0 or self.batch_size < 1:
            raise ConfigError("bench spec: n_boot must be >= 0 and batch_size >= 1")
        for name, over in self.protocol_config.items():
            if not isinstance(over, dict):
                raise ConfigError(f"bench spec: protocol_config.{name} must be a mapping, got {type(over).__name__}")
        for name, shots in self.protocol_shots.items():
            if not isinstance(shots, (list, tuple)) or not shots:
                raise ConfigError(f"bench spec: protocol_shots.{name} must be a non-empty list such as [1, 4, all]")
            self.protocol_shots[name] = [parse_shot(s) for s in shots]

    def shots_for(self, protocol: str) -> list[int | str]:
        """The shots one protocol runs at: its ``protocol_shots`` entry, else ``shots``."""
        return self.protocol_shots.get(protocol, self.shots)

    @classmethod
    def from_file(cls, path: str) -> BenchSpec:
        """Read a YAML/JSON spec; unknown keys are an error naming the file."""
        return from_dict(cls, load_file(path), where=str(path))

    def seeds_for(self, shots: int | None) -> list[int]:
        n = self.seeds if shots is not None or self.full_data_seeds is None else self.full_data_seeds
        return list(range(n))


def parse_shot(value: int | str) -> int | str:
    """``1`` / ``"4"`` / ``"all"`` -> int >= 1 or ``"all"``; anything else is a ConfigError."""
    if isinstance(value, str):
        v = value.strip().lower()
        if v in (ALL, "full"):
            return ALL
        if not v.isdigit():
            raise ConfigError(f"bench spec: shots must be positive integers or 'all', got {value!r}")
        value = int(v)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"bench spec: shots must be positive integers or 'all', got {value!r}")
    return value


def parse_shots(text: str) -> list[int | str]:
    """CLI form ``"1,4,all"`` -> ``[1, 4, "all"]``."""
    return [parse_shot(s) for s in text.split(",") if s.strip()]


def shots_value(shot: int | str) -> int | None:
    """Spec shot -> Record.shots (None = all training images)."""
    return None if shot == ALL else int(shot)


@dataclass(frozen=True)
class Cell:
    """One independent unit of work: one protocol on one (dataset, model, shots, seed).

    ``config`` is the protocol's config overrides (a plain dict), ``shots`` None = all.
    Everything a worker needs is here, so a cell can move to another process unchanged.
    """

    dataset: str
    model: str
    protocol: str
    shots: int | None
    seed: int
    config: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)
    n_boot: int = 1000
    precision: str = "auto"
    batch_size: int = 64
    data_dir: str | None = None

    def key(self) -> tuple:
        """Same shape as ``Record.key()``: (dataset, split, model, protocol, shots, seed)."""
        return (self.dataset, "test", self.model, self.protocol, self.shots, self.seed)

    @property
    def is_scratch(self) -> bool:
        return self.model.startswith(SCRATCH_PREFIX)

    def identity(self) -> dict[str, Any]:
        """What determines this cell's numbers (data location and batch size do not)."""
        return {
            "dataset": self.dataset, "model": self.model, "protocol": self.protocol,
            "shots": self.shots, "seed": self.seed, "config": to_dict(self.config),
            "n_boot": self.n_boot, "precision": self.precision,
        }

    def cache_key(self, data_checksum: str | None, weights_hash: str | None) -> str:
        """Hash of (cell config, data checksum, weights hash, medfm version)."""
        doc = {
            "cell": self.identity(), "data": data_checksum, "weights": weights_hash, "medfm": __version__,
            "format": CELL_FORMAT,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def label(self) -> str:
        shots = ALL if self.shots is None else f"{self.shots}-shot"
        return f"{self.dataset} {self.model} {self.protocol} {shots} seed {self.seed}"


# Protocols that use no labelled training image (one cell per dataset x model: shots=all, seed 0).
LABEL_FREE_PROTOCOLS = frozenset({"zero_shot"})


@dataclass(frozen=True)
class ProtocolInfo:
    """What expansion needs to know about a protocol: its name, what it needs, whether it
    learns from labelled images, and its config keys (None = unknown)."""

    name: str
    needs: str
    uses_labels: bool = True
    config_keys: frozenset[str] | None = None


def expand(
    spec: BenchSpec,
    protocols: Sequence[ProtocolInfo],
    capabilities: Callable[[str], frozenset[str]],
    default_models: Callable[[], list[str]] | None = None,
) -> tuple[list[Cell], list[str]]:
    """Expand ``spec`` into cells and notes (what was skipped and why).

    ``protocols``: every registered protocol. ``capabilities(model_id)``: the model card's
    capabilities (raises ConfigError for an unknown id). ``default_models()``: the model set
    used when ``spec.models`` is empty.
    """
    by_name = {p.name: p for p in protocols}
    notes: list[str] = []
    chosen = _chosen_protocols(spec, by_name, notes)
    scratch_protocols = [p for p in chosen if NEEDS_CAPABILITIES.get(p.needs, frozenset()) is None]
    model_protocols = [p for p in chosen if p not in scratch_protocols]
    models = list(dict.fromkeys(spec.models)) if spec.models else list((default_models or (lambda: [RANDOM_FLOOR_MODEL]))())
    # A model named scratch/<arch> means "the from-scratch protocol with that architecture".
    scratch_models = [m for m in models if m.startswith(SCRATCH_PREFIX)]
    models = [m for m in models if not m.startswith(SCRATCH_PREFIX)]
    scratch_protocols = _scratch_protocols(spec, by_name, scratch_protocols, scratch_models, notes)
    pairs = _model_pairs(spec, model_protocols, models, capabilities, notes)
    pairs += _scratch_pairs(spec, scratch_protocols, scratch_models)
    label_free = sorted({p.name for _, p, _ in pairs if not p.uses_labels})
    if label_free and any(spec.shots_for(n) != [ALL] for n in label_free):
        notes.append(f"{', '.join(label_free)} use(s) no labelled images: run once per dataset and model (shots=all, seed 0)")
    cells = _grid_cells(spec, pairs)
    if not cells:
        raise ConfigError("bench spec expands to no cells: no requested protocol fits any requested model")
    return cells, notes


_Pair = tuple[str, ProtocolInfo, dict[str, Any]]


def _chosen_protocols(spec: BenchSpec, by_name: dict[str, ProtocolInfo], notes: list[str]) -> list[ProtocolInfo]:
    """The protocols asked for (unknown names refused), or the default grid's (slow ones left out, noted)."""
    if spec.protocols:
        for name in spec.protocols:
            if name not in by_name:
                from medfm._registry import suggest

                raise ConfigError(f"unknown protocol '{name}'.{suggest(name, sorted(by_name))} Known: {', '.join(sorted(by_name))}")
        chosen = [by_name[n] for n in dict.fromkeys(spec.protocols)]
    else:
        chosen = [p for p in sorted(by_name.values(), key=lambda p: p.name) if p.name not in DEFAULT_EXCLUDED_PROTOCOLS]
        left_out = sorted(n for n in by_name if n in DEFAULT_EXCLUDED_PROTOCOLS)
        if left_out:
            notes.append(f"protocol(s) {', '.join(left_out)} left out of the default grid (minutes per cell on a CPU); ask with --protocol")
    for key in ("protocol_config", "protocol_shots"):
        for name in getattr(spec, key):
            if name not in by_name:
                raise ConfigError(f"bench spec: {key} names unknown protocol '{name}'")
    return chosen


def _scratch_protocols(
    spec: BenchSpec, by_name: dict[str, ProtocolInfo], scratch_protocols: list[ProtocolInfo],
    scratch_models: list[str], notes: list[str],
) -> list[ProtocolInfo]:
    """From-scratch protocols to run: those chosen, or all of them when a scratch/<arch> model was named."""
    if scratch_models and not scratch_protocols:
        if spec.protocols:
            raise ConfigError(
                f"model(s) {', '.join(scratch_models)} train from scratch and need protocol 'scratch', "
                f"but --protocol asked for {', '.join(spec.protocols)}"
            )
        return [p for p in by_name.values() if NEEDS_CAPABILITIES.get(p.needs, frozenset()) is None]
    if scratch_protocols and spec.models and not spec.protocols and not scratch_models:
        notes.append(
            f"from-scratch baseline not run: --model was given without a scratch model "
            f"(add --model {SCRATCH_PREFIX}{DEFAULT_SCRATCH_ARCH})"
        )
        return []
    return scratch_protocols


def _model_pairs(
    spec: BenchSpec, model_protocols: list[ProtocolInfo], models: list[str],
    capabilities: Callable[[str], frozenset[str]], notes: list[str],
) -> list[_Pair]:
    """(model, protocol, config) for each protocol and each model with the capabilities it needs."""
    explicit = bool(spec.protocols) and bool(spec.models)
    pairs: list[_Pair] = []
    for proto in model_protocols:
        need = NEEDS_CAPABILITIES.get(proto.needs)
        if need is None and proto.needs not in NEEDS_CAPABILITIES:
            raise ConfigError(f"protocol '{proto.name}' declares unknown needs '{proto.needs}'")
        fitting = []
        for model in models:
            missing = sorted(set(need or ()) - set(capabilities(model)))
            if missing:
                notes.append(f"skipped {proto.name} for {model}: model has no {' / '.join(missing)}")
                continue
            fitting.append(model)
            pairs.append((model, proto, dict(spec.protocol_config.get(proto.name, {}))))
        if not models and explicit:
            raise ConfigError(f"protocol '{proto.name}' needs a pre-trained model; --model named only from-scratch models")
        if not fitting and explicit and models:
            raise ConfigError(
                f"protocol '{proto.name}' needs a model with {' + '.join(sorted(need or ()))}; "
                f"{', '.join(models)} {'has' if len(models) == 1 else 'have'} capabilities "
                f"{', '.join(sorted(set().union(*(capabilities(m) for m in models)))) or 'none'}"
            )
    return pairs


def _scratch_pairs(spec: BenchSpec, scratch_protocols: list[ProtocolInfo], scratch_models: list[str]) -> list[_Pair]:
    """(scratch/<arch>, protocol, config) for each from-scratch protocol and architecture asked for."""
    pairs: list[_Pair] = []
    for proto in scratch_protocols:
        overrides = dict(spec.protocol_config.get(proto.name, {}))
        default_arch = str(overrides.get("arch", DEFAULT_SCRATCH_ARCH))
        for arch in [m[len(SCRATCH_PREFIX):] for m in scratch_models] or [default_arch]:
            cfg = overrides
            if arch != default_arch:
                if proto.config_keys is not None and "arch" not in proto.config_keys:
                    raise ConfigError(
                        f"protocol '{proto.name}' trains {DEFAULT_SCRATCH_ARCH} only; "
                        f"use --model {SCRATCH_PREFIX}{DEFAULT_SCRATCH_ARCH} instead of {SCRATCH_PREFIX}{arch}"
                    )
                cfg = {**overrides, "arch": arch}
            pairs.append((f"{SCRATCH_PREFIX}{arch}", proto, cfg))
    return pairs


def _grid_cells(spec: BenchSpec, pairs: list[_Pair]) -> list[Cell]:
    """One cell per dataset x pair x shots x seed (label-free protocols: one cell, shots all, seed 0)."""
    cells: list[Cell] = []
    for dataset in dict.fromkeys(spec.datasets):
        for model, proto, cfg in pairs:
            shots = spec.shots_for(proto.name)
            grid = [(shots_value(sh), seed) for sh in shots for seed in spec.seeds_for(shots_value(sh))]
            if not proto.uses_labels:
                grid = [(None, 0)]
            for s, seed in grid:
                cells.append(Cell(
                    dataset=dataset, model=model, protocol=proto.name, shots=s, seed=seed, config=cfg,
                    n_boot=spec.n_boot, precision=spec.precision, batch_size=spec.batch_size,
                    data_dir=spec.data_dir,
                ))
    return cells
