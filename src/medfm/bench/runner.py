"""Run a benchmark grid: cells through an executor, a per-cell cache, results after each cell.

``run_bench(spec, out)`` expands the spec, checks the data (empty splits, classes missing
for k-shot), runs every cell not already finished (per-cell cache under
``<MEDFM_HOME>/cells``, or the records of ``OUT/results.json`` with ``resume``), rewrites
``OUT/results.json`` atomically after each cell, adds the records to the SQLite results
store and writes ``OUT/report.html``.

``results.json`` records its completeness (cells planned / written, the missing ones named), so
a killed run's file never reads as finished; a run that ends with fewer records than cells
(a cell lost by an executor) writes what it has and raises ``IncompleteResultsError``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import hashlib
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfm import __version__, _paths
from medfm._config import to_dict
from medfm.bench.cache import CellCache
from medfm.bench.executor import Executor, InProcessExecutor, current_execution
from medfm.bench.spec import LABEL_FREE_PROTOCOLS, SCRATCH_PREFIX, BenchSpec, Cell, ProtocolInfo, expand
from medfm.bench.store import ResultsStore
from medfm.errors import ConfigError, IncompleteResultsError, InputError, MedfmError
from medfm.results import Completeness, MetricValue, Record, load_results, make_provenance, write_results

SPLITS = ("train", "val", "test")
TRAINING_PROTOCOLS = frozenset({"finetune", "scratch"})


def metric_task(card: Any) -> str:
    """Dataset card task -> the metrics' task: binary / multiclass / multilabel / ordinal."""
    if card.task == "classification":
        return "binary" if len(card.labels) == 2 else "multiclass"
    return str(card.task)


