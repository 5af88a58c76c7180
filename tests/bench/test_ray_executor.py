"""Bench cells on Ray: same records as the local executor, two nodes sharing one store, a worker
killed mid-run, a driver killed and rerun, and a clear error without the ``scale`` extra.

One two-node cluster (``ray start --block`` x 2 on loopback, own temp folders, 1 CPU each) is
shared by the module and stopped by PID at its end; Ray starts are slow on a shared 2-core box.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from medfm._config import to_dict
from medfm.bench import BenchSpec, CellCache, InProcessExecutor, ResultsStore, run_bench
from medfm.bench.storage import Folder
from medfm.cli.main import main

pytestmark = pytest.mark.slow
MODEL = "test/vit-tiny-timm"


def _spec(shared_data: Path, shots: list, seeds: int, protocols=("knn", "prototype")) -> BenchSpec:
    return BenchSpec(datasets=["breastmnist"], models=[MODEL], protocols=list(protocols), shots=shots, seeds=seeds,
                     n_boot=20, data_dir=str(shared_data), precision="fp32")


def _diff(a, b, path: str = "") -> list[str]:
    """Paths where two JSON-like values differ (for a readable failure)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b or (a != a and b != b) else [f"{path}: {a!r} != {b!r}"[:200]]


def _comparable(rec) -> dict:
    """A record without what legitimately differs between runs: timings and the executor."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if not k.endswith("seconds")}
        return [strip(v) for v in x] if isinstance(x, list) else x

    d = strip(to_dict(rec))
    d["provenance"].pop("executor")
    d["provenance"].pop("run_id", None)
    return d


@pytest.fixture(scope="module")
def cluster(shared_data: Path):
    import importlib.util

    if importlib.util.find_spec("ray") is None:  # not imported here: Ray reads its auth token at import
        pytest.skip("ray not installed (medfm[scale])")
    from ray_cluster import LocalCluster

    c = LocalCluster.up(nodes=2, num_cpus=1)  # raises with the nodes' logs if it cannot start
    saved = {k: os.environ.get(k) for k in c.client_env()}
    try:
        os.environ.update(c.client_env())
        yield c
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        c.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _ray_executor(cluster, **kw):
    from medfm.bench.ray_executor import RayExecutor

    return RayExecutor(address=cluster.address, **kw)


@pytest.mark.parametrize("shared", ["path", "s3"])
def test_two_nodes_give_the_local_records_once_each(cluster, shared_data: Path, tmp_path: Path, shared: str) -> None:
    """Two nodes share one cell cache and results store: a folder, or an S3 bucket (a moto
    server on loopback, reached by every worker through s3fs)."""
    spec = _spec(shared_data, [1, 4], 2)
    local = run_bench(spec, tmp_path / "local", executor=InProcessExecutor(), cache=CellCache(tmp_path / "c-local"),
                      store=False, report=False)
    with contextlib.ExitStack() as stack:
        if shared == "s3":
            pytest.importorskip("s3fs")
            pytest.importorskip("moto.server")
            from s3_server import bucket_url, s3_server

            opts = stack.enter_context(s3_server())
            root: str | Path = bucket_url()
        else:
            opts, root = None, tmp_path / "shared"
        store = ResultsStore(f"{root}/results" if shared == "s3" else Path(root) / "results.sqlite", storage_options=opts)
        cache = CellCache(f"{root}/cells", storage_options=opts)
        ex = _ray_executor(cluster, workers=2)
        run = run_bench(spec, tmp_path / "ray", executor=ex, cache=cache, store=store, report=False)
        assert run.computed == len(local.records) == 8 and run.cached == 0
        diffs = [_diff(_comparable(a), _comparable(b)) for a, b in zip(run.records, local.records, strict=True)]
        assert diffs == [[]] * 8, diffs[0][:10]
        assert len(ex.stats.nodes_used) == 2 and ex.stats.duplicates == 0  # both nodes worked
        prov = run.records[0].provenance["executor"]
        assert prov["kind"] == "ray" and prov["nodes"] == 2 and local.records[0].provenance["executor"]["kind"] == "local"
        # one shared results store and cell cache: every cell recorded exactly once
        if shared == "s3":
            rows = [(r.dataset, r.model, r.protocol, r.shots, r.seed) for r in store.records(run_id=run.run_id)]
            entries = Folder(f"{root}/cells", opts).list()
        else:
            with sqlite3.connect(store.path) as con:
                rows = con.execute("SELECT dataset, model, protocol, shots, seed FROM records WHERE run_id = ?",
                                   (run.run_id,)).fetchall()
            entries = [str(p) for p in (tmp_path / "shared" / "cells").rglob("*.json")]
        assert len(rows) == len(set(rows)) == 8
        assert len(entries) == 8 and all(e.endswith(".json") for e in entries)
        keys = [r.key() for r in run.records]
        assert len(keys) == len(set(keys)) == 8
        # a rerun on the cluster (a fresh driver) takes every cell from the shared cache
        again = run_bench(spec, tmp_path / "ray2", executor=_ray_executor(cluster, workers=2),
                          cache=CellCache(f"{root}/cells", storage_options=opts), store=False, report=False)
        assert again.cached == 8 and again.computed == 0


def _cell_tasks() -> list[int]:
    """PIDs of Ray workers running a bench cell now (their process title is ``ray::medfm-cell``)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "cmdline").read_bytes().startswith(b"ray::medfm-cell"):
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def test_worker_killed_mid_run_loses_and_duplicates_nothing(cluster, shared_data: Path, tmp_path: Path) -> None:
    spec = _spec(shared_data, [1, 2, 4], 3, protocols=("knn",))
    ex = _ray_executor(cluster, workers=2, max_retries=3)
    box: dict = {}
    worker = threading.Thread(target=lambda: box.update(run=run_bench(
        spec, tmp_path / "o", executor=ex, cache=CellCache(tmp_path / "cells"), store=False, report=False)))
    worker.start()
    killed = None
    deadline = time.time() + 240
    while killed is None and worker.is_alive() and time.time() < deadline:
        pids = _cell_tasks()
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            killed = pids[0]
        time.sleep(0.01)
    worker.join(300)
    assert killed is not None, "no cell task seen running"
    run = box["run"]
    keys = [r.key() for r in run.records]
    assert len(keys) == len(set(keys)) == 9  # none lost, none twice
    assert ex.stats.retries >= 1 and ex.stats.failed == 0
    assert json.loads((tmp_path / "o" / "results.json").read_text())["records"].__len__() == 9


