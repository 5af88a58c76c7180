"""Shared command conventions: --out is never left behind empty by a failed input, and the
common options (--json, --out, --force, --device, --data-dir) are declared once."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from medfm.cli import _common
from medfm.cli.main import main
from medfm.errors import InputError


def test_output_folder_removes_only_a_folder_it_created_and_left_empty(tmp_path: Path) -> None:
    new = tmp_path / "a" / "new"
    with pytest.raises(InputError):
        with _common.output_folder(new) as folder:
            assert folder is not None and folder.is_dir()
            raise InputError("bad input")
    assert not new.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(InputError):
        with _common.output_folder(kept):
            raise InputError("bad input")
    assert kept.is_dir()  # the user's own (empty) folder stays
    partial = tmp_path / "partial"
    with pytest.raises(InputError):
        with _common.output_folder(partial) as folder:
            (folder / "results.json").write_text("{}")
            raise InputError("failed late")
    assert (partial / "results.json").is_file()  # what a run wrote is kept
    with _common.output_folder(None) as folder:
        assert folder is None


@pytest.mark.parametrize(
    "args",
    [
        ["vqa", "--train", "no_such_vqa_folder"],
        ["report-eval", "--pred", "PRED", "--ref", "REF"],
        ["prognosis", "--dataset", "no_such_table.csv", "--time-col", "t", "--event-col", "e"],
    ],
    ids=["vqa", "report-eval", "prognosis"],
)
def test_failed_input_leaves_no_empty_out(args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pred = tmp_path / "pred.csv"
    ref = tmp_path / "ref.csv"
    pred.write_text("id,report\na,no acute findings\n")
    ref.write_text("id,report\nb,no acute findings\n")  # no prediction for b
    args = [str(pred) if a == "PRED" else str(ref) if a == "REF" else a for a in args]
    out = tmp_path / "out"
    assert main([*args, "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("medfm: error:")
    assert not out.exists()


def test_commands_share_the_common_option_declarations() -> None:
    from medfm.cli import datasets, generate, prognosis

    commands = [prognosis.prognosis_command, generate.vqa, generate.report_eval, generate.synth,
                datasets.list_command, datasets.show_command, datasets.verify_command]
    shared = {"json_out": _common.Json, "force": _common.Force, "device": _common.Device, "data_dir": _common.DataDir}
    for cmd in commands:
        hints = inspect.get_annotations(cmd, eval_str=True)
        for name, alias in shared.items():
            if name in hints:
                assert hints[name] == alias, (cmd.__name__, name)
        if "out" in hints:
            assert hints["out"] in (_common.OutDir, _common.OptionalOutDir), cmd.__name__


def test_missing_required_option_is_a_usage_error_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prognosis"]) == 2
    assert "Missing option '--dataset'" in capsys.readouterr().err


def test_json_flag_from_the_shared_alias(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets", "list", "--json"]) == 0
    assert any(r["name"] == "gbsg2" for r in json.loads(capsys.readouterr().out))


def _command_paths() -> list[list[str]]:
    """Every command and sub-command of the ``medfm`` app, as argv prefixes."""
    import typer

    from medfm.cli.main import app

    paths: list[list[str]] = []

    def walk(cmd, prefix: list[str]) -> None:  # noqa: ANN001 (typer vendors its own click classes)
        paths.append(prefix)
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, [*prefix, name])

    walk(typer.main.get_command(app), [])
    return paths


def test_every_command_help_renders(capsys) -> None:
    """`--help` of every command prints (a help text with Rich markup such as '[/x]' once crashed)."""
    from medfm.cli.main import main

    paths = _command_paths()
    assert len(paths) > 20 and ["pacs", "store"] in paths
    for argv in paths:
        assert main([*argv, "--help"]) == 0, argv
        assert "Usage" in capsys.readouterr().out


@pytest.mark.parametrize("tty,threads_arg", [(True, None), (False, None), (True, "2")])
def test_fewer_threads_than_cores_is_said_on_a_terminal(monkeypatch, capsys, tty: bool, threads_arg: str | None) -> None:
    """On a busy machine medfm takes fewer threads than cores; an interactive user is told so
    (once, with the override), a log or a test capturing stderr is not, nor is an explicit choice."""
    import os
    import sys

    import torch

    for var in ("MEDFM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.setenv(var, "0")  # recorded, so what main() sets is undone after the test
        monkeypatch.delenv(var)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 1.0, 1.0))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    before = torch.get_num_threads()
    try:
        assert main([*(["--threads", threads_arg] if threads_arg else []), "info", "--help"]) == 0
    finally:
        torch.set_num_threads(before)
    err = capsys.readouterr().err
    if tty and threads_arg is None:
        assert os.environ["MEDFM_THREADS"] == "1"
        assert "using 1 of 2 CPU threads" in err and "load average 1.2" in err and "--threads 2" in err
    else:
        assert "CPU threads" not in err