# --------------------------------------------------------------------------------------
# Per-process context: memoised datasets, models, embeddings. Cells only read through it.
# --------------------------------------------------------------------------------------
class CellContext:
    """What a worker process keeps between cells: loaded datasets, models, embeddings.

    Everything here is a cache of something reproducible from the cell alone (data files,
    model weights, the embedding cache on disk), so results never depend on it.
    """

    def __init__(self, protocols: dict[str, Any] | None = None, embed_cache: Any = None) -> None:
        self._protocols = protocols
        self._embed_cache = embed_cache
        self._datasets: dict[tuple[str, str | None], Any] = {}
        self._adapters: dict[tuple[str, str], Any] = {}
        self._features: dict[tuple, np.ndarray] = {}
        self._images: dict[tuple, np.ndarray] = {}
        self._checksums: dict[tuple[str, str | None], str] = {}

    # protocols ----------------------------------------------------------------------
    def protocols(self) -> dict[str, Any]:
        if self._protocols is None:
            from medfm.tasks.classification import PROTOCOLS

            self._protocols = {name: PROTOCOLS.get(name) for name in PROTOCOLS.names()}
        return self._protocols

    def protocol(self, name: str) -> Any:
        protos = self.protocols()
        if name not in protos:
            from medfm._registry import suggest

            raise ConfigError(f"unknown protocol '{name}'.{suggest(name, sorted(protos))}")
        return protos[name]

    # data ---------------------------------------------------------------------------
    def dataset(self, name: str, data_dir: str | None) -> Any:
        key = (name, data_dir)
        if key not in self._datasets:
            from medfm.data import load_dataset

            self._datasets[key] = load_dataset(name, data_dir=data_dir)
        return self._datasets[key]

    def data_checksum(self, name: str, data_dir: str | None) -> str:
        key = (name, data_dir)
        if key not in self._checksums:
            self._checksums[key] = str(self.dataset(name, data_dir).checksum())
        return self._checksums[key]

    def images(self, name: str, data_dir: str | None, split: str) -> np.ndarray:
        """(N, C, H, W) images of one split, stacked: the dataset's own array when it has one
        (MedMNIST), else every sample read and resized to ``FOLDER_IMAGE_SIZE`` (folders)."""
        key = (name, data_dir, split)
        if key not in self._images:
            data = self.dataset(name, data_dir).split(split)
            stacked = data.images()
            self._images[key] = np.asarray(stacked) if stacked is not None else stack_images(data, f"{name} {split}")
        return self._images[key]

    def raw_images(self, name: str, data_dir: str | None, split: str) -> Any:
        """Images for embedding: the stacked array when the dataset has one, else the list of
        per-sample (C, H, W) arrays in their source sizes (the model's preprocessing resizes)."""
        data = self.dataset(name, data_dir).split(split)
        if data.images() is not None:
            return self.images(name, data_dir, split)
        return [_sample_array(s, f"{name} {split} sample {s.id}") for s in data]

    # models -------------------------------------------------------------------------
    def capabilities(self, model: str) -> frozenset[str]:
        return model_capabilities(model)

    def default_models(self) -> list[str]:
        return default_models()

    def input_ndim(self, model: str) -> int:
        """2 for image models, 3 for volume models (from the card; no weights loaded for ids)."""
        return model_card(model).input_ndim

    def adapter(self, model: str, precision: str) -> Any:
        key = (model, precision)
        if key not in self._adapters:
            from medfm.models import create_model

            self._adapters.clear()  # one model in memory at a time (ViT-L weights are ~1 GB)
            self._features_keep_only(model)
            self._adapters[key] = create_model(model, precision=precision)
        return self._adapters[key]

    def _features_keep_only(self, model: str) -> None:
        self._features = {k: v for k, v in self._features.items() if k[0] == model}

    def weights_hash(self, model: str, precision: str) -> str | None:
        """The zoo's hash of the model's weights. Remembered on disk against a fingerprint of
        (card, weight files' paths/sizes/mtimes, library versions), so a run whose cells are
        all cached does not build the model just to learn its hash."""
        if model.startswith(SCRATCH_PREFIX):
            return None  # trained inside the cell from a seeded initialisation
        if (model, precision) in self._adapters:
            return self._adapters[(model, precision)].weights_hash
        fingerprint = _weights_fingerprint(model)
        memo = _paths.home() / "cells" / "weights-hashes.json"
        known = _read_json(memo) if fingerprint else {}
        if fingerprint and fingerprint in known:
            return known[fingerprint]
        value = self.adapter(model, precision).weights_hash
        if fingerprint and value:
            known = _read_json(memo)
            known[fingerprint] = value
            _paths.atomic_write_text(memo, json.dumps(known, indent=1, sort_keys=True))
        return value

    def weights_source(self, model: str, precision: str) -> str | None:
        """Where the weights came from ("random-init", a folder), for provenance."""
        if model.startswith(SCRATCH_PREFIX):
            return "trained from scratch in the cell"
        return self.adapter(model, precision).weights_source

    def features(self, cell: Cell, split: str) -> np.ndarray:
        """(N, D) float embeddings of one split, through the zoo's on-disk embedding cache."""
        key = (cell.model, cell.precision, cell.dataset, cell.data_dir, split)
        if key not in self._features:
            from medfm.models.embed import embed_cached

            adapter = self.adapter(cell.model, cell.precision)
            split_data = self.dataset(cell.dataset, cell.data_dir).split(split)
            data_key = f"{cell.dataset}/{split}/{split_data.checksum()}"
            self._features[key] = np.asarray(embed_cached(
                adapter, self.raw_images(cell.dataset, cell.data_dir, split), data_key,
                cache=self._embed_cache, batch_size=cell.batch_size, precision=cell.precision,
            ))
        return self._features[key]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _weights_fingerprint(model: str) -> str | None:
    """Hash of what determines a model's weights without loading them: its card, the
    (path, size, mtime) of every file in its weights folder, and the library versions
    (random-init cards are seeded, so versions fix their weights). None = unknown."""
    from medfm import models
    from medfm._provenance import versions
    from medfm.models import hub

    path = Path(model).expanduser()
    try:
        if path.is_dir():
            card: Any = {"folder": str(path.resolve())}
            folder: Path | None = path
        else:
            card_obj = models.get_model_card(model)
            card = to_dict(card_obj)
            folder = hub.locate(card_obj) if card_obj.source is not None else None
            if card_obj.source is not None and folder is None:
                return None  # weights missing: let create_model say so
        files = []
        if folder is not None:
            for p in sorted(folder.rglob("*")):
                if p.is_file():
                    st = p.stat()
                    files.append((str(p), st.st_size, st.st_mtime_ns))
    except (OSError, MedfmError):
        return None
    doc = {"card": card, "files": files, "versions": versions(), "medfm": __version__}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


FOLDER_IMAGE_SIZE = 64  # side length folder images are resized to for image protocols (scratch)


