"""``medfm bench`` / ``medfm report`` end to end on BreastMNIST with a tiny test model, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medfm.cli.main import main

TINY = "test/vit-tiny-timm"


def _bench(args: list[str], data: Path) -> int:
    return main(["bench", "--data-dir", str(data), "--n-boot", "50", *args])


@pytest.mark.slow  # ~10 s: builds a timm model and embeds 780 images
def test_bench_end_to_end_then_cache_then_report(shared_data, tmp_path, capsys) -> None:
    out = tmp_path / "run1"
    args = ["--dataset", "breastmnist", "--model", TINY, "--protocol", "knn,linear_probe", "--shots", "2,all", "--seeds", "2"]
    assert _bench([*args, "--out", str(out)], shared_data) == 0
    cap = capsys.readouterr()
    assert "leaderboard" in cap.out and TINY in cap.out and "linear_probe" in cap.out
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["records"]) == 2 * 2 * 2
    rec = doc["records"][0]
    assert rec["dataset"] == "breastmnist" and rec["n"] == 156 and rec["provenance"]["weights_hash"]
    assert 0.0 <= rec["metrics"]["auroc"]["value"] <= 1.0
    html = (out / "report.html").read_text()
    assert "id='leaderboard'" in html and "data:image/png;base64," in html and "CC BY 4.0" in html

    # an identical run into a new folder: every cell from the cell cache, identical numbers
    assert _bench([*args, "--out", str(tmp_path / "run2"), "--json"], shared_data) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["cached"] == 8 and summary["computed"] == 0
    again = json.loads((tmp_path / "run2" / "results.json").read_text())
    assert [r["metrics"] for r in again["records"]] == [r["metrics"] for r in doc["records"]]

    # --resume on a finished folder: nothing recomputed, nothing lost
    assert _bench([*args, "--out", str(out), "--resume", "--json"], shared_data) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["resumed"] == 8 and summary["computed"] == summary["cached"] == 0
    assert json.loads((out / "results.json").read_text())["records"] == doc["records"]

    # medfm report re-renders; refuses to replace without --force
    assert main(["report", str(out / "results.json")]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["report", str(out / "results.json"), "--out", str(tmp_path / "r.html"), "--json"]) == 0
    board = json.loads(capsys.readouterr().out)["leaderboard"]["breastmnist"]
    assert len(board) == 4 and (tmp_path / "r.html").is_file()


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medfm: error: "), err
    return err[0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--protocol", "zero_shot"], "text_encoder"),
        (["--protocol", "knn", "--shots", "200"], "200-shot"),
        (["--protocol", "knn", "--shots", "0"], "positive integers"),
        (["--protocol", "knnn"], "Did you mean 'knn'"),
        (["--protocol", "knn", "--dataset", "breastmnst"], "breastmnist"),
        (["--protocol", "knn", "--dataset", "adrenalmnist3d"], "takes 2D images but dataset"),
        (["--protocol", "knn", "--store", "/proc/no-such-dir/r.sqlite"], "--store /proc/no-such-dir/r.sqlite: cannot open"),
        (["--protocol", "knn", "--cache-dir", "/proc/no-such-dir/cells"], "--cache-dir /proc/no-such-dir/cells: cannot create"),
    ],
)
def test_bad_input_is_one_line_exit_2(shared_data, tmp_path, capsys, extra, message) -> None:
    rc = _bench(["--model", TINY, "--shots", "all", "--seeds", "1", *extra, "--out", str(tmp_path / "o")], shared_data)
    assert rc == 2
    assert message in _one_line_error(capsys)
    assert not (tmp_path / "o").exists()  # nothing created on bad input


def test_non_empty_or_unwritable_out_keeps_earlier_results(shared_data, tmp_path, capsys) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "results.json").write_text('{"earlier": true}')
    base = ["--model", TINY, "--protocol", "knn", "--shots", "all", "--seeds", "1"]
    assert _bench([*base, "--out", str(out)], shared_data) == 2
    assert "not empty" in _one_line_error(capsys)
    assert (out / "results.json").read_text() == '{"earlier": true}'
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert _bench([*base, "--out", str(a_file)], shared_data) == 2
    assert "not a folder" in _one_line_error(capsys)
    assert _bench([*base, "--resume"], shared_data) == 2
    assert "--resume needs --out" in _one_line_error(capsys)


def test_cache_dir_and_store_take_urls(shared_data, tmp_path, monkeypatch, capsys) -> None:
    """``--cache-dir`` / ``--store`` given as fsspec URLs land there, not in a local folder named ``memory:``."""
    import uuid

    import fsspec

    monkeypatch.chdir(tmp_path)
    root = f"memory://{uuid.uuid4().hex[:8]}"
    args = ["--dataset", "breastmnist", "--model", TINY, "--protocol", "prototype", "--shots", "2", "--seeds", "1",
            "--no-report", "--cache-dir", f"{root}/cells", "--store", f"{root}/store", "--json"]
    assert _bench([*args, "--out", "o"], shared_data) == 0
    assert json.loads(capsys.readouterr().out)["computed"] == 1
    fs = fsspec.filesystem("memory")
    assert [p for p in fs.find(f"{root}/cells") if p.endswith(".json")] and fs.find(f"{root}/store")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
    assert _bench([*args, "--out", "o2"], shared_data) == 0
    assert json.loads(capsys.readouterr().out)["cached"] == 1


@pytest.mark.slow  # builds a timm model and trains a ResNet-18 for one epoch
def test_folder_dataset_with_scratch_from_config(tmp_path, capsys) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "mydata"
    (root / "img").mkdir(parents=True)
    lines = ["file,label,split"]
    for i in range(36):
        label = ["cyst", "solid"][i % 2]
        split = "train" if i < 20 else ("val" if i < 28 else "test")
        arr = (rng.random((20 + i % 3, 24)) * 80 + (120 if label == "solid" else 0)).astype(np.uint8)
        Image.fromarray(arr).save(root / "img" / f"{i}.png")
        lines.append(f"img/{i}.png,{label},{split}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"datasets: ['{root}']\nmodels: [{TINY}, scratch/resnet18]\nprotocols: [prototype, scratch, finetune]\n"
        "shots: [2, all]\nseeds: 1\nn_boot: 20\nprotocol_config:\n  scratch: {epochs: 1, batch_size: 16}\n"
        "  finetune: {method: lora, epochs: 2, batch_size: 8, precision: fp32}\n"
    )
    out = tmp_path / "out"
    assert main(["bench", "--config", str(spec), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    (ds_rows,) = summary["leaderboard"].values()
    assert {(r["model"], r["protocol"]) for r in ds_rows} == {
        (TINY, "prototype"), (TINY, "finetune"), ("scratch/resnet18", "scratch"),
    }
    recs = json.loads((out / "results.json").read_text())["records"]
    trained = [r for r in recs if r["protocol"] in ("scratch", "finetune")]
    assert len(trained) == 4 and all(r["extra"]["trained"] for r in trained)
    assert {r["extra"]["hyperparameters"]["method"] for r in recs if r["protocol"] == "finetune"} == {"lora"}
    assert all(r["n"] == 8 for r in recs)


@pytest.mark.slow
def test_default_spec_is_the_documented_grid() -> None:
    """No flags: BreastMNIST, every protocol but finetune, 1/4/16 x 3 seeds + all x 1 seed, scratch on all only."""
    from medfm.cli.bench import DEFAULT_SCRATCH_EPOCHS, build_spec

    spec = build_spec(None, [], [], [], None, None, None, None, None, None)
    assert spec.datasets == ["breastmnist"] and spec.models == [] and spec.protocols == []
    assert spec.shots == [1, 4, 16, "all"] and spec.seeds == 3 and spec.full_data_seeds == 1
    assert spec.protocol_config == {"scratch": {"epochs": DEFAULT_SCRATCH_EPOCHS}}
    assert spec.shots_for("scratch") == ["all"] and spec.shots_for("knn") == [1, 4, 16, "all"]
    flagged = build_spec(None, [], [], [], None, 1, None, None, None, None)  # any flag: the full recipe
    assert flagged.protocol_config == {} and flagged.protocol_shots == {}


@pytest.mark.slow
def test_default_run_no_arguments(shared_data, tmp_path, monkeypatch, capsys) -> None:
    """The README's main command (`medfm bench`, no arguments) end to end on BreastMNIST, kept short
    for CI: the default model set replaced by one tiny ViT (embedding BreastMNIST at 224 px with a
    default member took ~100 s of the suite) and the scratch schedule cut to 1 epoch. The default set
    and its members' embeddings are tested in tests/models/test_pretrained_models.py; the full-length
    run is benchmarks/default_bench.py."""
    import time

    import medfm.bench.runner as runner
    import medfm.cli.bench as bench_cli

    pair = ["test/vit-tiny-timm"]
    monkeypatch.setattr(runner, "default_models", lambda: list(pair))
    monkeypatch.setattr(bench_cli, "DEFAULT_SCRATCH_EPOCHS", 1)
    monkeypatch.setenv("MEDFM_DATA", str(shared_data))
    monkeypatch.chdir(tmp_path)

    t0 = time.perf_counter()
    assert main(["bench"]) == 0
    seconds = time.perf_counter() - t0
    cap = capsys.readouterr()
    (run_dir,) = (tmp_path / "runs").iterdir()
    doc = json.loads((run_dir / "results.json").read_text())
    combos = {(r["model"], r["protocol"], r["shots"]) for r in doc["records"]}
    assert {c for c in combos if c[1] == "scratch"} == {("scratch/resnet18", "scratch", None)}
    assert {(m, p, s) for m in pair for p in ("knn", "linear_probe", "prototype") for s in (1, 4, 16, None)} <= combos
    assert doc["completeness"]["written"] == doc["completeness"]["expected"] == len(doc["records"])
    assert len(doc["records"]) == len(pair) * 3 * (3 * 3 + 1) + 1  # 1/4/16 x 3 seeds + all x 1 seed; scratch once
    assert (run_dir / "report.html").is_file() and "leaderboard" in cap.out
    assert all(r["extra"]["trained"] == (r["protocol"] == "scratch") for r in doc["records"])
    scratch = next(r for r in doc["records"] if r["protocol"] == "scratch")
    assert scratch["extra"]["hyperparameters"]["epochs"] == 1
    print(f"default run (one model, 1-epoch scratch): {seconds:.0f} s")


def test_report_command_bad_input(tmp_path, capsys) -> None:
    assert main(["report", str(tmp_path / "missing.json")]) == 2
    assert "not found" in _one_line_error(capsys)
    bad = tmp_path / "results.json"
    bad.write_text("{\"records\": [{\"x\": 1}]}")
    assert main(["report", str(bad)]) == 2
    assert "results.json" in _one_line_error(capsys)


def _results_file(tmp_path: Path, n: int, completeness=None, drop_completeness: bool = False) -> Path:
    from medfm.results import MetricValue, Record, write_results

    recs = [Record(dataset="breastmnist", split="test", model=f"m{i}", protocol="knn",
                   metrics={"auroc": MetricValue(0.6 + 0.01 * i, 0.5, 0.7)}, n=156) for i in range(n)]
    path = write_results(tmp_path / "results.json", recs, {}, completeness)
    if drop_completeness:  # a results.json from before completeness was recorded
        doc = json.loads(path.read_text())
        del doc["completeness"]
        path.write_text(json.dumps(doc))
    return path


def test_report_on_a_killed_run_warns_that_it_is_incomplete(tmp_path, capsys) -> None:
    from medfm.results import Completeness

    path = _results_file(tmp_path, 3, Completeness(8, 3, tuple(f"breastmnist m{i} knn all seed 0" for i in range(3, 8))))
    assert main(["report", str(path)]) == 0
    cap = capsys.readouterr()
    assert "m2" in cap.out  # the leaderboard is still shown ...
    assert "warning:" in cap.err and "INCOMPLETE: 3 of 8 results written" in cap.err and "m3 knn" in cap.err
    assert "INCOMPLETE: 3 of 8" in (tmp_path / "report.html").read_text()
    assert main(["report", str(path), "--json", "--out", str(tmp_path / "r2.html")]) == 0
    cap = capsys.readouterr()
    doc = json.loads(cap.out)
    assert doc["complete"] is False and "3 of 8" in doc["completeness"] and "INCOMPLETE" in cap.err


def test_report_on_complete_and_old_results(tmp_path, capsys) -> None:
    path = _results_file(tmp_path, 2)
    assert main(["report", str(path)]) == 0
    cap = capsys.readouterr()
    assert "warning" not in cap.err and "complete: 2 of 2 results" in cap.err
    (tmp_path / "old").mkdir()
    old = _results_file(tmp_path / "old", 2, drop_completeness=True)
    assert main(["report", str(old)]) == 0
    assert "completeness unknown" in capsys.readouterr().err
