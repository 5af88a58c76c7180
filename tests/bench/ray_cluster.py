"""A throwaway Ray cluster for tests and benchmarks: ``ray start --block`` nodes on loopback.

Every node gets its own temp folder, free ports and a small object store; token auth stays on
with a random token shared through the environment. ``stop()`` ends exactly the processes this
helper started (by PID and the process group it created), never others' Ray processes.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Ray 2.60 rewrites "127.0.0.1" in an address to the machine's network address unless it runs in
# one-machine mode, which a joining node refuses; 127.0.0.2 is loopback on Linux and left alone.
# (With a node address other than 127.0.0.1 Ray's servers listen on every interface, so the
# cluster keeps token auth on, with a random token.)
LOOPBACK = "127.0.0.2"
LOOPBACK_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class LocalCluster:
    """Head node plus ``add_node()`` workers, each a ``ray start --block`` process group."""

    def __init__(self, object_store_mb: int = 80) -> None:
        self.token = secrets.token_hex(32)
        self.env = {**os.environ, **LOOPBACK_ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}
        self.port = free_port()
        self.address = f"{LOOPBACK}:{self.port}"
        self.object_store_mb = object_store_mb
        self.procs: list[subprocess.Popen] = []
        self.dirs: list[Path] = []

    def client_env(self) -> dict[str, str]:
        """Environment a driver needs to join (loopback mode, the token)."""
        return {k: self.env[k] for k in (*LOOPBACK_ENV, "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}

    def _start(self, head: bool, num_cpus: int) -> subprocess.Popen:
        tmp = Path(tempfile.mkdtemp(prefix="mr", dir="/tmp"))  # short: Ray's socket paths must fit 107 chars
        self.dirs.append(tmp)
        ray = str(Path(sys.executable).with_name("ray"))
        args = [
            ray, "start", "--block", "--node-ip-address", LOOPBACK, "--num-cpus", str(num_cpus), "--num-gpus", "0",
            "--object-store-memory", str(self.object_store_mb * 1024 * 1024), "--temp-dir", str(tmp),
            "--disable-usage-stats", "--include-log-monitor", "false",
            "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
            "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
        ]
        if head:
            args += ["--head", "--port", str(self.port), "--include-dashboard", "false",
                     "--dashboard-host", LOOPBACK, "--dashboard-port", str(free_port())]
        else:
            args += ["--address", self.address]
        log = open(tmp / "start.log", "w")  # noqa: SIM115 - kept open for the process's life
        proc = subprocess.Popen(args, env=self.env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start(self, num_cpus: int = 1) -> LocalCluster:
        self._start(True, num_cpus)
        return self

    def add_node(self, num_cpus: int = 1) -> None:
        self._start(False, num_cpus)

    def wait_nodes(self, n: int, timeout: float = 180.0) -> None:
        """Block until ``n`` nodes are alive (from a short-lived client process)."""
        code = (
            "import ray,sys,time\n"
            f"ray.init(address={self.address!r}, log_to_driver=False)\n"
            f"t=time.time()\n"
            f"while sum(x['Alive'] for x in ray.nodes())<{n}:\n"
            f"    time.sleep(0.5)\n"
            f"    if time.time()-t>{timeout}: sys.exit(3)\n"
        )
        subprocess.run([sys.executable, "-c", code], env=self.env, check=True, timeout=timeout + 60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        """SIGTERM each ``ray start --block`` (it stops its node), then kill what is left of its group.

        The grace period is short: on this 2-core box a node never finished within 30 s, so the
        group kill below is what ends it in practice (the wait was 30 s of every test session)."""
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 5
        for p in reversed(self.procs):
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the group this helper created with start_new_session
            except (ProcessLookupError, PermissionError):
                pass
        self.procs.clear()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.dirs.clear()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
