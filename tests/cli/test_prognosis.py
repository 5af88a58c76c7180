"""``medfm prognosis`` in-process: built-in dataset, user tables, embeddings, bad input -> exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medfm.cli.main import main
from medfm.results import read_results


def test_builtin_dataset_writes_results_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    rc = main(
        [
            "prognosis",
            "--dataset",
            "veterans",
            "--model",
            "coxph,coxnet",
            "--cv",
            "3",
            "--n-boot",
            "10",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in doc["records"]] == ["coxph", "coxnet"]
    spec, records = read_results(out / "results.json")
    assert spec["dataset"] == "veterans" and spec["config"]["cv"] == 3
    r = records[0]
    assert (r.split, r.protocol, r.n) == ("cv3", "survival", 137)
    assert r.metrics["c_harrell"].ci_low is not None and 0.6 < r.metrics["c_harrell"].value < 0.8
    assert r.provenance["data_checksum"] and r.provenance["versions"]
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "Harrell C" in page and "risk group" in page
    assert "HR per SD" in page  # full-cohort hazard ratios (lifelines)
    # a second run into the same folder is refused without --force, nothing is overwritten
    before = (out / "results.json").read_bytes()
    assert main(["prognosis", "--dataset", "veterans", "--model", "coxph", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "results.json").read_bytes() == before


def _table(tmp_path: Path, n: int = 120) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=n)
    t_ev = rng.exponential(np.exp(-x))
    t_c = rng.exponential(2.0, n)
    df = pd.DataFrame(
        {
            "pid": [f"p{i}" for i in range(n)],
            "years": np.minimum(t_ev, t_c).round(4) + 1e-3,
            "died": (t_ev <= t_c).astype(int),
            "marker": x + rng.normal(scale=0.5, size=n),
            "sex": rng.choice(["F", "M"], n),
        }
    )
    path = tmp_path / "cohort.csv"
    df.to_csv(path, index=False)
    return path, x


def test_user_table_with_schema_test_split_and_embeddings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, x = _table(tmp_path)
    (tmp_path / "schema.yaml").write_text(
        "time: years\nevent: died\nid: pid\ncovariates:\n  - {name: marker, type: numeric}\n  - {name: sex, type: binary}\n"
    )
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(120, 4))
    emb[:, 0] = x + 0.2 * rng.normal(size=120)  # the image block carries the signal
    order = np.arange(120)[::-1]  # stored in another order: aligned through the ids
    np.savez(tmp_path / "emb.npz", embeddings=emb[order], ids=np.array([f"p{i}" for i in order]))
    rc = main(
        [
            "prognosis",
            "--dataset",
            str(path),
            "--schema",
            str(tmp_path / "schema.yaml"),
            "--model",
            "coxph",
            "--cv",
            "0",
            "--n-boot",
            "0",
            "--embeddings",
            str(tmp_path / "emb.npz"),
            "--fusion",
            "late-stack",
            "--json",
        ]
    )
    assert rc == 0
    rec = json.loads(capsys.readouterr().out)["records"][0]
    assert (rec["split"], rec["model"], rec["n"]) == ("test", "coxph/late-stack", 30)
    assert rec["metrics"]["c_harrell"]["value"] > 0.6
    # the same embeddings stored row-aligned (.npy) give the same result: ids aligned them
    np.save(tmp_path / "emb.npy", emb)
    assert (
        main(
            [
                "prognosis",
                "--dataset",
                str(path),
                "--schema",
                str(tmp_path / "schema.yaml"),
                "--model",
                "coxph",
                "--cv",
                "0",
                "--n-boot",
                "0",
                "--embeddings",
                str(tmp_path / "emb.npy"),
                "--fusion",
                "late-stack",
                "--json",
            ]
        )
        == 0
    )
    again = json.loads(capsys.readouterr().out)["records"][0]
    assert again["metrics"]["c_harrell"] == rec["metrics"]["c_harrell"]


def test_user_table_with_time_and_event_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = _table(tmp_path)
    rc = main(
        [
            "prognosis",
            "--dataset",
            str(path),
            "--time-col",
            "years",
            "--event-col",
            "died",
            "--id-col",
            "pid",
            "--model",
            "coxnet",
            "--cv",
            "2",
            "--n-boot",
            "0",
        ]
    )
    assert rc == 0
    assert "coxnet" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d.assign(years=d["years"].where(d.index != 4, -2.0)),
            "cohort.csv: time column 'years' has negative times",
        ),
        (
            lambda d: d.assign(years=d["years"].where(d.index != 4, np.nan)),
            "cohort.csv: time column 'years' has missing times",
        ),
        (lambda d: d.assign(died=d["died"].where(d.index != 4, 3)), "cohort.csv: event column 'died' must be 0/1"),
        (lambda d: d.assign(died=0), "cohort.csv: no events observed"),
        (lambda d: d.assign(marker=1.0), "cohort.csv: covariate 'marker' is constant"),
    ],
    ids=["negative-time", "missing-time", "event-not-01", "no-events", "constant-covariate"],
)
def test_bad_tables_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], edit, message: str
) -> None:
    path, _ = _table(tmp_path)
    edit(pd.read_csv(path)).to_csv(path, index=False)
    rc = main(
        [
            "prognosis",
            "--dataset",
            str(path),
            "--time-col",
            "years",
            "--event-col",
            "died",
            "--id-col",
            "pid",
            "--model",
            "coxph",
            "--n-boot",
            "0",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and message in err[0], err


def test_unknown_dataset_and_model_names_suggest(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prognosis", "--dataset", "gbsg", "--model", "coxph"]) == 2
    assert "Did you mean 'gbsg2'" in capsys.readouterr().err
    assert main(["prognosis", "--dataset", "gbsg2", "--model", "coxhp"]) == 2
    assert "Did you mean 'coxph'" in capsys.readouterr().err


def test_splines_option_reaches_the_pipeline_and_is_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "spl"
    args = ["prognosis", "--dataset", "veterans", "--model", "coxnet", "--cv", "3", "--n-boot", "0"]
    assert main([*args, "--splines", "4", "--out", str(out)]) == 0
    spec, (r,) = read_results(out / "results.json")
    assert spec["config"]["fusion"]["splines"] == 4 and 0.6 < r.metrics["c_harrell"].value < 0.8
    capsys.readouterr()
    assert main([*args, "--splines", "2"]) == 2
    assert "splines must be 0 (off) or 3..10 knots" in capsys.readouterr().err


def test_interactions_flag_reaches_the_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ia"
    args = ["prognosis", "--dataset", "veterans", "--model", "coxnet", "--cv", "3", "--n-boot", "0", "--out", str(out)]
    assert main([*args, "--interactions"]) == 0
    spec, (r,) = read_results(out / "results.json")
    assert spec["config"]["fusion"]["interactions"] is True
    assert 0.6 < r.metrics["c_harrell"].value < 0.85


def test_repeats_option_reaches_the_protocol(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    args = ["prognosis", "--dataset", "veterans", "--model", "coxph", "--cv", "3", "--n-boot", "0"]
    assert main([*args, "--repeats", "2", "--out", str(out)]) == 0
    spec, (r,) = read_results(out / "results.json")
    assert spec["config"]["repeats"] == 2 and r.split == "cv3x2" and len(r.extra["fold_metrics"]) == 6
    capsys.readouterr()
    assert main([*args, "--repeats", "0"]) == 2
    assert "--repeats must be >= 1" in capsys.readouterr().err


def _cols_args(path: Path, *extra: str) -> list[str]:
    return ["prognosis", "--dataset", str(path), "--time-col", "years", "--event-col", "died", "--id-col", "pid",
            "--model", "coxph", "--cv", "2", "--n-boot", "0", *extra]


def test_one_text_value_in_a_numeric_column_is_refused_naming_row_and_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: the column became categorical, a one-hot of every distinct number, without a word.
    path, _ = _table(tmp_path)
    df = pd.read_csv(path)
    df["marker"] = df["marker"].astype(object)
    df.loc[41, "marker"] = "unknown"
    df.to_csv(path, index=False)
    out = tmp_path / "never"
    assert main(_cols_args(path, "--out", str(out))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "column 'marker' holds numbers except row 42: 'unknown'" in err[0], err
    assert not out.exists()  # a bad input leaves no empty --out behind


def test_missing_values_are_imputed_and_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = _table(tmp_path)
    df = pd.read_csv(path)
    df.loc[[3, 10, 17], "marker"] = np.nan
    df.to_csv(path, index=False)
    out = tmp_path / "imp"
    assert main(_cols_args(path, "--out", str(out))) == 0
    assert "marker 3 rows" in capsys.readouterr().err
    _, (r,) = read_results(out / "results.json")
    assert r.extra["imputed"] == {"marker": 3}


def test_imputation_message_names_the_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = _table(tmp_path)
    df = pd.read_csv(path)
    df.loc[[3, 10], "sex"] = np.nan
    df.to_csv(path, index=False)
    assert main(_cols_args(path)) == 0
    err = capsys.readouterr().err
    assert "missing covariate values imputed per fold from training rows" in err and "sex 2 rows" in err


def test_exit_2_when_no_model_could_be_fitted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = _table(tmp_path, n=12)
    df = pd.read_csv(path)
    df["died"] = [1, 1] + [0] * 10  # 2 events cannot fill 5 event-stratified folds
    df.to_csv(path, index=False)
    out = tmp_path / "fail"
    args = ["prognosis", "--dataset", str(path), "--time-col", "years", "--event-col", "died",
            "--model", "coxph,rsf", "--cv", "5", "--n-boot", "0", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("medfm: error:") and "no model could be fitted" in err[-1]
    assert "coxph: cannot stratify 5 folds" in err[-1] and "rsf:" in err[-1]
    _, records = read_results(out / "results.json")  # the failures are kept on disk
    assert [r.extra["error"][:15] for r in records] == ["cannot stratify"] * 2