def test_driver_killed_then_rerun_takes_finished_cells_from_the_cache(cluster, shared_data: Path, tmp_path: Path) -> None:
    cells = tmp_path / "cells"
    args = [sys.executable, "-c", "from medfm.cli.main import run; run()", "bench", "--dataset", "breastmnist", "--model", MODEL,
            "--protocol", "knn,prototype", "--shots", "1,2,4", "--seeds", "2", "--n-boot", "20",
            "--data-dir", str(shared_data), "--precision", "fp32", "--no-report", "--executor", "ray",
            "--address", cluster.address, "--workers", "2", "--cache-dir", str(cells), "--json"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    first = subprocess.Popen([*args, "--out", str(tmp_path / "o1")], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and first.poll() is None and len(list(cells.rglob("*.json"))) < 3:
        time.sleep(0.05)
    assert first.poll() is None, "the first driver ended on its own"
    os.kill(first.pid, signal.SIGKILL)
    first.wait(30)
    done_before = len(list(cells.rglob("*.json")))
    assert 3 <= done_before < 12, f"driver not killed mid-run ({done_before} cells cached)"
    second = subprocess.run([*args, "--out", str(tmp_path / "o2")], env=env, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stderr[-2000:]
    out = json.loads(second.stdout)
    assert out["cached"] >= done_before and out["cached"] + out["computed"] == 12
    assert out["executor"]["kind"] == "ray" and out["executor"]["nodes"] == 2
    recs = json.loads((tmp_path / "o2" / "results.json").read_text())["records"]
    assert len({(r["protocol"], r["shots"], r["seed"]) for r in recs}) == len(recs) == 12


@pytest.mark.parametrize("command", ["bench", "embed"])
def test_ray_missing_exits_2_naming_the_extra(command: str, monkeypatch, capsys, shared_data: Path, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as without the extra
    args = ["--dataset", "breastmnist", "--model", MODEL, "--data-dir", str(shared_data), "--executor", "ray",
            "--out", str(tmp_path / "o")]
    assert main([command, *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "medfm[scale]" in err[0]
    assert not (tmp_path / "o").exists()


def test_ray_only_options_need_the_ray_executor(capsys) -> None:
    assert main(["bench", "--workers", "2"]) == 2
    assert "--executor ray" in capsys.readouterr().err


def test_embed_on_ray_equals_local_and_resumes_by_shard(cluster, shared_data: Path, tmp_path: Path) -> None:
    import numpy as np

    from medfm.models.embed import EmbedJob, embed_dataset

    base = {"dataset": "breastmnist", "model": MODEL, "splits": ["train"], "data_dir": str(shared_data),
            "precision": "fp32", "batch_size": 32, "shard_size": 128}
    local = embed_dataset(EmbedJob(**base, cache_dir=tmp_path / "c-local", out=tmp_path / "local"))
    job = EmbedJob(**base, cache_dir=tmp_path / "c-ray", out=tmp_path / "ray", executor="ray",
                   address=cluster.address, workers=2)
    ray_run = embed_dataset(job)
    a, b = np.load(tmp_path / "local" / "train.npy"), np.load(tmp_path / "ray" / "train.npy")
    assert a.shape == (546, 32) and ray_run["splits"]["train"]["cache"]["computed"] == 5  # 546 images, 5 shards
    np.testing.assert_array_equal(a, b)
    assert ray_run["executor"]["kind"] == "ray" and ray_run["executor"]["workers"] == 2
    assert local["weights_hash"] == ray_run["weights_hash"] and local["dtype"] == ray_run["dtype"] == "float32"
    # a crash left shards 1 and 3 missing and shard 4 torn: only those three are recomputed
    entry = Path(ray_run["splits"]["train"]["cache"]["entry"])
    (entry / "chunk-000001.npy").unlink()
    (entry / "chunk-000003.npy").unlink()
    torn = entry / "chunk-000004.npy"
    torn.write_bytes(torn.read_bytes()[:64])
    again = embed_dataset(EmbedJob(**{**job.__dict__, "out": tmp_path / "ray2"}))
    assert again["splits"]["train"]["cache"]["hit"] == 2 and again["splits"]["train"]["cache"]["computed"] == 3
    np.testing.assert_array_equal(np.load(tmp_path / "ray2" / "train.npy"), a)


def _procs_titled(prefix: bytes) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "cmdline").read_bytes().startswith(prefix):
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def test_embed_on_ray_actor_killed_mid_run_still_equals_local(cluster, shared_data: Path, tmp_path: Path) -> None:
    """Ray Data restarts a killed actor and retries its shard: every shard once, the local arrays."""
    import numpy as np

    from medfm.models.embed import EmbedJob, embed_dataset

    base = {"dataset": "breastmnist", "model": MODEL, "splits": ["train"], "data_dir": str(shared_data),
            "precision": "fp32", "batch_size": 8, "shard_size": 16, "limit": 320}
    local = embed_dataset(EmbedJob(**base, cache_dir=tmp_path / "c-local", out=tmp_path / "local"))
    job = EmbedJob(**base, cache_dir=tmp_path / "c-ray", out=tmp_path / "ray", executor="ray",
                   address=cluster.address, workers=2)
    box: dict = {}
    t = threading.Thread(target=lambda: box.update(run=embed_dataset(job)))
    t.start()
    killed, deadline = None, time.time() + 240
    entry_chunks = lambda: list((tmp_path / "c-ray").rglob("chunk-*.npy"))
    while killed is None and t.is_alive() and time.time() < deadline:
        pids = _procs_titled(b"ray::MapWorker(MapBatches(_EmbedShards))")
        if pids and len(entry_chunks()) >= 2:  # the actors are working: kill one between or inside shards
            os.kill(pids[0], signal.SIGKILL)
            killed = pids[0]
        time.sleep(0.01)
    t.join(400)
    assert killed is not None, "no embedding actor seen at work"
    run = box["run"]
    assert run["splits"]["train"]["cache"]["computed"] + run["splits"]["train"]["cache"]["hit"] == 20
    np.testing.assert_array_equal(np.load(tmp_path / "ray" / "train.npy"), np.load(tmp_path / "local" / "train.npy"))
    assert local["splits"]["train"]["n"] == 320


def test_embed_on_ray_bad_model_is_one_line_error(cluster, shared_data: Path, tmp_path: Path, capsys) -> None:
    args = ["embed", "--dataset", "breastmnist", "--model", "nosuch/model", "--data-dir", str(shared_data),
            "--executor", "ray", "--address", cluster.address, "--workers", "1", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if "nosuch/model" in ln]
    assert len(err) == 1 and "Traceback" not in err[0] and "ray::" not in err[0], err


def test_failing_cell_is_retried_then_reported_not_dropped(cluster, tmp_path: Path) -> None:
    """A cell that raises on the worker is retried --max-retries times, then the run stops
    naming it, with the finished cells written; a medfm error (a bad input) is not retried."""
    import bench_fakes
    import ray.cloudpickle as cp
    from bench_fakes import CountingProtocol, FakeContext

    from medfm.bench import BenchSpec
    from medfm.errors import InputError

    cp.register_pickle_by_value(bench_fakes)  # the fakes travel with the task (workers cannot import tests/)
    spec = BenchSpec(datasets=["fake"], models=["fake/vision"], protocols=["count"], shots=[1, 2], seeds=1, n_boot=5)
    ex = _ray_executor(cluster, workers=2, max_retries=1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_bench(spec, tmp_path / "o", executor=ex, context=FakeContext({"count": CountingProtocol(fail_after=0)}),
                  cache=CellCache(tmp_path / "c"), store=False, report=False)
    assert ex.stats.failed >= 1 and ex.stats.retries >= 1  # every failure was retried once first

    class BadInput(CountingProtocol):
        def run(self, *a, **k):
            raise InputError("fake: unreadable image 7")

    ex = _ray_executor(cluster, workers=1, max_retries=3)
    with pytest.raises(InputError, match="unreadable image 7"):
        run_bench(spec, tmp_path / "o2", executor=ex, context=FakeContext({"count": BadInput()}),
                  cache=CellCache(tmp_path / "c2"), store=False, report=False)
    assert ex.stats.retries == 0 and ex.stats.failed == 1
