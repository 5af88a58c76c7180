"""Trust commands' bad input: one line, exit 2, no output folder left behind."""

from __future__ import annotations

from pathlib import Path


def test_federated_bad_grid_is_one_line(tmp_path: Path, capsys) -> None:
    from medfm.cli.main import main

    out = tmp_path / "fed"
    assert main(["federated", "--grid", "seed=1,2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "federated grid" in err[0] and "KEY in" in err[0]
    assert not out.exists()


def test_explain_all_models_needs_a_run(tmp_path: Path, capsys) -> None:
    from medfm.cli.main import main

    out = tmp_path / "expl"
    assert main(["explain", "--model", "test/resnet-tiny-timm", "--dataset", "breastmnist", "--all-models",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--all-models needs a 'medfm bench' output folder" in err[0]
    assert not out.exists()  # output_folder removes the folder it created on bad input


def test_shared_options_in_help(capsys) -> None:
    from medfm.cli.main import main

    for cmd in ("calibrate", "monitor", "explain", "federated"):
        assert main([cmd, "--help"]) == 0
        text = capsys.readouterr().out
        assert "--data-dir" in text and "--force" in text and "--json" in text and "--out" in text


def test_calibrate_unknown_conformal_method_is_one_line(tmp_path: Path, capsys) -> None:
    from medfm.cli.main import main

    out = tmp_path / "cal"
    assert main(["calibrate", str(tmp_path), "--conformal", "aps", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "conformal must be one of lac, smoothed" in err[0]
    assert not out.exists()
