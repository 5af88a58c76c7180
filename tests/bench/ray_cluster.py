"""A throwaway Ray cluster for tests and benchmarks: ``ray start --block`` nodes on loopback.

Every node gets its own temp folder, free ports and a small object store; token auth stays on
with a random token shared through the environment. ``stop()`` ends exactly the processes this
helper started (by PID and the process group it created), never others' Ray processes.
``LocalCluster.up(n)`` starts the head, waits for it, then adds workers; a start that fails
raises with the nodes' own logs (a CI run once waited 240 s on a cluster and said nothing why).
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
import warnings
from pathlib import Path

# Ray 2.60 rewrites "127.0.0.1" in an address to the machine's network address unless it runs in
# one-machine mode, which a joining node refuses; 127.0.0.2 is loopback on Linux and left alone.
# (With a node address other than 127.0.0.1 Ray's servers listen on every interface, so the
# cluster keeps token auth on, with a random token.)
LOOPBACK = "127.0.0.2"
LOOPBACK_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


def free_port(taken: set[int]) -> int:
    """A port free on every interface (Ray's servers bind all of them) and not in ``taken``
    (the ports already handed to this cluster); added to it."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("", 0))
            port = int(s.getsockname()[1])
        if port not in taken:
            taken.add(port)
            return port
    raise RuntimeError("no free port found")


class ClusterStartError(RuntimeError):
    """A test cluster did not come up; the message carries each node's log tail."""


class LocalCluster:
    """Head node plus ``add_node()`` workers, each a ``ray start --block`` process group."""

    def __init__(self, object_store_mb: int = 80) -> None:
        self.token = secrets.token_hex(32)
        self.env = {**os.environ, **LOOPBACK_ENV, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}
        self.ports: set[int] = set()
        self.port = free_port(self.ports)
        self.address = f"{LOOPBACK}:{self.port}"
        self.object_store_mb = object_store_mb
        self.procs: list[subprocess.Popen] = []
        self.dirs: list[Path] = []

    def client_env(self) -> dict[str, str]:
        """Environment a driver needs to join (loopback mode, the token)."""
        return {k: self.env[k] for k in (*LOOPBACK_ENV, "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}

    @classmethod
    def up(cls, nodes: int = 2, num_cpus: int = 1, attempts: int = 2, **kw) -> LocalCluster:
        """A running cluster of ``nodes`` nodes; a failed start is stopped and tried afresh
        (new ports, new folders) up to ``attempts`` times, the failure's logs kept in a warning."""
        for attempt in range(1, attempts + 1):
            c = cls(**kw)
            try:
                c.start(num_cpus)
                c.wait_nodes(1)
                for _ in range(nodes - 1):
                    c.add_node(num_cpus)
                c.wait_nodes(nodes)
                return c
            except ClusterStartError as e:
                c.stop()
                if attempt == attempts:
                    raise
                warnings.warn(f"Ray test cluster start {attempt} failed, starting afresh: {e}", stacklevel=2)
        raise AssertionError("unreachable")

    def _start(self, head: bool, num_cpus: int) -> subprocess.Popen:
        tmp = Path(tempfile.mkdtemp(prefix="mr", dir="/tmp"))  # short: Ray's socket paths must fit 107 chars
        self.dirs.append(tmp)
        ray = str(Path(sys.executable).with_name("ray"))

        def port() -> str:
            return str(free_port(self.ports))

        args = [
            ray, "start", "--block", "--node-ip-address", LOOPBACK, "--num-cpus", str(num_cpus), "--num-gpus", "0",
            "--object-store-memory", str(self.object_store_mb * 1024 * 1024), "--temp-dir", str(tmp),
            "--disable-usage-stats", "--include-log-monitor", "false",
            "--node-manager-port", port(), "--object-manager-port", port(),
            "--dashboard-agent-listen-port", port(), "--dashboard-agent-grpc-port", port(),
            "--runtime-env-agent-port", port(), "--metrics-export-port", port(),
        ]
        if head:
            args += ["--head", "--port", str(self.port), "--include-dashboard", "false",
                     "--dashboard-host", LOOPBACK, "--dashboard-port", port()]
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

    def logs(self, lines: int = 15) -> str:
        """The last lines of each node's start log and of its Ray servers' error logs."""
        out = []
        for i, (d, p) in enumerate(zip(self.dirs, self.procs, strict=False)):
            state = "running" if p.poll() is None else f"exited {p.returncode}"
            out.append(f"--- node {i} ({'head' if i == 0 else 'worker'}, {state}), {d}")
            for f in [d / "start.log", *sorted(d.glob("session_*/logs/gcs_server.err")),
                      *sorted(d.glob("session_*/logs/raylet.err")), *sorted(d.glob("session_*/logs/raylet.out"))]:
                if f.is_file() and not f.parent.parent.is_symlink():
                    tail = f.read_text(errors="replace").splitlines()[-lines:]
                    if tail:
                        out.append(f"{f.relative_to(d)}:\n" + "\n".join(tail))
        return "\n".join(out)

    def _check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise ClusterStartError(f"a node's `ray start` exited ({p.returncode}).\n{self.logs()}")

    def wait_nodes(self, n: int, timeout: float = 180.0) -> None:
        """Block until ``n`` nodes are alive: the head's port open, then a short-lived client
        process counts nodes. A node process that exits or a timeout raises with the logs."""
        deadline = time.time() + timeout
        while True:
            self._check_alive()
            with socket.socket() as s:
                s.settimeout(1.0)
                if s.connect_ex((LOOPBACK, self.port)) == 0:
                    break
            if time.time() > deadline:
                raise ClusterStartError(f"head port {self.port} not open after {timeout:.0f} s.\n{self.logs()}")
            time.sleep(0.5)
        left = max(10.0, deadline - time.time())
        code = (
            "import ray,sys,time\n"
            f"ray.init(address={self.address!r}, log_to_driver=False)\n"
            f"t=time.time()\n"
            f"while sum(x['Alive'] for x in ray.nodes())<{n}:\n"
            f"    time.sleep(0.5)\n"
            f"    if time.time()-t>{left}: sys.exit(3)\n"
        )
        log = self.dirs[0] / f"client{n}.log"
        with open(log, "w") as f:
            client = subprocess.Popen([sys.executable, "-c", code], env=self.env, stdout=subprocess.DEVNULL, stderr=f)
        try:
            while client.poll() is None:  # a node that dies meanwhile ends the wait at once
                if time.time() > deadline + 60:
                    raise ClusterStartError(f"a client could not count {n} nodes within {left + 60:.0f} s.\n"
                                            f"{self.logs()}")
                self._check_alive()
                time.sleep(0.5)
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
        if client.returncode != 0:
            err = log.read_text(errors="replace")
            why = f"fewer than {n} nodes alive" if client.returncode == 3 else "client failed"
            raise ClusterStartError(f"{why} after {left:.0f} s (exit {client.returncode}): "
                                    f"{err.strip()[-1500:]}\n{self.logs()}")
        self._check_alive()

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
