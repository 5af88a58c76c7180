"""``medfm listen``: a DICOM Storage SCP that runs a pipeline on each complete series (an "AI node").

Flow: C-STORE -> the instance is checked (decodes, pixel data complete), optionally de-identified,
and written to ``STORE/incoming/<series key>/<instance>.dcm`` with fsync BEFORE success is answered
(a crash never loses an acknowledged instance, and never leaves half a file). A series is complete
when the association that sent it is released, or after ``quiet_seconds`` without a new instance;
complete series go to a queue; one worker per model runs the pipeline one job at a time and sends
the results (DICOM-SEG + TID 1500 SR) by C-STORE to the destination. ``STORE/journal.jsonl``
(append-only, fsynced) records queued / running / processed / done / failed per series: after a
kill and restart, finished series are not run again, unfinished ones are, and results computed but
not yet sent are sent as they are (same SOP instance UIDs), so each received series is processed
exactly once. With ``deid`` only de-identified data reaches the disk (audit in
``STORE/deid_audit.jsonl``, no values). Logs name series by a hash of their UID, never patient data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import ConfigError, InputError, MedfmError

log = logging.getLogger("medfm.listen")

# DIMSE C-STORE statuses (PS3.4 Annex B / PS3.7 C.4.2)
STATUS_SUCCESS = 0x0000
STATUS_CANNOT_UNDERSTAND = 0xC210  # dataset does not decode
STATUS_DATASET_MISMATCH = 0xA900  # dataset does not match the SOP class (missing UIDs, truncated pixel data)
STATUS_OUT_OF_RESOURCES = 0xA700  # could not write to disk


@dataclass
class PipelineConfig:
    """What runs on each complete series (YAML: the keys below, nothing else).

    ``task: segment``: ``model`` is a zoo segmenter id (promptable: prompted with ``box_fraction``,
    a box given as fractions (x0, y0, x1, y1) of the image width / height, on the middle slice and
    propagated through the volume) or a folder written by ``medfm train-seg`` (no prompt).
    Results: a DICOM-SEG named ``segment_name`` and, with ``sr``, a TID 1500 SR of its volume.
    """

    task: str = "segment"
    model: str = ""
    box_fraction: tuple[float, float, float, float] | None = (0.25, 0.25, 0.75, 0.75)
    segment_name: str = "object"
    sr: bool = True
    device: str = "cpu"

    def check(self, where: str) -> None:
        if self.task != "segment":
            raise ConfigError(f"{where}: task '{self.task}' is not supported (supported: segment)")
        if not self.model:
            raise ConfigError(f"{where}: 'model' is required (a zoo segmenter id or a train-seg folder)")
        if self.box_fraction is not None:
            b = tuple(float(v) for v in self.box_fraction)
            if len(b) != 4 or not (0 <= b[0] < b[2] <= 1 and 0 <= b[1] < b[3] <= 1):
                raise ConfigError(f"{where}: box_fraction must be x0 < x1, y0 < y1 within [0, 1], got {self.box_fraction}")
            self.box_fraction = b  # type: ignore[assignment]


def load_pipeline_config(path: str | Path) -> PipelineConfig:
    """Read a pipeline YAML; unknown keys are refused (never dropped silently)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such pipeline config")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of pipeline settings")
    known = set(PipelineConfig.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{p}: unknown keys {unknown} (known: {sorted(known)})")
    cfg = PipelineConfig(**raw)
    if cfg.model and not Path(cfg.model).is_absolute() and (p.parent / cfg.model).is_dir():
        cfg.model = str(p.parent / cfg.model)  # a model folder next to the config
    cfg.check(str(p))
    return cfg


@dataclass
class ListenConfig:
    """Settings of one listener. ``destination``: ``AET@HOST:PORT`` for the results (None: kept on disk only)."""

    ae_title: str
    port: int
    store_dir: Path
    pipeline: PipelineConfig
    host: str = "127.0.0.1"
    deid: bool = False
    destination: str | None = None
    quiet_seconds: float = 10.0
    complete_on_release: bool = True
    send_timeout: float = 60.0

    def check(self) -> None:
        if not 0 < len(self.ae_title) <= 16:
            raise ConfigError(f"--aet must be 1 to 16 characters, got '{self.ae_title}'")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"--port must be 0..65535, got {self.port}")
        if self.quiet_seconds <= 0:
            raise ConfigError(f"--quiet must be > 0 seconds, got {self.quiet_seconds}")
        if self.destination:
            from medfm.io.pacs import parse_dimse_address

            parse_dimse_address(self.destination)