def _sample_array(sample: Any, where: str) -> np.ndarray:
    if sample.image is None:
        raise InputError(f"{where}: has no image")
    arr = np.asarray(sample.image.array)
    if arr.ndim != 3:
        raise InputError(f"{where}: image has shape {arr.shape}; the benchmark's image protocols take 2D images (C, H, W)")
    return arr


def stack_images(split: Any, where: str, size: int = FOLDER_IMAGE_SIZE) -> np.ndarray:
    """Samples of a split -> (N, C, size, size): channels matched (grey repeated to RGB when
    the split mixes them), bilinear resize; uint8 stays uint8, other dtypes are min-max
    scaled per image into [0, 1] float32."""
    import torch
    import torch.nn.functional as F

    arrays = [_sample_array(s, f"{where} sample {s.id}") for s in split]
    if not arrays:
        raise InputError(f"{where}: the split is empty")
    channels = max(a.shape[0] for a in arrays)
    all_uint8 = all(a.dtype == np.uint8 for a in arrays)
    out = np.empty((len(arrays), channels, size, size), dtype=np.uint8 if all_uint8 else np.float32)
    for i, a in enumerate(arrays):
        x = torch.from_numpy(a.astype(np.float32))
        if x.shape[0] != channels:
            x = x[:1].expand(channels, -1, -1)
        if not all_uint8:
            lo, hi = float(x.min()), float(x.max())
            x = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
        y = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        out[i] = y.round().clamp(0, 255).numpy().astype(np.uint8) if all_uint8 else y.clamp(0, 1).numpy()
    return out


_DEFAULT_CONTEXT: CellContext | None = None


def default_context() -> CellContext:
    """The process-wide context (each worker process gets its own)."""
    global _DEFAULT_CONTEXT
    if _DEFAULT_CONTEXT is None:
        _DEFAULT_CONTEXT = CellContext()
    return _DEFAULT_CONTEXT


# --------------------------------------------------------------------------------------
# One cell
# --------------------------------------------------------------------------------------
@dataclass
class CellOutcome:
    """A finished cell: its record, whether it came from the cell cache, and warnings (a cache
    entry that failed its checks and was recomputed)."""

    record: Record
    cached: bool
    warnings: list[str] = field(default_factory=list)


def dataset_summary(ds: Any) -> dict[str, Any]:
    """Small, JSON-ready description of a dataset for records and the report."""
    card = ds.card
    sizes = {}
    for s in SPLITS:
        try:
            sizes[s] = int(len(ds.split(s).labels))
        except MedfmError:
            continue
    return {
        "name": card.name, "task": card.task, "modality": card.modality, "labels": list(card.labels),
        "splits": sizes, "license": card.license, "citation": card.citation, "description": card.description,
    }


