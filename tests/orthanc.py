"""A real Orthanc PACS for tests: Debian's ``/usr/sbin/Orthanc`` with the DICOMweb plugin on loopback ports.

Started with a temporary configuration and storage, waited on until its REST API answers, stopped on exit.
No mock stands in for it: tests that need a PACS talk HTTP/DICOMweb and DIMSE to this process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ORTHANC_BIN = os.environ.get("MEDFM_ORTHANC_BIN", "/usr/sbin/Orthanc")
DICOMWEB_PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
)


# loopback only: never through an http_proxy from the environment
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _death_signal():
    """A pre-exec hook: SIGTERM Orthanc when the starting thread dies (even by SIGKILL), so none is left running.

    libc is loaded here, in the parent; the child only makes one prctl call (no imports, no locks).
    """
    try:
        import ctypes

        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:
        return None

    def hook() -> None:
        prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG

    return hook


def dicomweb_plugin() -> str | None:
    """Path of the DICOMweb plugin shared object (Debian ``orthanc-dicomweb``), or None."""
    for cand in DICOMWEB_PLUGIN_CANDIDATES:
        if Path(cand).is_file():
            return cand
    found = sorted(Path("/usr/lib/orthanc").glob("libOrthancDicomWeb.so*")) if Path("/usr/lib/orthanc").is_dir() else []
    return str(found[0]) if found else None


def orthanc_missing_reason() -> str | None:
    """Why Orthanc cannot be started here (binary or plugin absent), or None when it can."""
    if not (Path(ORTHANC_BIN).is_file() and os.access(ORTHANC_BIN, os.X_OK)):
        return f"Orthanc binary not found at {ORTHANC_BIN} (apt-get install orthanc orthanc-dicomweb)"
    if dicomweb_plugin() is None:
        return "Orthanc DICOMweb plugin not found (apt-get install orthanc-dicomweb)"
    return None


@dataclass
class Orthanc:
    """A running Orthanc: URLs, DICOM address, and helpers to reset it and register remote modalities."""

    http_port: int
    dicom_port: int
    aet: str
    workdir: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        """Base URL of the Orthanc REST API, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """DICOMweb root, e.g. ``http://127.0.0.1:PORT/dicom-web``."""
        return f"{self.url}/dicom-web"

    @property
    def log_path(self) -> Path:
        return self.workdir / "orthanc.log"

    # --- REST helpers -------------------------------------------------------------------------
    def rest(self, method: str, path: str, body: object | bytes | None = None, timeout: float = 30.0):
        """Call the Orthanc REST API; returns decoded JSON (or raw bytes when not JSON)."""
        data = None
        headers = {}
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = "application/dicom" if isinstance(body, bytes) else "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        with _OPENER.open(req, timeout=timeout) as r:
            raw = r.read()
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw

    def upload(self, paths) -> list[str]:
        """POST DICOM files (paths or a folder) to ``/instances``; returns Orthanc instance ids."""
        files: list[Path] = []
        for p in [paths] if isinstance(paths, (str, Path)) else paths:
            p = Path(p)
            files.extend(sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p])
        return [self.rest("POST", "/instances", f.read_bytes())["ID"] for f in files]

    def studies(self) -> list[str]:
        return self.rest("GET", "/studies")

    def clear(self) -> None:
        """Delete every patient (and so every study) so a test starts from an empty PACS."""
        for pid in self.rest("GET", "/patients"):
            self.rest("DELETE", f"/patients/{pid}")

    def add_modality(self, name: str, aet: str, port: int, host: str = "127.0.0.1") -> None:
        """Register a remote DICOM node (for C-MOVE/C-STORE from Orthanc to it) via ``PUT /modalities/NAME``."""
        self.rest("PUT", f"/modalities/{name}", {"AET": aet, "Host": host, "Port": int(port)})

    def remove_modality(self, name: str) -> None:
        self.rest("DELETE", f"/modalities/{name}")

    # --- life cycle ---------------------------------------------------------------------------
    def alive(self) -> bool:
        """True once the HTTP server answers (any status: 401 too, when authentication is on)."""
        try:
            with _OPENER.open(self.url + "/system", timeout=2) as r:
                return r.status == 200
        except urllib.error.HTTPError:
            return True
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, wait (bounded), then SIGKILL; Orthanc flushes its SQLite index on SIGTERM."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def start_orthanc(workdir: Path | None = None, aet: str = "ORTHANC", ready_timeout: float = 60.0,
                  die_with_parent: bool = True, extra_config: dict | None = None) -> Orthanc:
    """Start Orthanc on free loopback ports with a temp config/storage; raises RuntimeError if not ready in time.

    ``die_with_parent``: Orthanc gets SIGTERM when the thread that started it ends (tests: never left running);
    False for a script that leaves it running (then stop it by its pid). ``extra_config``: Orthanc options
    merged over the defaults (e.g. ``{"AuthenticationEnabled": True, "RegisteredUsers": {"u": "p"}}``).
    """
    reason = orthanc_missing_reason()
    if reason:
        raise FileNotFoundError(reason)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="medfm_orthanc_"))
    (workdir / "storage").mkdir(parents=True, exist_ok=True)
    last_err = ""
    for _attempt in range(3):  # a picked port may be taken between pick and bind: retry with new ports
        http_port, dicom_port = free_port(), free_port()
        while dicom_port == http_port:
            dicom_port = free_port()
        cfg = {
            "Name": "medfm-test",
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "storage"),
            "HttpPort": http_port,
            "HttpServerEnabled": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SslEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": aet,
            "DicomPort": dicom_port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowMove": True,
            "DicomAlwaysAllowGet": True,
            "DicomModalities": {},
            "DicomModalitiesInDatabase": False,
            "DicomScuTimeout": 10,
            "UnknownSopClassAccepted": True,
            "HttpTimeout": 30,
            "Plugins": [dicomweb_plugin()],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False,
                         "Host": f"127.0.0.1:{http_port}"},
            "SaveJobs": False,
            "StableAge": 1,
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
            "ConcurrentJobs": 2,
            "HttpThreadsCount": 20,
        }
        cfg.update(extra_config or {})
        cfg_path = workdir / "orthanc.json"
        cfg_path.write_text(json.dumps(cfg, indent=1))
        with open(workdir / "orthanc.log", "ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                [ORTHANC_BIN, str(cfg_path)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=workdir, start_new_session=True, preexec_fn=_death_signal() if die_with_parent else None,  # noqa: PLW1509 - one prctl call, no locks
            )
        o = Orthanc(http_port=http_port, dicom_port=dicom_port, aet=aet, workdir=workdir, proc=proc)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if o.alive():
                return o
            time.sleep(0.2)
        o.stop()
        last_err = (workdir / "orthanc.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"Orthanc did not become ready (log tail):\n{last_err}")


def orthanc_fixture(tmp_path_factory):
    """Generator body for the session fixture in tests/conftest.py: start, yield, stop, remove storage."""
    import pytest

    reason = orthanc_missing_reason()
    if reason:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("orthanc")
    o = start_orthanc(workdir)
    try:
        yield o
    finally:
        o.stop()
        shutil.rmtree(workdir / "storage", ignore_errors=True)
