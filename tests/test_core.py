"""Registry, config round trips, results files, output folders."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from medfm._config import from_dict, to_dict
from medfm._paths import atomic_path, prepare_out_dir
from medfm._registry import Registry
from medfm._runtime import PRECISIONS, check_precision
from medfm.errors import ConfigError, OutputError
from medfm.results import MetricValue, Record, read_results, write_results


def test_registry_refuses_duplicates_and_suggests() -> None:
    r: Registry[int] = Registry("dataset")
    r.register("breastmnist", 1)
    with pytest.raises(ConfigError):
        r.register("breastmnist", 2)
    with pytest.raises(ConfigError, match="Did you mean 'breastmnist'"):
        r.get("breastmnst")


@dataclass
class _Inner:
    k: int = 1


@dataclass
class _Cfg:
    name: str = "x"
    shots: tuple[int, ...] = (1, 2)
    inner: _Inner = field(default_factory=_Inner)
    lr: float = 0.1


def test_config_round_trip_and_unknown_key() -> None:
    cfg = _Cfg(name="a", shots=(4, 8), inner=_Inner(3), lr=1)
    back = from_dict(_Cfg, to_dict(cfg))
    assert back == _Cfg(name="a", shots=(4, 8), inner=_Inner(3), lr=1.0)
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(_Cfg, {"nmae": "a"})


def test_results_round_trip(tmp_path) -> None:
    rec = Record("breastmnist", "test", "test/tiny", "linear_probe", {"auroc": MetricValue(0.9, 0.85, 0.95)}, shots=4, seed=1, n=156)
    p = write_results(tmp_path / "results.json", [rec], _Cfg())
    spec, recs = read_results(p)
    assert recs[0].metrics["auroc"] == MetricValue(0.9, 0.85, 0.95)
    assert recs[0].key() == rec.key() and spec["name"] == "x"


def test_results_text_is_json_indented_and_the_memo_only_adds_new_records(tmp_path) -> None:
    """results.json spliced from memoised record texts is byte-equal to ``json.dumps(doc, indent=2)``."""
    import json

    from medfm.results import Completeness, load_results, record_digest
    from medfm._config import to_dict

    recs = [Record("breastmnist", "test", "m", "knn", {"auroc": MetricValue(0.9, 0.8, float("nan"), n=3)}, shots=s,
                   seed=0, n=156, provenance={"config": {"a": [1, {"b": "x\ny"}]}}) for s in (1, 4)]
    memo: dict = {}
    p = write_results(tmp_path / "r.json", recs[:1], _Cfg(), Completeness(2, 1), memo)
    p = write_results(p, recs, _Cfg(), Completeness(2, 2), memo)
    rows = [to_dict(r) for r in recs]
    doc = {"medfm_version": json.loads(p.read_text())["medfm_version"], "spec": to_dict(_Cfg()),
           "completeness": to_dict(Completeness(2, 2)), "record_sha256": [record_digest(r) for r in rows], "records": rows}
    assert p.read_text() == json.dumps(doc, indent=2, allow_nan=True)
    assert len(memo) == 2 and load_results(p).problems == ()
    redo = Record("breastmnist", "test", "m", "knn", {"auroc": MetricValue(0.7)}, shots=4, seed=0, n=156)
    write_results(p, [recs[0], redo], _Cfg(), Completeness(2, 2), memo)  # a cell replaced: its old text goes
    assert {id(v[0]) for v in memo.values()} == {id(recs[0]), id(redo)}
    assert [r.metrics["auroc"].value for r in load_results(p).records] == [0.9, 0.7]
    empty = write_results(tmp_path / "e.json", [], _Cfg())
    assert json.loads(empty.read_text())["records"] == []


def test_atomic_path_leaves_nothing_on_failure(tmp_path) -> None:
    target = tmp_path / "f.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_out_dir_refuses_non_empty(tmp_path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        prepare_out_dir(tmp_path)
    prepare_out_dir(tmp_path, force=True)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_one_precision_check_for_every_entry_point() -> None:
    from medfm.bench.spec import BenchSpec
    from medfm.tasks.classification.scratch import ScratchConfig

    assert [check_precision(p) for p in PRECISIONS] == list(PRECISIONS)
    with pytest.raises(ConfigError, match=r"^--precision must be auto, bf16 or fp32, got 'fp16'$"):
        check_precision("fp16", "--precision")
    with pytest.raises(ConfigError, match="bench spec: precision must be auto, bf16 or fp32, got 'half'"):
        BenchSpec(precision="half")
    with pytest.raises(ConfigError, match="scratch: precision must be"):
        ScratchConfig(precision="fp64")


def test_progress_off_a_terminal_says_when_slow_work_started_but_not_before_a_fast_error(capsys) -> None:
    """A one-cell bench was silent in a log for its whole run: one line when the first item takes
    longer than ``every_s``; an input that fails at once prints nothing (its error stays one line)."""
    import time

    from medfm._progress import track

    def slow():
        time.sleep(1.0)  # 10x the notice's delay: the timer fires even on a loaded machine
        yield 1
        yield 2

    out = list(track(slow(), total=2, desc="cells", unit="cell", live=False, every_s=0.1))
    assert out == [1, 2]
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "cells: 0/2, the first cell still running after 0.1s" and err[-1].startswith("cells: done 2 in ")

    # the slow part in the loop body (an epoch loop over range(epochs)): the same one line
    for _ in track(range(2), desc="epochs", unit="epoch", live=False, every_s=0.1):
        time.sleep(1.0)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "epochs: 0/2, the first epoch still running after 0.1s" and err[-1].startswith("epochs: done 2 in ")
    from medfm._progress import _rate

    assert _rate(4, 3222.0, "epoch") == "806 s/epoch"  # a slow unit as seconds per unit, not "0.0 epoch/s"
    assert _rate(50, 4.0, "img") == "12.5 img/s"
    assert _rate(0, 4.0, "img") == "0 img"  # weight-0 items so far: no division by zero

    with pytest.raises(ValueError):  # a loop body failing at once on the first item: silent
        for _ in track(range(2), desc="epochs", live=False, every_s=0.1):
            raise ValueError("bad input")

    def failing():
        raise ValueError("bad input")
        yield  # pragma: no cover

    with pytest.raises(ValueError):
        list(track(failing(), desc="cells", live=False, every_s=0.1))
    time.sleep(0.3)
    assert capsys.readouterr().err == ""
    list(track([1, 2], desc="fast", live=False, every_s=0.1))
    time.sleep(0.3)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("fast: done 2 in ")


def test_explicit_bf16_on_a_cpu_without_bf16_units_warns_once(monkeypatch) -> None:
    import warnings

    import torch

    from medfm import _runtime

    _runtime._warn_slow_bf16.cache_clear()
    monkeypatch.setattr(_runtime, "cpu_has_fast_bf16", lambda: False)
    with pytest.warns(RuntimeWarning, match="bf16 is emulated there and can be tens of times slower than fp32"):
        assert _runtime.autocast_dtype("cpu", "bf16") is torch.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _runtime.autocast_dtype("cpu", "bf16") is torch.bfloat16  # once per process
        assert _runtime.autocast_dtype("cpu", "auto") is None  # auto keeps fp32 there, silently
        assert _runtime.autocast_dtype("cuda", "bf16") is torch.bfloat16
    _runtime._warn_slow_bf16.cache_clear()
    monkeypatch.setattr(_runtime, "cpu_has_fast_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _runtime.autocast_dtype("cpu", "bf16") is torch.bfloat16


def test_source_commit_is_read_at_import_and_marks_uncommitted_changes(tmp_path) -> None:
    """A long run's records name the commit of the code it imported, not a commit made while it
    ran (a 63-min bench once recorded a commit made during it); a folder that is not a tracked
    checkout of medfm (a wheel install inside another repo) names none."""
    import subprocess
    import sys

    from medfm._provenance import git_state

    fresh = subprocess.run([sys.executable, "-c", "import medfm._provenance as p; print(p.source_state.cache_info().currsize)"],
                           capture_output=True, text=True, check=True)
    assert fresh.stdout.strip() == "1"  # computed by `import medfm`, before any record is made

    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=tmp_path,
                              capture_output=True, text=True, check=True).stdout.strip()

    pkg = tmp_path / "src" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("x = 1\n")
    git("init", "-q")
    assert git_state(pkg) == {"commit": None, "dirty": None}  # not tracked yet
    git("add", "src")
    git("commit", "-qm", "one")
    assert git_state(pkg) == {"commit": git("rev-parse", "HEAD"), "dirty": False}
    (pkg / "__init__.py").write_text("x = 2\n")
    assert git_state(pkg)["dirty"] is True
    git("commit", "-qam", "two")
    bench, doc = tmp_path / "benchmarks" / "b.py", tmp_path / "docs" / "d.md"
    for f in (bench, doc):
        f.parent.mkdir()
        f.write_text("1\n")
    git("add", "benchmarks", "docs")
    git("commit", "-qm", "three")
    doc.write_text("2\n")
    assert git_state(pkg)["dirty"] is False  # docs do not produce results
    bench.write_text("2\n")
    assert git_state(pkg)["dirty"] is True  # a benchmark script does
    other = tmp_path / "venv" / "site" / "pkg"  # a copy inside the repo but not tracked by it
    other.mkdir(parents=True)
    (other / "__init__.py").write_text("x = 1\n")
    assert git_state(other) == {"commit": None, "dirty": None}
