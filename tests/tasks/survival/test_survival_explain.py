"""Full-cohort hazard ratios come from lifelines' Cox model on standardised covariates."""

from __future__ import annotations

import pytest
from lifelines import CoxPHFitter

from medfm.data.survival import load_survival_dataset
from medfm.tasks.survival.explain import hazard_ratios


def test_rossi_hazard_ratios_equal_lifelines_on_standardised_columns() -> None:
    table = load_survival_dataset("rossi")
    rows = {r["covariate"]: r for r in hazard_ratios(table, penalizer=0.01)}
    assert list(rows) == ["fin", "age", "race", "wexp", "mar", "paro", "prio"]
    X = table.X.astype(float)
    df = (X - X.mean()) / X.std(ddof=0)
    df["week"], df["arrest"] = table.time, table.event.astype(int)
    ref = CoxPHFitter(penalizer=0.01).fit(df, "week", "arrest").summary
    for name, r in rows.items():
        assert r["hr"] == pytest.approx(ref.loc[name, "exp(coef)"], rel=1e-6)
        assert r["hr_low"] < r["hr"] < r["hr_high"]
    # the published direction: financial aid lowers, prior convictions raise the re-arrest hazard
    assert rows["fin"]["hr"] < 1 < rows["prio"]["hr"]


def test_wide_tables_are_skipped() -> None:
    assert hazard_ratios(load_survival_dataset("breast_cancer")) == []
