"""The cell cache checks every entry (own key, checksum) and a run never ends short of cells silently."""

from __future__ import annotations

import json
import shutil

import pytest
from bench_fakes import CountingProtocol

from medfm.bench import BenchSpec, CellCache, run_bench
from medfm.errors import IncompleteResultsError
from medfm.results import load_results

SPEC = dict(datasets=["fake"], models=["fake/vision"], protocols=["count"], shots=[1, 4, "all"], seeds=2, n_boot=50)
N_CELLS = 6


def _run(ctx, out, cache_dir, **kw):
    return run_bench(BenchSpec(**SPEC), out, context=ctx, cache=CellCache(cache_dir), store=None, report=False, **kw)


def _entries(cache_dir) -> list:
    return sorted(p for p in cache_dir.rglob("*.json") if p.name != "weights-hashes.json")


def _full_data_entry(cache_dir, run) -> tuple:
    rec = next(r for r in run.records if r.shots is None and r.seed == 0)
    key = rec.provenance["cell_key"]
    return next(p for p in _entries(cache_dir) if p.stem == key), rec


def test_entry_carries_its_key_and_checksum(fake_ctx, tmp_path) -> None:
    run = _run(fake_ctx(), tmp_path / "a", tmp_path / "cells")
    path, rec = _full_data_entry(tmp_path / "cells", run)
    doc = json.loads(path.read_text())
    assert doc["key"] == path.stem and len(doc["sha256"]) == 64 and doc["record"]["metrics"]["auroc"]["value"] == rec.metrics["auroc"].value


def test_edited_number_in_a_cache_entry_is_caught_and_recomputed(fake_ctx, tmp_path, capsys) -> None:
    first = _run(fake_ctx(), tmp_path / "a", tmp_path / "cells")
    path, rec = _full_data_entry(tmp_path / "cells", first)
    true_auroc = rec.metrics["auroc"].value
    path.write_text(path.read_text().replace(json.dumps(true_auroc), "0.9999", 1))
    assert "0.9999" in path.read_text()

    proto = CountingProtocol()
    second = _run(fake_ctx({"count": proto}), tmp_path / "b", tmp_path / "cells")
    assert proto.calls == 1 and second.cached == N_CELLS - 1 and second.computed == 1
    again = next(r for r in second.records if r.key() == rec.key())
    assert again.metrics["auroc"].value == true_auroc  # the edited 0.9999 is never reported
    assert any("does not match its checksum" in w for w in second.warnings)
    assert "does not match its checksum" in capsys.readouterr().err
    assert "0.9999" not in path.read_text()  # the entry was rewritten


def test_another_cells_entry_copied_under_a_key_is_caught(fake_ctx, tmp_path) -> None:
    first = _run(fake_ctx(), tmp_path / "a", tmp_path / "cells")
    path, _ = _full_data_entry(tmp_path / "cells", first)
    other = next(p for p in _entries(tmp_path / "cells") if p != path)
    shutil.copy(other, path)

    proto = CountingProtocol()
    second = _run(fake_ctx({"count": proto}), tmp_path / "b", tmp_path / "cells")
    assert proto.calls == 1 and len(second.records) == N_CELLS
    assert any("another cell" in w for w in second.warnings)
    res = load_results(tmp_path / "b" / "results.json")
    assert len(res.records) == N_CELLS and res.completeness.complete


def test_a_record_of_another_cell_with_a_valid_checksum_is_caught(fake_ctx, tmp_path) -> None:
    """Key and checksum rewritten to match: the record's own cell identity still gives it away."""
    from medfm.results import record_digest

    first = _run(fake_ctx(), tmp_path / "a", tmp_path / "cells")
    path, _ = _full_data_entry(tmp_path / "cells", first)
    other = json.loads(next(p for p in _entries(tmp_path / "cells") if p != path).read_text())
    other["record"]["provenance"].pop("cell_key")
    path.write_text(json.dumps({**other, "key": path.stem, "sha256": record_digest(other["record"])}))
    second = _run(fake_ctx(), tmp_path / "b", tmp_path / "cells")
    assert second.computed == 1 and len(second.records) == N_CELLS
    assert any("holds the record of" in w for w in second.warnings)


def test_unchecked_or_unreadable_entries_are_recomputed(fake_ctx, tmp_path) -> None:
    first = _run(fake_ctx(), tmp_path / "a", tmp_path / "cells")
    paths = _entries(tmp_path / "cells")
    bare = json.loads(paths[0].read_text())["record"]  # the layout of older medfm: a bare record
    paths[0].write_text(json.dumps(bare))
    paths[1].write_text("{not json")
    second = _run(fake_ctx(), tmp_path / "b", tmp_path / "cells")
    assert second.computed == 2 and second.cached == N_CELLS - 2
    assert [r.metrics for r in second.records] == [r.metrics for r in first.records]


def test_a_run_short_of_cells_fails_and_names_them(fake_ctx, tmp_path) -> None:
    class LosesOne:
        """An executor that drops a cell (a lost worker)."""

        def map(self, fn, cells):
            for c in list(cells)[1:]:
                yield c, fn(c)

    with pytest.raises(IncompleteResultsError, match=r"5 of 6 results written; missing: fake fake/vision count 1-shot seed 0"):
        _run(fake_ctx(), tmp_path / "out", tmp_path / "cells", executor=LosesOne())
    res = load_results(tmp_path / "out" / "results.json")
    assert len(res.records) == 5 and res.completeness.missing == ("fake fake/vision count 1-shot seed 0",)


def test_executor_returning_another_cells_record_leaves_the_cell_missing(fake_ctx, tmp_path) -> None:
    class Swaps:
        def map(self, fn, cells):
            cells = list(cells)
            for i, c in enumerate(cells):
                yield c, fn(cells[0] if i == 1 else c)

    with pytest.raises(IncompleteResultsError, match="5 of 6"):
        _run(fake_ctx(), tmp_path / "out", tmp_path / "cells", executor=Swaps())


def test_resume_recomputes_a_record_edited_in_results_json(fake_ctx, tmp_path) -> None:
    first = _run(fake_ctx(), tmp_path / "out", tmp_path / "cells")
    path = tmp_path / "out" / "results.json"
    doc = json.loads(path.read_text())
    true_value = doc["records"][0]["metrics"]["auroc"]["value"]
    doc["records"][0]["metrics"]["auroc"]["value"] = 0.9999
    path.write_text(json.dumps(doc))
    proto = CountingProtocol()
    again = _run(fake_ctx({"count": proto}), tmp_path / "out", tmp_path / "fresh-cells", resume=True)
    assert proto.calls == 1 and again.resumed == N_CELLS - 1
    assert again.records[0].metrics["auroc"].value == true_value == first.records[0].metrics["auroc"].value
    assert any("was changed after medfm wrote it" in w for w in again.warnings)
    assert load_results(path).problems == ()
