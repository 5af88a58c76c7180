"""Runner mechanics on fake data: cell cache, resume after a crash, results.json, errors."""

from __future__ import annotations

import json

import pytest
from bench_fakes import CountingProtocol, FakeDataset, TextProtocol

from medfm.bench import BenchSpec, CellCache, ResultsStore, run_bench
from medfm.errors import ConfigError, InputError, MedfmError, OutputError

SPEC = dict(datasets=["fake"], models=["fake/vision"], protocols=["count"], shots=[1, 4, "all"], seeds=2, n_boot=50)


def _run(ctx, out, tmp_path, **kw):
    kw.setdefault("cache", CellCache(tmp_path / "cells"))
    kw.setdefault("store", ResultsStore(tmp_path / "store.sqlite"))
    kw.setdefault("report", False)
    return run_bench(BenchSpec(**SPEC), out, context=ctx, **kw)


def test_second_run_hits_the_cell_cache_with_identical_numbers(fake_ctx, tmp_path) -> None:
    proto = CountingProtocol()
    ctx = fake_ctx({"count": proto})
    first = _run(ctx, tmp_path / "a", tmp_path)
    n_cells = 3 * 2
    assert proto.calls == n_cells and first.computed == n_cells and first.cached == 0
    ctx2 = fake_ctx({"count": proto})  # a fresh process: nothing in memory
    second = _run(ctx2, tmp_path / "b", tmp_path)
    assert proto.calls == n_cells, "no cell may be recomputed"
    assert second.cached == n_cells and second.computed == 0
    assert ctx2.feature_calls == 0, "a cache hit must not embed anything"
    a = json.loads((tmp_path / "a" / "results.json").read_text())["records"]
    b = json.loads((tmp_path / "b" / "results.json").read_text())["records"]
    assert [r["metrics"] for r in a] == [r["metrics"] for r in b]


def test_changed_config_is_recomputed(fake_ctx, tmp_path) -> None:
    proto = CountingProtocol()
    _run(fake_ctx({"count": proto}), tmp_path / "a", tmp_path)
    calls = proto.calls
    spec = BenchSpec(**{**SPEC, "protocol_config": {"count": {"shrink": 0.5}}})
    run = run_bench(spec, tmp_path / "b", context=fake_ctx({"count": proto}), cache=CellCache(tmp_path / "cells"),
                    store=None, report=False)
    assert proto.calls == 2 * calls and run.cached == 0
    assert run.records[0].extra["hyperparameters"] == {"shrink": 0.5}


