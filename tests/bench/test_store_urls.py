"""Cell cache and results store on fsspec URLs: ``memory://``, ``file://`` and a real
S3-compatible HTTP server on loopback (moto's ThreadedMotoServer) through s3fs.

The checks that hold on disk hold there too: an edited record or another cell's entry is never
returned, a cell written twice is one record, nothing half-written is visible.
"""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from bench_fakes import CountingProtocol

from medfm.bench import BenchSpec, CellCache, ResultsStore, run_bench
from medfm.bench.storage import Folder
from medfm.bench.store import ObjectResultsStore

SPEC = {"datasets": ["fake"], "models": ["fake/vision"], "protocols": ["count"], "shots": [1, 4], "seeds": 2, "n_boot": 20}


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 (a free port) and storage options for s3fs to reach it."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    from s3_server import s3_server

    with s3_server() as opts:
        yield opts


def _bucket_url(s3_opts) -> str:
    from s3_server import bucket_url

    return bucket_url()


def _locations(tmp_path, s3_opts=None):
    yield f"memory://{uuid.uuid4().hex[:8]}", None
    yield (tmp_path / "mnt").as_uri(), None  # file:// (a shared mount): temp file + rename
    if s3_opts is not None:
        yield _bucket_url(s3_opts), s3_opts


def _run(ctx, out, cache, store):
    return run_bench(BenchSpec(**SPEC), out, context=ctx, cache=cache, store=store, report=False)


def _check_cache_and_store(fake_ctx, tmp_path, root: str, opts) -> None:
    proto = CountingProtocol()
    cache = CellCache(f"{root}/cells", storage_options=opts)
    store = ResultsStore(f"{root}/store", storage_options=opts)
    assert isinstance(store, ObjectResultsStore)
    first = _run(fake_ctx({"count": proto}), tmp_path / "a", cache, store)
    assert first.computed == 4 and proto.calls == 4
    # a fresh cache object (as on another node) finds every cell; nothing is recomputed
    second = _run(fake_ctx({"count": proto}), tmp_path / "b", CellCache(f"{root}/cells", storage_options=opts), store)
    assert second.cached == 4 and second.computed == 0 and proto.calls == 4
    assert [r.metrics for r in second.records] == [r.metrics for r in first.records]
    # the store: one record per cell per run, in order, with the run id
    again = ResultsStore(f"{root}/store", storage_options=opts)
    assert {rid for rid, _, n in again.runs()} == {first.run_id, second.run_id}
    recs = again.records(run_id=first.run_id)
    assert [r.key() for r in recs] == [r.key() for r in first.records]
    assert all(r.provenance["run_id"] == first.run_id for r in recs)
    # re-adding a cell in the same run replaces it (a retried or duplicated cell is one record)
    again.add(first.run_id, first.records[:1])
    assert len(again.records(run_id=first.run_id)) == 4
    # an edited number is caught by the checksum in both
    folder = Folder(f"{root}/cells", opts)
    name = next(n for n in folder.list() if n.endswith(".json"))
    entry = json.loads(folder.read(name))
    metric = next(iter(entry["record"]["metrics"]))
    entry["record"]["metrics"][metric]["value"] = 0.999
    folder.write(name, json.dumps(entry).encode())
    key = name.rsplit("/", 1)[-1][:-5]
    rec, bad = cache.lookup(key)
    assert rec is None and "checksum" in bad.problem and str(bad.path).startswith(root)
    sf = Folder(f"{root}/store", opts)
    obj = min(sf.list("records/"))
    doc = json.loads(sf.read(obj))
    doc["record"]["n"] = 12345
    sf.write(obj, json.dumps(doc).encode())
    with pytest.warns(UserWarning, match="checksum"):
        total = len(again.records())
    assert total == 7 and len(again.problems) == 1
    # no temporary objects left behind
    assert not [n for n in folder.list() + sf.list() if ".tmp-" in n or n.endswith(".part")]


