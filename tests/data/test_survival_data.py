"""Survival tables: built-in datasets, schema files, validation errors, per-fold encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medfm.data import get_card
from medfm.data.survival import (
    Covariate,
    SurvivalSchema,
    TableEncoder,
    infer_schema,
    load_schema,
    load_survival_dataset,
    read_table,
)
from medfm.errors import ConfigError, InputError

EXPECTED = {  # name -> (rows, covariates, events) as bundled in scikit-survival / lifelines
    "gbsg2": (686, 8, 299),
    "whas500": (500, 14, 215),
    "veterans": (137, 6, 128),
    "aids": (1151, 11, 96),
    "breast_cancer": (198, 80, 51),
    "rossi": (432, 7, 114),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_datasets_load_with_their_schema(name: str) -> None:
    table = load_survival_dataset(name)
    rows, ncov, events = EXPECTED[name]
    assert table.X.shape == (rows, ncov)
    assert int(table.event.sum()) == events
    assert table.y.dtype.names == ("event", "time")
    assert (table.time >= 0).all()
    card = get_card(name)
    assert card.task == "survival" and card.license != "unknown" and card.citation


def test_flchain_keeps_missing_values_for_the_encoder() -> None:
    table = load_survival_dataset("flchain")
    assert table.X["creatinine"].isna().sum() == 1350
    enc = TableEncoder(table.schema).fit(table.X)
    assert "creatinine__missing" in enc.feature_names and "chapter__missing" in enc.feature_names
    M = enc.transform(table.X)
    assert np.isfinite(M).all()


def test_breast_cancer_has_omics_and_ehr_blocks() -> None:
    blocks = load_survival_dataset("breast_cancer").schema.blocks()
    assert len(blocks["omics"]) == 76 and sorted(blocks["ehr"]) == ["age", "er", "grade", "size"]


def test_gbsg2_encoding_matches_sksurv_encode_categorical() -> None:
    from sksurv.datasets import load_gbsg2
    from sksurv.preprocessing import encode_categorical

    X, _ = load_gbsg2()
    ref = encode_categorical(X)
    table = load_survival_dataset("gbsg2")
    enc = TableEncoder(table.schema).fit(table.X)
    assert enc.feature_names == list(ref.columns)
    np.testing.assert_array_equal(enc.transform(table.X), ref.to_numpy(dtype=float))


def test_global_dataset_registry_lists_the_cards() -> None:
    from medfm.data import DATASETS

    assert "gbsg2" in DATASETS and DATASETS.get("whas500").task == "survival"


def _frame(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "t": rng.exponential(10, n).round(2) + 0.1,
            "e": rng.integers(0, 2, n),
            "age": rng.normal(60, 10, n).round(1),
            "sex": rng.choice(["F", "M"], n),
            "stage": rng.choice(["I", "II", "III"], n),
        }
    )


SCHEMA = SurvivalSchema(
    time="t",
    event="e",
    covariates=(Covariate("age"), Covariate("sex", "binary"), Covariate("stage", "categorical")),
)


def test_csv_and_parquet_with_schema_yaml(tmp_path: Path) -> None:
    df = _frame()
    df.to_csv(tmp_path / "a.csv", index=False)
    df.to_parquet(tmp_path / "a.parquet")
    (tmp_path / "s.yaml").write_text(
        "time: t\nevent: e\ncovariates:\n  - {name: age, type: numeric}\n  - {name: sex, type: binary}\n"
        "  - {name: stage, type: ordinal, categories: [I, II, III]}\n"
    )
    a = read_table(tmp_path / "a.csv", tmp_path / "s.yaml")
    b = read_table(tmp_path / "a.parquet", tmp_path / "s.yaml")
    assert a.checksum() == b.checksum()
    enc = TableEncoder(a.schema).fit(a.X)
    assert enc.feature_names == ["age", "sex=M", "stage"]
    assert set(np.unique(enc.transform(a.X)[:, 2])) <= {0.0, 1.0, 2.0}


def test_schema_unknown_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("time: t\nevent: e\nevnt: x\ncovariates: []\n")
    with pytest.raises(ConfigError, match="evnt"):
        load_schema(tmp_path / "s.yaml")


def test_time_event_columns_infer_the_schema(tmp_path: Path) -> None:
    _frame().to_csv(tmp_path / "a.csv", index=False)
    table = read_table(tmp_path / "a.csv", time_col="t", event_col="e")
    types = {c.name: c.type for c in table.schema.covariates}
    assert types == {"age": "numeric", "sex": "binary", "stage": "categorical"}
    assert infer_schema(_frame(), "t", "e").time == "t"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.assign(t=d["t"].where(d.index != 3, -1.0)), r"a\.csv: time column 't' has negative times"),
        (lambda d: d.assign(t=d["t"].where(d.index != 5, np.nan)), r"a\.csv: time column 't' has missing times"),
        (lambda d: d.assign(e=d["e"].where(d.index != 2, 2)), r"a\.csv: event column 'e' must be 0/1"),
        (lambda d: d.assign(e=d["e"].astype(str).where(d.index != 2, "yes")), r"a\.csv: event column 'e' must be 0/1"),
        (lambda d: d.assign(e=0), r"a\.csv: no events observed"),
        (lambda d: d.assign(age=50.0), r"a\.csv: covariate 'age' is constant"),
        (lambda d: d.assign(sex="F"), r"a\.csv: covariate 'sex' is constant"),
        (lambda d: d.drop(columns="stage"), r"a\.csv: column 'stage' declared in the schema is missing"),
        (
            lambda d: d.assign(age=d["age"].astype(object).where(d.index != 7, "sixty")),
            r"a\.csv: numeric covariate 'age' has non-numeric values: row 8: 'sixty'",
        ),
    ],
    ids=[
        "negative-time",
        "missing-time",
        "event-2",
        "event-text",
        "no-events",
        "constant-numeric",
        "constant-binary",
        "missing-column",
        "text-in-numeric",
    ],
)
def test_bad_tables_raise_one_clear_input_error(tmp_path: Path, mutate, message: str) -> None:
    mutate(_frame()).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(InputError, match=message):
        read_table(tmp_path / "a.csv", SCHEMA)


def test_missing_file_and_bad_format(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_table(tmp_path / "nope.csv", SCHEMA)
    (tmp_path / "a.xlsx").write_text("x")
    with pytest.raises(InputError, match="unsupported table format"):
        read_table(tmp_path / "a.xlsx", SCHEMA)


def test_encoder_fits_imputation_on_training_rows_only() -> None:
    schema = SurvivalSchema("t", "e", (Covariate("x"), Covariate("c", "categorical", ("a", "b", "z"))))
    train = pd.DataFrame({"x": [1.0, 2.0, np.nan, 4.0], "c": ["a", "b", "b", None]})
    test = pd.DataFrame({"x": [np.nan, 100.0], "c": [None, "z"]})
    enc = TableEncoder(schema).fit(train)
    assert enc.feature_names == ["x", "x__missing", "c=b", "c=z", "c__missing"]
    M = enc.transform(test)
    # median of the training values (1, 2, 4) = 2, not influenced by the test row's 100
    np.testing.assert_array_equal(M, [[2.0, 1.0, 1.0, 0.0, 1.0], [100.0, 0.0, 0.0, 1.0, 0.0]])


def test_encoder_without_missing_training_values_adds_no_indicator() -> None:
    schema = SurvivalSchema("t", "e", (Covariate("x"),))
    enc = TableEncoder(schema).fit(pd.DataFrame({"x": [1.0, 3.0]}))
    assert enc.feature_names == ["x"]
    np.testing.assert_array_equal(enc.transform(pd.DataFrame({"x": [np.nan]})), [[2.0]])


def test_with_block_appends_embeddings() -> None:
    table = load_survival_dataset("veterans")
    t2 = table.with_block("image", np.zeros((len(table), 3)) + np.arange(len(table))[:, None], prefix="img")
    assert t2.schema.blocks()["image"] == ["img_0", "img_1", "img_2"]
    with pytest.raises(InputError, match="expected"):
        table.with_block("image", np.zeros((3, 2)))


def test_numeric_levels_match_declared_categories_despite_csv_floats(tmp_path: Path) -> None:
    df = _frame()
    df["smoker"] = np.where(np.arange(len(df)) % 3 == 0, 1, 0).astype(float)
    df.loc[5, "smoker"] = np.nan  # pandas then reads the column as 0.0 / 1.0 / NaN
    df.to_csv(tmp_path / "a.csv", index=False)
    schema = SurvivalSchema("t", "e", (Covariate("age"), Covariate("smoker", "binary", (0, 1))))
    table = read_table(tmp_path / "a.csv", schema)
    enc = TableEncoder(table.schema).fit(table.X)
    assert enc.feature_names == ["age", "smoker", "smoker__missing"]
    assert enc.transform(table.X)[:4, 1].tolist() == [1.0, 0.0, 0.0, 1.0]


def test_survival_cards_register_through_the_dataset_registry() -> None:
    from medfm.data import load_dataset, registry, survival

    # one registry: the survival module hands its cards and loader to data/registry.py
    assert {c.name for c, _ in survival.CARDS_AND_LOADERS} == set(survival.survival_dataset_names())
    loaders = {c.name: loader for c, loader in survival.CARDS_AND_LOADERS}
    assert registry.get_loader(get_card("gbsg2")) is loaders["gbsg2"]
    split = load_dataset("veterans").split("all")
    assert len(split) == 137 and split[0].time is not None
    with pytest.raises(ConfigError, match="breastmnist is a classification dataset, not a survival table"):
        survival.load_survival_dataset("breastmnist")
    with pytest.raises(ConfigError, match="Did you mean 'gbsg2'"):
        survival.load_survival_dataset("gbsg")
