"""Hazard ratios of a Cox model on the whole table (lifelines), for the report's covariate table.

Each encoded covariate is standardised, so a hazard ratio is per one standard deviation (for a
0/1 column: per SD of the indicator). This describes associations in the full cohort; it is not
a validated performance figure (the CV metrics are).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from medfm._optional import optional_import
from medfm.data.survival import SurvivalTable, TableEncoder

MAX_COVARIATES = 40  # wider tables (omics) are summarised by the penalised models instead


def hazard_ratios(table: SurvivalTable, penalizer: float = 0.01) -> list[dict[str, Any]]:
    """Cox PH (lifelines, Breslow baseline, small ridge ``penalizer``) on standardised encoded
    covariates -> one row per covariate: ``covariate``, ``hr``, ``hr_low``, ``hr_high`` (95 %), ``p``.

    Returns [] when the table has more than ``MAX_COVARIATES`` encoded columns.
    """
    lifelines = optional_import("lifelines")
    enc = TableEncoder(table.schema).fit(table.X)
    M = enc.transform(table.X)
    keep = M.std(axis=0) > 0
    if keep.sum() == 0 or keep.sum() > MAX_COVARIATES:
        return []
    names = [n for n, k in zip(enc.feature_names, keep, strict=True) if k]
    Z = (M[:, keep] - M[:, keep].mean(0)) / M[:, keep].std(0)
    df = pd.DataFrame(Z, columns=names)
    df["__time"], df["__event"] = table.time, table.event.astype(int)
    cph = lifelines.CoxPHFitter(penalizer=penalizer).fit(df, duration_col="__time", event_col="__event")
    s = cph.summary
    return [
        {
            "covariate": str(name),
            "hr": float(s.loc[name, "exp(coef)"]),
            "hr_low": float(s.loc[name, "exp(coef) lower 95%"]),
            "hr_high": float(s.loc[name, "exp(coef) upper 95%"]),
            "p": float(s.loc[name, "p"]),
        }
        for name in names
        if np.isfinite(s.loc[name, "exp(coef)"])
    ]