def test_memory_and_file_urls(fake_ctx, tmp_path) -> None:
    for root, opts in _locations(tmp_path):
        _check_cache_and_store(fake_ctx, tmp_path / uuid.uuid4().hex[:6], root, opts)


def test_s3_server(fake_ctx, tmp_path, s3) -> None:
    _check_cache_and_store(fake_ctx, tmp_path, _bucket_url(s3), s3)


def test_s3_concurrent_writers_of_one_cell_leave_one_whole_entry(s3, fake_ctx, tmp_path) -> None:
    root = _bucket_url(s3)
    first = _run(fake_ctx(), tmp_path / "a", CellCache(f"{root}/c0", storage_options=s3), None)
    rec = first.records[0]
    key = rec.provenance["cell_key"]
    caches = [CellCache(f"{root}/cells", storage_options=s3) for _ in range(4)]
    threads = [threading.Thread(target=c.put, args=(key, rec)) for c in caches for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got, bad = caches[0].lookup(key)
    assert bad is None and got is not None and got.metrics == rec.metrics
    assert Folder(f"{root}/cells", s3).list() == [f"{key[:2]}/{key}.json"]
    store = ResultsStore(f"{root}/store", storage_options=s3)
    ts = [threading.Thread(target=store.add, args=("run1", [rec])) for _ in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(store.records(run_id="run1")) == 1 and store.runs()[0][2] == 1


def test_s3_missing_bucket_is_one_line_output_error(s3, fake_ctx, tmp_path) -> None:
    from medfm.errors import OutputError

    rec = _run(fake_ctx(), tmp_path / "a", CellCache(tmp_path / "c"), None).records[0]
    with pytest.raises(OutputError, match=r"s3://no-such-bucket/cells/.*cannot write") as err:
        CellCache("s3://no-such-bucket/cells", storage_options=s3).put(rec.provenance["cell_key"], rec)
    assert "\n" not in str(err.value)


def test_url_default_locations_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("MEDFM_CELL_CACHE", "memory://envcells")
    monkeypatch.setenv("MEDFM_STORE", "memory://envstore")
    assert CellCache().root == "memory://envcells"
    assert isinstance(ResultsStore(), ObjectResultsStore) and ResultsStore().path == "memory://envstore"


def test_unknown_url_scheme_is_one_line_config_error() -> None:
    from medfm.errors import ConfigError

    with pytest.raises(ConfigError, match="nosuchfs://x"):
        CellCache("nosuchfs://x/cells").get("ab" * 20)


def test_url_that_went_through_path_is_restored() -> None:
    """A path-typed CLI option turns ``memory://x`` into ``memory:/x``; it is a URL again."""
    from pathlib import Path

    cache = CellCache(Path("memory://pathcells/c"))
    assert cache.root == "memory://pathcells/c"
    assert isinstance(ResultsStore(Path("memory://pathstore")), ObjectResultsStore)
    assert isinstance(CellCache(Path("relative/dir")).root, Path)
    assert CellCache(Path("file:///tmp/x/cells")).root == "file:///tmp/x/cells"


def test_ray_workers_get_the_url_settings_but_no_secrets(monkeypatch) -> None:
    from medfm._ray import worker_env

    for k, v in {"MEDFM_CELL_CACHE": "s3://b/cells", "MEDFM_STORE": "s3://b/results", "FSSPEC_S3_ENDPOINT_URL": "http://h:1",
                 "AWS_ENDPOINT_URL": "http://h:1", "FSSPEC_S3_KEY": "k", "FSSPEC_S3_SECRET": "s",
                 "AWS_SECRET_ACCESS_KEY": "s", "AWS_ACCESS_KEY_ID": "k"}.items():
        monkeypatch.setenv(k, v)
    env = worker_env(1)
    assert env["MEDFM_CELL_CACHE"] == "s3://b/cells" and env["MEDFM_STORE"] == "s3://b/results"
    assert env["FSSPEC_S3_ENDPOINT_URL"] == env["AWS_ENDPOINT_URL"] == "http://h:1"
    assert not {"FSSPEC_S3_KEY", "FSSPEC_S3_SECRET", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"} & set(env)