def series_key(series_uid: str) -> str:
    """Short stable name for a series in paths and logs (a hash: a UID is not written to logs)."""
    return hashlib.sha256(series_uid.encode()).hexdigest()[:16]


_APPEND_LOCK = threading.Lock()


def _append_line(path: Path, obj: dict[str, Any]) -> None:
    """Append one JSON line and fsync it: after a crash a line is either whole or (cut) ignored."""
    with _APPEND_LOCK:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(obj) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)


class Journal:
    """Append-only JSON-lines log of series states, fsynced per line; replayed on start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.state: dict[str, str] = {}
        self.events: list[dict[str, Any]] = []
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    ev = json.loads(line)
                except json.JSONDecodeError:  # a line cut by a crash: the event did not happen
                    continue
                self.events.append(ev)
                self.state[ev["series"]] = ev["event"]

    def last(self, series: str) -> dict[str, Any] | None:
        """The latest event of ``series`` (None when it has none)."""
        with self._lock:
            return next((e for e in reversed(self.events) if e["series"] == series), None)

    def write(self, series: str, event: str, **extra: Any) -> None:
        ev = {"time": round(time.time(), 3), "series": series, "event": event, **extra}
        with self._lock:
            _append_line(self.path, ev)
            self.events.append(ev)
            self.state[series] = event


class SegmentPipeline:
    """Loads the model once; ``run(series_dir, out_dir)`` writes DICOM-SEG (+ SR) and returns their paths."""

    def __init__(self, cfg: PipelineConfig) -> None:
        from medfm.tasks.segmentation.model import is_trained_model_dir

        self.cfg = cfg
        self.trained = is_trained_model_dir(cfg.model)
        if self.trained:
            from medfm.tasks.segmentation.ensemble import load_segmenter

            self.model = load_segmenter(cfg.model, device=cfg.device)
            self.labels = tuple(self.model.info.labels)
            self.names = tuple(self.model.info.label_names or (f"label {v}" for v in self.labels))
            self.model_id = f"trained:{Path(cfg.model).name}"
        else:
            from medfm.models import create_model

            if cfg.box_fraction is None:
                raise ConfigError(f"{cfg.model}: a promptable model needs box_fraction in the pipeline config")
            self.model = create_model(cfg.model, device=cfg.device)
            self.model.require("segmenter", "medfm listen")
            self.labels, self.names, self.model_id = (1,), (cfg.segment_name,), self.model.card.id

    def run(self, series_dir: Path, out_dir: Path) -> dict[str, Any]:
        from medfm.io import read_dicom_series, write_dicom_seg

        image = read_dicom_series(series_dir)
        if self.trained:
            mask = self.model.predict(image)
        else:
            from medfm.tasks.segmentation.promptable import propagate_3d, segment_box

            h, w = image.spatial_shape[-2:]
            x0, y0, x1, y1 = self.cfg.box_fraction  # type: ignore[misc]
            box = (x0 * (w - 1), y0 * (h - 1), x1 * (w - 1), y1 * (h - 1))
            if image.ndim == 2:
                m = segment_box(self.model, image.array, box, modality=image.modality)[None]
            else:
                m = propagate_3d(self.model, image, image.spatial_shape[0] // 2, box=box)
            mask = image.with_array(m[None].astype(np.uint8), modality="SEG")
        lab = np.asarray(mask.array[0])
        voxels = {self.names[i]: int((lab == v).sum()) for i, v in enumerate(self.labels)}
        if not any(voxels.values()):
            return {"model": self.model_id, "voxels": voxels, "files": [], "note": "empty mask: nothing to send"}
        idx = np.zeros(int(max(self.labels)) + 1, dtype=np.uint8)
        for k, v in enumerate(self.labels):
            idx[v] = k + 1
        seg = write_dicom_seg(mask.with_array(idx[mask.array]), series_dir, out_dir / "seg.dcm", list(self.names),
                              overwrite=True)
        files = [seg]
        if self.cfg.sr:
            from medfm.io.dicom_sr import write_segment_volume_sr

            files.append(write_segment_volume_sr(seg, series_dir, out_dir / "sr.dcm", overwrite=True))
        return {"model": self.model_id, "voxels": voxels, "files": [str(f) for f in files]}


@dataclass
class _Pending:
    last: float
    n: int = 0
    assocs: set[int] = field(default_factory=set)


class Listener:
    """The Storage SCP, the completion monitor and the worker; ``start()`` / ``stop()``; see the module doc."""

    def __init__(self, cfg: ListenConfig, pipeline: Any | None = None,
                 on_done: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        cfg.check()
        self.cfg = cfg
        self.store = Path(cfg.store_dir)
        self.incoming = self.store / "incoming"
        self.results = self.store / "results"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.results.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(self.store / "journal.jsonl")
        self._pipeline = pipeline
        self._on_done = on_done
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._queued: set[str] = set()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: Any = None
        self.deidentifier = self._deidentifier() if cfg.deid else None
        self.port = cfg.port

    # -- state --------------------------------------------------------------------------------

    def _deidentifier(self) -> Any:
        from medfm.io.deid import Deidentifier

        # one secret seed per store: the same series keeps the same pseudonymous UIDs across restarts
        seed_file = self.store / ".deid_seed"
        if not seed_file.exists():  # written whole or not at all (temporary file + rename), readable by owner only
            tmp = self.store / f".deid_seed.{os.getpid()}.part"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, seed_file)
        seed = seed_file.read_text().strip()
        if len(seed) < 32:
            raise ConfigError(f"{seed_file}: damaged de-identification seed (remove it only if no series is pending)")
        return Deidentifier(seed=seed)

    def _recover(self) -> None:
        """Replay the journal against what is on disk: unfinished series are queued or pending again."""
        for part in self.incoming.glob("*/.*.part"):
            part.unlink()  # a write cut by a crash: never acknowledged
        now = time.monotonic()
        for d in sorted(p for p in self.incoming.iterdir() if p.is_dir()):
            state = self.journal.state.get(d.name)
            if state in ("done", "failed"):
                continue
            if state in ("queued", "running", "processed"):
                log.info("series %s: recovered after a restart (was %s); queued again", d.name, state)
                self._enqueue(d.name, journal=False)
            else:
                n = sum(1 for _ in d.glob("*.dcm"))
                log.info("series %s: %d instances received before a restart; waiting for the rest", d.name, n)
                self._pending[d.name] = _Pending(last=now, n=n)

    def _enqueue(self, key: str, journal: bool = True) -> None:
        with self._lock:
            if key in self._queued:
                return
            self._queued.add(key)
            self._pending.pop(key, None)
        if journal:
            self.journal.write(key, "queued")
        self._queue.put(key)

    # -- DICOM handlers -------------------------------------------------------------------------

    def _handle_store(self, event: Any) -> int:
        from medfm.io.deid import check_complete, write_dataset

        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            for kw in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
                if not str(ds.get(kw, "")).strip():
                    log.warning("C-STORE refused: the dataset has no %s", kw)
                    return STATUS_DATASET_MISMATCH
            if "PixelData" in ds:
                _ = ds.PixelData
        except Exception as exc:  # noqa: BLE001 - a dataset that does not decode
            log.warning("C-STORE refused: the dataset does not decode (%s)", type(exc).__name__)
            return STATUS_CANNOT_UNDERSTAND
        try:
            check_complete(ds, "received dataset")
        except InputError as exc:
            log.warning("C-STORE refused: %s", exc)
            return STATUS_DATASET_MISMATCH
        audit = None
        if self.deidentifier is not None:
            with self._lock:  # dicognito's randomiser is shared state
                audit = self.deidentifier.deidentify(ds)
        key = series_key(str(ds.SeriesInstanceUID))
        name = hashlib.sha256(str(ds.SOPInstanceUID).encode()).hexdigest()[:24] + ".dcm"
        try:
            write_dataset(ds, self.incoming / key / name)
            if audit is not None:  # what was removed / replaced, never the values
                audit.output = f"incoming/{key}/{name}"
                _append_line(self.store / "deid_audit.jsonl", audit.to_dict())
        except Exception as exc:  # noqa: BLE001 - disk full, permissions: the sender keeps the instance
            log.error("C-STORE refused: cannot write series %s (%s)", key, type(exc).__name__)
            return STATUS_OUT_OF_RESOURCES
        with self._lock:
            state = self.journal.state.get(key)
            if state in ("done", "failed") or key in self._queued:
                log.warning("series %s: instance received after the series was %s; stored, not processed again",
                            key, state or "queued")
                return STATUS_SUCCESS
            p = self._pending.setdefault(key, _Pending(last=time.monotonic()))
            p.last, p.n = time.monotonic(), p.n + 1
            p.assocs.add(id(event.assoc))
        return STATUS_SUCCESS

    def _handle_released(self, event: Any) -> None:
        if not self.cfg.complete_on_release:
            return
        aid = id(event.assoc)
        with self._lock:
            keys = [(k, p.n) for k, p in self._pending.items() if aid in p.assocs]
        for k, n in keys:
            log.info("series %s: complete (association released; %d instances in it)", k, n)
            self._enqueue(k)

    # -- threads --------------------------------------------------------------------------------

    def _monitor(self) -> None:
        while not self._stop.wait(0.2):
            now = time.monotonic()
            with self._lock:
                due = [k for k, p in self._pending.items() if now - p.last >= self.cfg.quiet_seconds]
            for k in due:
                log.info("series %s: complete (quiet for %.0f s)", k, self.cfg.quiet_seconds)
                self._enqueue(k)

    def _worker(self) -> None:
        while True:
            key = self._queue.get()
            if key is None:
                return
            self._run_job(key)

    def _run_job(self, key: str) -> None:
        t0 = time.perf_counter()
        out = self.results / key
        keep = ("model", "files", "note", "voxels")
        try:
            prev = self.journal.last(key)
            if prev and prev["event"] == "processed" and all((self.store / f).is_file() for f in prev["files"]):
                # crashed between computing and sending: send the same objects again (same SOP instance
                # UIDs, so a PACS that already has them keeps one copy) instead of computing new ones
                res = {k: prev[k] for k in keep if k in prev}
                log.info("series %s: results computed before a restart; sending them", key)
            else:
                self.journal.write(key, "running")
                out.mkdir(parents=True, exist_ok=True)
                res = self._pipeline.run(self._job_input(key, out / "input"), out)
                res["files"] = [str(Path(f).relative_to(self.store)) for f in res["files"]]
                self.journal.write(key, "processed", **{k: v for k, v in res.items() if k in keep})
            if self.cfg.destination and res["files"]:
                self._send([self.store / f for f in res["files"]])
                res["sent_to"] = self.cfg.destination
        except MedfmError as exc:
            self._fail(key, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a pipeline bug must not stop the listener
            self._fail(key, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            return
        res["seconds"] = round(time.perf_counter() - t0, 3)
        self.journal.write(key, "done", **{k: v for k, v in res.items() if k in (*keep, "seconds", "sent_to")})
        log.info("series %s: done in %.1f s (%s)", key, res["seconds"],
                 f"{len(res['files'])} results" + (f" sent to {self.cfg.destination}" if res.get("sent_to") else "")
                 + (f"; {res['note']}" if res.get("note") else ""))
        with self._lock:
            self._queued.discard(key)
        if self._on_done:
            self._on_done(key, res)

    def _job_input(self, key: str, folder: Path) -> Path:
        """The series' instances as of now, hard-linked into the job's own folder: an instance still
        being written (a ``.part`` file) or arriving during the job cannot change what the job reads."""
        import shutil

        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for f in sorted((self.incoming / key).glob("*.dcm")):
            try:
                os.link(f, folder / f.name)
            except OSError:  # a file system without hard links
                shutil.copy2(f, folder / f.name)
        return folder

    def _fail(self, key: str, reason: str) -> None:
        # the reason names the series by its key and the problem; inputs under STORE hold no names
        reason = reason.replace(str(self.store), "STORE")
        self.journal.write(key, "failed", reason=reason)
        log.error("series %s: failed: %s", key, reason)
        with self._lock:
            self._queued.discard(key)
        if self._on_done:
            self._on_done(key, {"failed": reason})

    def _send(self, files: list[Path]) -> None:
        import pydicom

        from medfm.io.pacs import c_store, parse_dimse_address

        node = parse_dimse_address(self.cfg.destination or "")
        c_store(node, [pydicom.dcmread(f) for f in files], calling_aet=self.cfg.ae_title, timeout=self.cfg.send_timeout)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Listener:
        """Recover from the journal, start the worker, the monitor and the SCP (non-blocking)."""
        from medfm._optional import optional_import

        optional_import("pynetdicom")
        from pynetdicom import (
            AE,
            ALL_TRANSFER_SYNTAXES,
            AllStoragePresentationContexts,
            evt,
        )
        from pynetdicom.sop_class import Verification

        if self._pipeline is None:  # load the model first: a bad config fails before anything is accepted
            self._pipeline = SegmentPipeline(self.cfg.pipeline)
        self._recover()
        for target in (self._worker, self._monitor):
            t = threading.Thread(target=target, name=f"medfm-listen-{target.__name__.strip('_')}", daemon=True)
            t.start()
            self._threads.append(t)
        ae = AE(ae_title=self.cfg.ae_title)
        ae.maximum_pdu_size = 0
        ae.require_called_aet = True  # an association addressed to another AE title is rejected
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        handlers = [(evt.EVT_C_STORE, self._handle_store), (evt.EVT_RELEASED, self._handle_released)]
        try:
            self._server = ae.start_server((self.cfg.host, self.cfg.port), block=False, evt_handlers=handlers)
        except OSError as exc:
            self.stop()
            raise ConfigError(f"cannot listen on {self.cfg.host}:{self.cfg.port} ({exc.strerror or exc})") from None
        self.port = self._server.server_address[1]
        from medfm._provenance import versions

        # provenance of every result that follows: the pipeline config and library versions
        self.journal.write("-", "start", config=asdict(self.cfg.pipeline), deid=self.cfg.deid,
                           destination=self.cfg.destination, versions=versions())
        log.info("listening as %s on %s:%d; store %s%s", self.cfg.ae_title, self.cfg.host, self.port, self.store,
                 "; de-identifying" if self.deidentifier else "")
        return self

    def stop(self) -> None:
        """Stop accepting, finish the job in progress, stop the threads."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self._stop.set()
        self._queue.put(None)
        for t in self._threads:
            t.join(timeout=60)
        self._threads = []

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is pending or queued (tests, graceful shutdown); False on timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                busy = bool(self._pending or self._queued)
            if not busy:
                return True
            time.sleep(0.1)
        return False

    def summary(self) -> dict[str, Any]:
        states = list(self.journal.state.values())
        return {"done": states.count("done"), "failed": states.count("failed"),
                "config": asdict(self.cfg) | {"store_dir": str(self.store)}}