def test_crash_then_rerun_does_not_recompute_finished_cells(fake_ctx, tmp_path) -> None:
    crashing = CountingProtocol(fail_after=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(fake_ctx({"count": crashing}), tmp_path / "out", tmp_path)
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(doc["records"]) == 4  # every finished cell was saved before the crash
    # ... and the file says it is 4 of 6, naming the 2 cells that never ran
    assert doc["completeness"]["expected"] == 6 and doc["completeness"]["written"] == 4
    assert len(doc["completeness"]["missing"]) == 2 and all("fake/vision count" in m for m in doc["completeness"]["missing"])

    # resume from results.json alone (empty cell cache): only the 2 missing cells run
    proto = CountingProtocol()
    run = _run(fake_ctx({"count": proto}), tmp_path / "out", tmp_path, resume=True, cache=CellCache(tmp_path / "fresh"))
    assert proto.calls == 2 and run.resumed == 4 and run.computed == 2
    assert len(json.loads((tmp_path / "out" / "results.json").read_text())["records"]) == 6

    # a new output folder after the crash: the cell cache supplies the finished cells
    proto2 = CountingProtocol()
    run2 = _run(fake_ctx({"count": proto2}), tmp_path / "new", tmp_path)
    assert proto2.calls == 2 and run2.cached == 4


def test_results_json_shape_and_store(fake_ctx, tmp_path) -> None:
    store = ResultsStore(tmp_path / "store.sqlite")
    run = _run(fake_ctx(), tmp_path / "out", tmp_path, store=store)
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(doc) == {"medfm_version", "spec", "completeness", "record_sha256", "records"}
    assert len(doc["record_sha256"]) == len(doc["records"])
    assert doc["completeness"] == {"expected": 6, "written": 6, "missing": []}
    assert doc["spec"]["shots"] == [1, 4, "all"]
    rec = doc["records"][0]
    assert {"dataset", "split", "model", "protocol", "shots", "seed", "n", "seconds", "metrics", "provenance", "extra"} <= set(rec)
    assert rec["split"] == "test" and rec["n"] == 30
    auroc = rec["metrics"]["auroc"]
    assert auroc["ci_low"] <= auroc["value"] <= auroc["ci_high"]
    prov = rec["provenance"]
    assert {"config", "versions", "data_checksum", "weights_hash", "git_commit", "seed", "cell_key"} <= set(prov)
    assert prov["weights_hash"] == "hash-fake/vision" and prov["data_checksum"].startswith("fake-")
    assert rec["extra"]["trained"] is False and rec["extra"]["roc"]["curves"] and rec["extra"]["reliability"]["count"]
    assert {r["shots"] for r in doc["records"]} == {1, 4, None}
    rows = store.records(run_id=run.run_id)
    assert len(rows) == len(doc["records"]) == 6
    assert rows[0].metrics["auroc"].value == auroc["value"]
    _run(fake_ctx(), tmp_path / "out2", tmp_path, store=store)
    assert [n for _, _, n in store.runs()] == [6, 6]


def test_class_missing_from_train_is_refused_before_any_work(fake_ctx, tmp_path) -> None:
    proto = CountingProtocol()
    ctx = fake_ctx({"count": proto}, {"fake": FakeDataset(drop_class=0)})
    with pytest.raises(MedfmError, match="train split"):
        _run(ctx, tmp_path / "out", tmp_path)
    assert proto.calls == 0


def test_empty_split_is_refused(fake_ctx, tmp_path) -> None:
    ctx = fake_ctx(None, {"fake": FakeDataset(empty="test")})
    with pytest.raises(InputError, match="test split is empty"):
        _run(ctx, tmp_path / "out", tmp_path)


def test_non_empty_out_is_refused_and_kept(fake_ctx, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{\"mine\": 1}")
    with pytest.raises(OutputError, match="not empty"):
        _run(fake_ctx(), out, tmp_path)
    assert (out / "results.json").read_text() == "{\"mine\": 1}"


def test_error_in_a_cell_keeps_finished_cells_and_names_the_cell(fake_ctx, tmp_path) -> None:
    class BadInput(CountingProtocol):
        def run(self, data, cfg, seed, shots):
            if self.calls >= 1:
                raise InputError("scores contain NaN")
            return super().run(data, cfg, seed, shots)

    with pytest.raises(InputError, match=r"fake fake/vision count .*: scores contain NaN"):
        _run(fake_ctx({"count": BadInput()}), tmp_path / "out", tmp_path)
    assert len(json.loads((tmp_path / "out" / "results.json").read_text())["records"]) == 1


def test_text_protocol_on_vision_model_is_config_error_when_asked(fake_ctx, tmp_path) -> None:
    ctx = fake_ctx({"count": CountingProtocol(), "zs": TextProtocol("zs")})
    spec = BenchSpec(datasets=["fake"], models=["fake/vision"], protocols=["zs"], shots=["all"], seeds=1)
    with pytest.raises(ConfigError, match="text_encoder"):
        run_bench(spec, tmp_path / "out", context=ctx, store=None, report=False, cache=CellCache(tmp_path / "c"))
    assert not (tmp_path / "out").exists()
    # from defaults: skipped with a note
    spec = BenchSpec(datasets=["fake"], shots=["all"], seeds=1, n_boot=0)
    run = run_bench(spec, tmp_path / "out", context=ctx, store=None, report=False, cache=CellCache(tmp_path / "c"))
    assert {r.protocol for r in run.records} == {"count"}
    assert any("zs" in n and "text_encoder" in n for n in run.notes)


def test_models_that_do_not_fit_the_image_dimensionality(fake_ctx) -> None:
    from medfm.bench.runner import plan

    ctx = fake_ctx({"count": CountingProtocol()}, {"fake": FakeDataset(), "vol": FakeDataset("vol", ndim=3)})
    # default model set (2D) on a 2D and a 3D dataset: the 3D pairs are skipped with a note
    cells, notes = plan(BenchSpec(datasets=["fake", "vol"], shots=["all"], seeds=1), ctx)
    assert {(c.dataset, c.model) for c in cells} == {("fake", "fake/vision")}
    assert any("fake/vision" in n and "vol" in n and "2D" in n for n in notes)
    # a named 3D model runs on the 3D dataset only
    cells, _ = plan(BenchSpec(datasets=["fake", "vol"], models=["fake/vision", "fake/vision3d"], shots=["all"], seeds=1), ctx)
    assert {(c.dataset, c.model) for c in cells} == {("fake", "fake/vision"), ("vol", "fake/vision3d")}
    # a named 2D model that fits none of the datasets is a clear error
    with pytest.raises(ConfigError, match=r"model 'fake/vision' takes 2D images but dataset\(s\) vol hold 3D"):
        plan(BenchSpec(datasets=["vol"], models=["fake/vision"], shots=["all"], seeds=1), ctx)


def test_custom_executor_order_does_not_change_results(fake_ctx, tmp_path) -> None:
    class Reversed:
        def map(self, fn, cells):
            for c in reversed(list(cells)):
                yield c, fn(c)

    a = _run(fake_ctx(), tmp_path / "a", tmp_path, cache=CellCache(tmp_path / "c1"))
    b = _run(fake_ctx(), tmp_path / "b", tmp_path, cache=CellCache(tmp_path / "c2"), executor=Reversed())
    assert [r.key() for r in a.records] == [r.key() for r in b.records]
    assert [r.metrics for r in a.records] == [r.metrics for r in b.records]


def test_report_is_written(fake_ctx, tmp_path) -> None:
    run = _run(fake_ctx(), tmp_path / "out", tmp_path, report=True)
    text = run.report.read_text()
    assert "id='leaderboard'" in text and "data:image/png;base64," in text


def test_cell_function_survives_pickling_like_a_remote_worker(fake_ctx, tmp_path) -> None:
    import pickle

    class PickleExecutor:
        """Ships (fn, cell) through pickle, as a process pool or Ray would."""

        def map(self, fn, cells):
            for c in cells:
                remote_fn, remote_cell = pickle.loads(pickle.dumps((fn, c)))
                yield c, remote_fn(remote_cell)

    a = _run(fake_ctx(), tmp_path / "a", tmp_path, cache=CellCache(tmp_path / "c1"))
    b = _run(fake_ctx(), tmp_path / "b", tmp_path, cache=CellCache(tmp_path / "c2"), executor=PickleExecutor())
    assert [r.metrics for r in a.records] == [r.metrics for r in b.records]
    assert b.computed == 6


def test_a_stopped_run_closes_the_executor_stream_at_once(fake_ctx, tmp_path) -> None:
    """A failed cell stops the run and closes the executor's stream right away, so a cluster
    executor cancels its tasks in flight while it is still connected (left to the garbage collector,
    a Ray stream's cleanup ran after ray.shutdown() and started a new local Ray instance)."""
    closed: list[int] = []

    class StreamExecutor:
        def map(self, fn, cells):
            try:
                for c in cells:
                    try:
                        out = fn(c)
                    except Exception as exc:  # noqa: BLE001 - as the in-process executor reports it
                        out = exc
                    yield c, out
            finally:
                closed.append(1)

    with pytest.raises(RuntimeError, match="simulated crash"):  # the traceback keeps run_bench's locals alive
        _run(fake_ctx({"count": CountingProtocol(fail_after=2)}), tmp_path / "o", tmp_path, executor=StreamExecutor())
    assert closed == [1]