def _split_labels(ds: Any, split: str) -> np.ndarray:
    y = np.asarray(ds.split(split).labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    return y


def compute_cell(cell: Cell, ctx: CellContext | None = None, cache: CellCache | None = None) -> CellOutcome:
    """Run one cell (or return its cached record). Pure in (cell, caches)."""
    ctx = ctx or default_context()
    cache = cache if cache is not None else CellCache()
    ds = ctx.dataset(cell.dataset, cell.data_dir)
    checksum = ctx.data_checksum(cell.dataset, cell.data_dir)
    proto = ctx.protocol(cell.protocol)
    weights_hash = None if proto.needs == "images" else ctx.weights_hash(cell.model, cell.precision)
    key = cell.cache_key(checksum, weights_hash)
    hit, bad = cache.lookup(key)
    warnings = [bad.message()] if bad is not None else []
    if hit is not None and hit.key() != cell.key():  # a valid entry of another cell stored under this key
        warnings.append(f"cell cache entry {key}: holds the record of {hit.key()}, not of {cell.label()}; recomputing the cell")
        hit = None
    if hit is not None:
        return CellOutcome(hit, cached=True)

    config = proto.make_config(cell.config) if hasattr(proto, "make_config") else dict(cell.config)
    t_in = time.perf_counter()
    data = _protocol_inputs(cell, ctx, proto)  # embeddings are computed once per (dataset, model)
    input_seconds = time.perf_counter() - t_in
    start = time.perf_counter()
    if proto.needs.startswith("model+"):
        preds = proto.run(ctx.adapter(cell.model, cell.precision), data, config, seed=cell.seed, shots=cell.shots)
    else:
        preds = proto.run(data, config, seed=cell.seed, shots=cell.shots)
    n_train = len(_split_labels(ds, "train")) if cell.shots is None else cell.shots * max(1, len(ds.card.labels))
    source = None if proto.needs == "images" else ctx.weights_source(cell.model, cell.precision)
    record = _make_record(cell, ds, config, preds, n_train, checksum, weights_hash, key, time.perf_counter() - start, source)
    record.extra["input_seconds"] = round(input_seconds, 3)
    cache.put(key, record)
    return CellOutcome(record, cached=False, warnings=warnings)


def _protocol_inputs(cell: Cell, ctx: CellContext, proto: Any) -> Any:
    """The splits a protocol takes: ``FeatureSplits`` (embeddings) or ``ImageSplits``."""
    from medfm.tasks import classification as cls_tasks

    ds = ctx.dataset(cell.dataset, cell.data_dir)
    labels = {s: _split_labels(ds, s) for s in SPLITS}
    common = {"label_names": tuple(ds.card.labels), "task": metric_task(ds.card)}
    if proto.needs == "features":
        x = {s: ctx.features(cell, s) for s in SPLITS}
        kind = cls_tasks.FeatureSplits
    else:
        x = {s: ctx.images(cell.dataset, cell.data_dir, s) for s in SPLITS}
        kind = cls_tasks.ImageSplits
    return kind(
        train_x=x["train"], train_y=labels["train"], val_x=x["val"], val_y=labels["val"],
        test_x=x["test"], test_y=labels["test"], **common,
    )


def _make_record(
    cell: Cell, ds: Any, config: Any, preds: Any, n_train: int,
    checksum: str, weights_hash: str | None, key: str, seconds: float, weights_source: str | None = None,
) -> Record:
    from medfm.metrics import classification as cls_metrics

    task = metric_task(ds.card)
    y = np.asarray(preds.test_y)
    scores = np.asarray(preds.test_scores)
    metrics = cls_metrics.compute_metrics(y, scores, task, n_boot=cell.n_boot, seed=cell.seed)
    metrics = {k: v if isinstance(v, MetricValue) else MetricValue(float(v)) for k, v in metrics.items()}
    info = dict(getattr(preds, "info", None) or {})
    extra: dict[str, Any] = {
        # whether the network's weights were trained in this cell (scratch / finetune); a frozen
        # encoder with a fitted head is not a trained model
        "trained": cell.protocol in TRAINING_PROTOCOLS or bool(info.pop("model_trained", False)),
        "fitted_on_labels": bool(info.pop("trained", True)),
        "hyperparameters": to_dict(info),
        "n_train": int(n_train),
        "n_classes": len(ds.card.labels),
    }
    try:
        extra["roc"] = to_dict(cls_metrics.roc_points(y, scores, task=task, label_names=tuple(ds.card.labels)))
    except (ValueError, MedfmError) as exc:  # e.g. one class only in the test split
        extra["roc"] = {"error": str(exc)}
    try:
        extra["reliability"] = to_dict(cls_metrics.reliability_bins(y, scores, task=task))
    except (ValueError, MedfmError) as exc:
        extra["reliability"] = {"error": str(exc)}
    provenance = make_provenance(
        {"cell": cell.identity(), "protocol": to_dict(config)}, data_checksum=checksum, weights_hash=weights_hash,
        seed=cell.seed, cell_key=key, dataset_card=dataset_summary(ds), weights_source=weights_source,
        executor=current_execution(),
    )
    return Record(
        dataset=cell.dataset, split="test", model=cell.model, protocol=cell.protocol, metrics=metrics,
        shots=cell.shots, seed=cell.seed, n=int(len(y)), seconds=round(seconds, 3), provenance=provenance, extra=extra,
    )


# --------------------------------------------------------------------------------------
# Planning and the whole run
# --------------------------------------------------------------------------------------
def model_card(model: str) -> Any:
    """A model id's card (without loading weights); a saved model folder is loaded for its card."""
    from medfm import models

    if Path(model).expanduser().exists():
        return models.create_model(model).card
    return models.get_model_card(model)


def model_capabilities(model: str) -> frozenset[str]:
    """A model id's capabilities from its card."""
    return frozenset(model_card(model).capabilities)


def default_models() -> list[str]:
    """The built-in offline model set: every real card whose weights are present locally (but for
    cards marked ``config["bench_default"] = False``, variants run only when named), each
    pip-packaged pretrained model beside its random-init twin (the same architecture unpretrained:
    the floor its pre-training must beat); the random ViT-B/16 floor only when no such pair is there."""
    from medfm import models
    from medfm.bench.spec import RANDOM_FLOOR_MODEL

    ids = {c.id for c in models.list_model_cards()}
    out: list[str] = []
    for card in models.list_model_cards():
        if card.source is None or "image_encoder" not in card.capabilities or card.config.get("bench_default") is False:
            continue  # variants such as merlin/i3resnet152-ct-stages run when named
        if models.weights_available(card) == "local":
            out.append(card.id)
            twin = f"random/{card.id.split('/', 1)[1]}"
            if card.backend == "pretrained" and twin in ids:
                out.append(twin)
    if not any(m.startswith("random/") for m in out):
        out.insert(0, RANDOM_FLOOR_MODEL)
    return out


def _protocol_info(name: str, proto: Any) -> ProtocolInfo:
    import dataclasses

    cls = getattr(proto, "config_cls", None)
    keys = frozenset(f.name for f in dataclasses.fields(cls)) if cls is not None and dataclasses.is_dataclass(cls) else None
    uses_labels = bool(getattr(proto, "uses_labels", name not in LABEL_FREE_PROTOCOLS))
    return ProtocolInfo(name, proto.needs, uses_labels=uses_labels, config_keys=keys)


def plan(spec: BenchSpec, ctx: CellContext | None = None) -> tuple[list[Cell], list[str]]:
    """Expand ``spec`` with the registered protocols and the model zoo's cards."""
    ctx = ctx or default_context()
    infos = [_protocol_info(name, p) for name, p in ctx.protocols().items()]
    cells, notes = expand(spec, infos, ctx.capabilities, ctx.default_models)
    cells = _fit_dimensions(cells, notes, spec, ctx)
    multilabel = {c.dataset for c in cells if c.shots is not None and ctx.dataset(c.dataset, c.data_dir).card.task == "multilabel"}
    if multilabel:
        cells = [c for c in cells if c.shots is None or c.dataset not in multilabel]
        notes.append(f"few-shot cells skipped for multilabel dataset(s) {', '.join(sorted(multilabel))}: k-shot is defined per class")
        if not cells:
            raise ConfigError(f"multilabel dataset(s) {', '.join(sorted(multilabel))} need --shots all")
    return cells, notes


def _fit_dimensions(cells: list[Cell], notes: list[str], spec: BenchSpec, ctx: CellContext) -> list[Cell]:
    """Drop (dataset, model) pairs whose dimensionality differs (a 2D encoder on 3D volumes):
    a note for default models; a ConfigError when a model the user named fits none of the datasets.
    From-scratch cells build their network for the dataset, so they always fit."""
    data_ndim = {(c.dataset, c.data_dir): ctx.dataset(c.dataset, c.data_dir).card.ndim for c in cells}
    model_ndim = {c.model: ctx.input_ndim(c.model) for c in cells if not c.is_scratch}
    kept: list[Cell] = []
    dropped: dict[str, set[str]] = {}
    for c in cells:
        if c.is_scratch or model_ndim[c.model] == data_ndim[(c.dataset, c.data_dir)]:
            kept.append(c)
        else:
            dropped.setdefault(c.model, set()).add(c.dataset)
    for model, datasets in dropped.items():
        want = model_ndim[model]
        other = 3 if want == 2 else 2
        if spec.models and not any(c.model == model for c in kept):
            raise ConfigError(
                f"model '{model}' takes {want}D images but dataset(s) {', '.join(sorted(datasets))} hold "
                f"{other}D ones; use a {other}D encoder (e.g. one from 'medfm pretrain' on the dataset) "
                f"or --model {SCRATCH_PREFIX}resnet18"
            )
        notes.append(f"skipped {model} on {', '.join(sorted(datasets))}: it takes {want}D images, the dataset(s) do not")
    if not kept:
        raise ConfigError("bench spec expands to no cells: no requested model takes the datasets' image dimensionality")
    return kept


def check_data(cells: Sequence[Cell], ctx: CellContext) -> None:
    """Fail before any work: unreadable dataset, empty split, class missing for k-shot."""
    seen: dict[tuple[str, str | None], set[int | None]] = {}
    for c in cells:
        seen.setdefault((c.dataset, c.data_dir), set()).add(c.shots)
    for (name, data_dir), shots in seen.items():
        ds = ctx.dataset(name, data_dir)
        if ds.card.task not in ("classification", "multilabel", "ordinal"):
            raise ConfigError(f"dataset '{name}' is a {ds.card.task} dataset; medfm bench runs classification protocols")
        n_classes = len(ds.card.labels) or None
        for s in SPLITS:
            y = _split_labels(ds, s)
            if len(y) == 0:
                raise InputError(f"dataset '{name}': the {s} split is empty")
        from medfm.tasks.classification import subsample_shots

        y = _split_labels(ds, "train")
        for k in sorted(x for x in shots if x is not None):
            try:
                subsample_shots(y, k, 0, n_classes)
            except MedfmError as exc:
                raise type(exc)(f"dataset '{name}' train split: {exc}") from exc
        if y.ndim == 1 and n_classes:
            missing = sorted(set(range(n_classes)) - set(np.unique(y).tolist()))
            if missing:
                names = [ds.card.labels[i] for i in missing]
                raise InputError(f"dataset '{name}': class(es) {names} missing from the train split")


@dataclass
class BenchRun:
    """What ``run_bench`` did."""

    out: Path
    run_id: str
    records: list[Record]
    notes: list[str]
    warnings: list[str] = field(default_factory=list)
    computed: int = 0
    cached: int = 0
    resumed: int = 0
    seconds: float = 0.0
    report: Path | None = None
    results: Path | None = None
    completeness: Completeness | None = None

    def warn(self, message: str) -> None:
        """Keep ``message`` for the report and print it on stderr now."""
        self.warnings.append(message)
        _warn(message)


def default_out_dir(root: str | Path = "runs") -> Path:
    """``runs/<UTC timestamp>`` under the current folder."""
    return Path(root) / _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")


def run_bench(
    spec: BenchSpec,
    out: str | Path,
    *,
    force: bool = False,
    resume: bool = False,
    executor: Executor | None = None,
    context: CellContext | None = None,
    cache: CellCache | None = None,
    store: ResultsStore | None | bool = True,
    report: bool = True,
    progress: Callable[[Iterable[Any], int, str], Iterator[Any]] | None = None,
    extra_sections: Sequence[str] = (),
) -> BenchRun:
    """Run every cell of ``spec`` into ``out``; see the module docstring.

    A ``MedfmError`` in a cell stops the run after the finished cells were written (the
    message names the cell); ``results.json`` is only ever replaced atomically.
    """
    t0 = time.perf_counter()
    ctx = context or default_context()
    cache = cache if cache is not None else CellCache()
    cells, notes = plan(spec, ctx)
    notes = list(spec.notes) + notes
    check_data(cells, ctx)  # before creating anything: a bad dataset leaves no empty folder
    out = _paths.prepare_out_dir(out, force=force, resume=resume)
    results_path = out / "results.json"
    done, warnings = _resumed_records(results_path) if resume else ({}, [])
    run_id = f"{_dt.datetime.now(_dt.UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    results_store = _open_store(store, notes)
    keys = {c.key() for c in cells}
    others = [k for k in done if k not in keys]
    if others:
        notes.append(f"kept {len(others)} record(s) of the earlier results.json that are not in this grid")
    records: dict[tuple, Record] = dict(done)
    todo = [c for c in cells if not _is_done(c, done)]
    resumed = len(cells) - len(todo)
    run = BenchRun(out=out, run_id=run_id, records=[], notes=notes, warnings=warnings, resumed=resumed, results=results_path)
    memo: dict = {}  # each record's JSON text and checksum: results.json is rewritten after every cell

    def finish_cell(rec: Record) -> None:
        records[rec.key()] = rec
        write_results(results_path, _ordered(records.values(), cells), spec, completeness(cells, records, others), memo)
        if results_store is not None:
            results_store.add(run_id, [rec], out_dir=out)

    track = progress or _default_progress
    ex = executor or InProcessExecutor()
    error: BaseException | None = None
    # a module-level function with plain arguments: picklable, so a process-pool or Ray
    # executor can ship it to workers (context None = each worker's own default context)
    it = ex.map(functools.partial(compute_cell, ctx=context, cache=cache), todo)
    # closed as soon as the loop ends, not when garbage-collected: a cluster executor cancels its
    # tasks in flight while still connected (a Ray stream closed after ray.shutdown() started a new local Ray)
    with contextlib.closing(it) if hasattr(it, "close") else contextlib.nullcontext():
        for cell, result in track(it, len(todo), "bench cells"):
            if isinstance(result, BaseException):
                error = _named_error(cell, result)
                break
            for w in result.warnings:
                run.warn(w)
            if result.record.key() != cell.key():
                run.warn(f"{cell.label()}: the executor returned the record of {result.record.key()}; cell left missing")
                continue
            finish_cell(result.record)
            if result.cached:
                run.cached += 1
            else:
                run.computed += 1
    status = run.completeness = completeness(cells, records, others)
    if error is None and (not todo or not status.complete):
        write_results(results_path, _ordered(records.values(), cells), spec, status, memo)
    run.records = _ordered(records.values(), cells)
    run.seconds = time.perf_counter() - t0
    if error is not None:
        raise error
    if report and run.records:
        run.report = _write_report(run, spec, extra_sections)
    if not status.complete:
        raise IncompleteResultsError(
            f"{results_path}: {status.text(max_missing=10)}; rerun with --resume --out {out} to compute the missing cells"
        )
    return run


def _is_done(cell: Cell, done: dict[tuple, Record]) -> bool:
    """Whether an earlier record of ``cell`` (same key and identity) can be kept on resume."""
    prev = done.get(cell.key())
    return prev is not None and prev.provenance.get("config", {}).get("cell") == to_dict(cell.identity())


def _named_error(cell: Cell, exc: BaseException) -> BaseException:
    """A cell's MedfmError with the cell's label in front (same class, cause kept); others unchanged."""
    if not isinstance(exc, MedfmError):
        return exc
    error = type(exc)(f"{cell.label()}: {exc}")
    error.__cause__ = exc
    return error


def _resumed_records(results_path: Path) -> tuple[dict[tuple, Record], list[str]]:
    """Records of an earlier ``results.json`` to keep (by key), and a warning per record that was
    changed after medfm wrote it (left out, so its cell is recomputed)."""
    if not results_path.is_file():
        return {}, []
    old = load_results(results_path)
    warnings = [f"{results_path}: {problem}; recomputing it" for problem in old.problems]
    for w in warnings:
        _warn(w)
    return {r.key(): r for i, r in enumerate(old.records) if i not in old.changed}, warnings


def _open_store(store: ResultsStore | None | bool, notes: list[str]) -> ResultsStore | None:
    """The results store to add records to (True: the default one; a note when it cannot be opened)."""
    if store is not True:
        return store or None
    try:
        return ResultsStore()
    except (OSError, sqlite3.Error) as exc:
        notes.append(f"results store not written ({exc})")
        return None


def completeness(cells: Sequence[Cell], records: dict[tuple, Record], kept: Sequence[tuple] = ()) -> Completeness:
    """Cells planned (plus records kept from an earlier file) against records written; missing cells named."""
    missing = tuple(c.label() for c in cells if c.key() not in records)
    expected = len(cells) + len(kept)
    return Completeness(expected=expected, written=expected - len(missing), missing=missing)


def _warn(message: str) -> None:
    """A warning on stderr as it happens (the run also lists it in ``BenchRun.warnings`` and the report)."""
    import sys

    print(f"warning: {message}", file=sys.stderr, flush=True)


def _write_report(run: BenchRun, spec: BenchSpec, extra_sections: Sequence[str]) -> Path:
    """``OUT/report.html`` of the run: its records, notes, completeness and warnings."""
    from medfm.report import build_report

    return build_report(
        (to_dict(spec), run.records), run.out / "report.html", extra_sections=extra_sections,
        notes=[*run.notes, _run_note(run)], completeness=run.completeness, warnings=run.warnings,
    )


def _run_note(run: BenchRun) -> str:
    return (
        f"run {run.run_id}: {run.computed} cell(s) computed, {run.cached} from the cell cache, "
        f"{run.resumed} resumed from results.json, {run.seconds:.1f} s in all"
    )


def _ordered(records: Iterable[Record], cells: Sequence[Cell]) -> list[Record]:
    """Records in grid order; records not in this grid (kept from a resumed file) last."""
    order = {c.key(): i for i, c in enumerate(cells)}
    return sorted(records, key=lambda r: (order.get(r.key(), len(order)), str(r.key())))


def _default_progress(items: Iterable[Any], total: int, desc: str) -> Iterator[Any]:
    from medfm._progress import track

    yield from track(items, total=total, desc=desc, unit="cell")
