"""Survival tables: a declared schema, CSV/Parquet ingestion with validation, built-in datasets,
and the per-fold covariate encoder (imputation and one-hot fitted on training rows only).

A table is ``(X, time, event)``: ``X`` a DataFrame of raw covariates (one column per declared
covariate), ``time`` (N,) float64 follow-up time in the table's unit (>= 0), ``event`` (N,) bool
(True = the event was observed, False = censored). Built-in datasets come from the ARFF/CSV files
bundled with scikit-survival and lifelines (no download).

>>> table = load_survival_dataset("gbsg2")
>>> table.X.shape, table.event.mean().round(2)
((686, 8), np.float64(0.44))
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medfm._config import from_dict, load_file
from medfm._optional import optional_import
from medfm._registry import suggest
from medfm.data.card import DatasetCard, Sample
from medfm.errors import ConfigError, InputError

COVARIATE_TYPES = ("numeric", "categorical", "binary", "ordinal")
Y_DTYPE = np.dtype([("event", "?"), ("time", "<f8")])  # scikit-survival's structured target


@dataclass(frozen=True)
class Covariate:
    """One input column. ``categories``: level order for ordinal (required), reference-first
    order for categorical/binary (optional; default sorted levels seen in training).
    ``block`` groups columns for fusion (``ehr``, ``omics``, ``image``, ...)."""

    name: str
    type: str = "numeric"
    categories: tuple[str, ...] = ()
    block: str = "ehr"

    def __post_init__(self) -> None:
        if self.type not in COVARIATE_TYPES:
            raise ConfigError(f"covariate '{self.name}': type must be one of {COVARIATE_TYPES}, got {self.type!r}")
        if self.type == "ordinal" and not self.categories:
            raise ConfigError(f"covariate '{self.name}': an ordinal covariate needs its ordered categories")
        object.__setattr__(self, "categories", tuple(str(c) for c in self.categories))


@dataclass(frozen=True)
class SurvivalSchema:
    """Which columns hold follow-up time, event indicator (0/1), optional row id, and covariates."""

    time: str
    event: str
    covariates: tuple[Covariate, ...] = ()
    id: str | None = None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.covariates]

    def blocks(self) -> dict[str, list[str]]:
        """Block name -> covariate names, in schema order."""
        out: dict[str, list[str]] = {}
        for c in self.covariates:
            out.setdefault(c.block, []).append(c.name)
        return out


def load_schema(path: str | Path) -> SurvivalSchema:
    """Read a schema YAML/JSON file: ``{time, event, id?, covariates: [{name, type, ...}]}``."""
    data = load_file(path)
    return from_dict(SurvivalSchema, data, where=str(path))


@dataclass
class SurvivalTable:
    """A validated survival table. ``X`` columns are the schema's covariates, in schema order."""

    X: pd.DataFrame
    time: np.ndarray
    event: np.ndarray
    schema: SurvivalSchema
    name: str
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.time):
            self.ids = np.asarray([str(i) for i in range(len(self.time))], dtype=object)

    def __len__(self) -> int:
        return len(self.time)

    @property
    def y(self) -> np.ndarray:
        """(N,) structured array ``(event: bool, time: float)`` as scikit-survival expects."""
        return make_y(self.event, self.time)

    def subset(self, idx: np.ndarray) -> SurvivalTable:
        return SurvivalTable(
            self.X.iloc[idx].reset_index(drop=True),
            self.time[idx],
            self.event[idx],
            self.schema,
            self.name,
            self.ids[idx],
        )

    def missing(self) -> dict[str, int]:
        """Covariate -> number of rows with a missing value (the encoder imputes them per fold)."""
        counts = self.X.isna().sum()
        return {str(c): int(n) for c, n in counts.items() if n > 0}

    def checksum(self) -> str:
        """sha256 of the covariates, times and events (order-sensitive)."""
        h = hashlib.sha256()
        for col in self.X.columns:  # canonical: float64 bytes or text, whatever the file format
            s = self.X[col]
            h.update(str(col).encode())
            if pd.api.types.is_numeric_dtype(s):
                h.update(np.ascontiguousarray(s.to_numpy(dtype=np.float64)).tobytes())
            else:
                h.update("\x1f".join("\x00" if pd.isna(v) else str(v) for v in s).encode())
        h.update(np.ascontiguousarray(self.time, dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(self.event, dtype=bool).tobytes())
        return h.hexdigest()

    def with_block(self, block: str, values: np.ndarray, prefix: str | None = None) -> SurvivalTable:
        """Append a numeric block (e.g. image embeddings, (N, D) rows aligned with this table)."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[0] != len(self):
            raise InputError(
                f"{self.name}: block '{block}' has shape {values.shape}; expected ({len(self)}, D) rows aligned with the table"
            )
        prefix = prefix or block
        names = [f"{prefix}_{j}" for j in range(values.shape[1])]
        clash = sorted(set(names) & set(self.X.columns))
        if clash:
            raise InputError(f"{self.name}: block '{block}' column names {clash[:3]} already exist")
        extra = pd.DataFrame(values, columns=names)
        X = pd.concat([self.X.reset_index(drop=True), extra], axis=1)
        covs = self.schema.covariates + tuple(Covariate(n, "numeric", block=block) for n in names)
        return SurvivalTable(X, self.time, self.event, replace(self.schema, covariates=covs), self.name, self.ids)


def make_y(event: np.ndarray, time: np.ndarray) -> np.ndarray:
    """Structured ``(event, time)`` array (scikit-survival's ``Surv.from_arrays`` layout)."""
    y = np.empty(len(time), dtype=Y_DTYPE)
    y["event"] = np.asarray(event, dtype=bool)
    y["time"] = np.asarray(time, dtype=np.float64)
    return y


# ---------------------------------------------------------------------------------------------
# Validation and ingestion


def _parse_event(values: pd.Series, where: str, col: str) -> np.ndarray:
    if values.isna().any():
        rows = np.flatnonzero(values.isna().to_numpy())[:5].tolist()
        raise InputError(f"{where}: event column '{col}' has missing values (rows {rows})")
    if values.dtype == bool:
        return values.to_numpy(dtype=bool)
    num = pd.to_numeric(values, errors="coerce")
    bad = num.isna() | ~num.isin([0, 1])
    if bad.any():
        seen = sorted({str(v) for v in values[bad].unique()})[:5]
        raise InputError(f"{where}: event column '{col}' must be 0/1 (1 = event observed); found {seen}")
    return num.to_numpy(dtype=np.float64) == 1


def _parse_time(values: pd.Series, where: str, col: str) -> np.ndarray:
    num = pd.to_numeric(values, errors="coerce")
    bad_text = num.isna() & values.notna()
    if bad_text.any():
        raise InputError(
            f"{where}: time column '{col}' has non-numeric values {sorted(map(str, values[bad_text].unique()))[:5]}"
        )
    if num.isna().any():
        rows = np.flatnonzero(num.isna().to_numpy())[:5].tolist()
        raise InputError(f"{where}: time column '{col}' has missing times (rows {rows})")
    t = num.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(t)):
        raise InputError(f"{where}: time column '{col}' has infinite times")
    if (t < 0).any():
        rows = np.flatnonzero(t < 0)[:5].tolist()
        raise InputError(f"{where}: time column '{col}' has negative times (rows {rows}, e.g. {t[t < 0][0]:g})")
    return t


def validate_time_event(time: np.ndarray, event: np.ndarray, where: str) -> None:
    """Raise InputError for times that are missing/negative, or when no event is observed."""
    time = np.asarray(time, dtype=np.float64)
    if np.isnan(time).any() or (time < 0).any():
        raise InputError(f"{where}: times must be non-negative numbers without missing values")
    if len(time) == 0:
        raise InputError(f"{where}: the table has no rows")
    if not np.asarray(event, dtype=bool).any():
        raise InputError(f"{where}: no events observed (every row is censored); survival models cannot be fitted")


def _level_text(v: Any) -> Any:
    """A category level as text; integral numbers lose their '.0' (CSV readers add it with NaNs)."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return np.nan
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def table_from_frame(df: pd.DataFrame, schema: SurvivalSchema, where: str, name: str | None = None) -> SurvivalTable:
    """Validate ``df`` against ``schema`` and build a SurvivalTable. ``where`` names the source."""
    cols = [str(c) for c in df.columns]
    df = df.copy()
    df.columns = cols
    needed = [schema.time, schema.event] + ([schema.id] if schema.id else []) + schema.names
    for col in needed:
        if col not in cols:
            raise InputError(f"{where}: column '{col}' declared in the schema is missing.{suggest(col, cols)}")
    dup = sorted({n for n in schema.names if schema.names.count(n) > 1})
    if dup:
        raise InputError(f"{where}: covariate(s) {dup} declared twice in the schema")
    if schema.time in schema.names or schema.event in schema.names:
        raise InputError(f"{where}: the time/event columns cannot also be covariates")
    if not schema.covariates:
        raise InputError(f"{where}: the schema declares no covariates")
    time = _parse_time(df[schema.time], where, schema.time)
    event = _parse_event(df[schema.event], where, schema.event)
    validate_time_event(time, event, where)
    X = df[schema.names].reset_index(drop=True)
    for cov in schema.covariates:
        s = X[cov.name]
        if s.isna().all():
            raise InputError(f"{where}: covariate '{cov.name}' is empty (all values missing)")
        if cov.type != "numeric":
            s = s.map(_level_text).astype(object)  # 1, 1.0 and "1" are the same level
        levels = s.dropna().unique() if cov.type != "numeric" else None
        if cov.type == "numeric":
            num = pd.to_numeric(s, errors="coerce")
            bad = num.isna() & s.notna()
            if bad.any():
                raise InputError(
                    f"{where}: numeric covariate '{cov.name}' has non-numeric values: {_bad_cells(s, bad)}; "
                    "fix the values (leave a missing value empty or write NA) or declare the column categorical"
                )
            X[cov.name] = num.astype(np.float64)
            if np.isinf(X[cov.name]).any():
                raise InputError(f"{where}: numeric covariate '{cov.name}' has infinite values")
            if X[cov.name].nunique(dropna=True) <= 1:
                raise InputError(
                    f"{where}: covariate '{cov.name}' is constant ({X[cov.name].dropna().iloc[0]:g}); remove it from the schema"
                )
            continue
        if len(levels) <= 1:
            raise InputError(f"{where}: covariate '{cov.name}' is constant ({levels[0]!r}); remove it from the schema")
        if cov.type == "binary" and len(levels) > 2:
            raise InputError(
                f"{where}: binary covariate '{cov.name}' has {len(levels)} levels {sorted(levels)[:5]}; declare it categorical"
            )
        if cov.categories:
            unknown = sorted(set(levels) - set(cov.categories))
            if unknown:
                raise InputError(
                    f"{where}: covariate '{cov.name}' has levels {unknown[:5]} not in its declared categories {list(cov.categories)}"
                )
        X[cov.name] = s
    ids = df[schema.id].astype(str).to_numpy(dtype=object) if schema.id else np.zeros(0, dtype=object)
    if schema.id and len(set(ids)) != len(ids):
        raise InputError(f"{where}: id column '{schema.id}' has duplicate values")
    return SurvivalTable(X, time, event, schema, name or Path(where).stem, ids)


def infer_schema(
    df: pd.DataFrame, time: str, event: str, id: str | None = None, where: str = "table"
) -> SurvivalSchema:
    """Schema from dtypes: numbers -> numeric (0/1 only -> binary), text/category -> categorical
    (two levels -> binary). Used when the user gives ``--time-col/--event-col`` without a schema.
    A text column that is mostly numbers raises InputError naming the rows that are not."""
    covs = []
    for col in df.columns:
        col = str(col)
        if col in (time, event, id):
            continue
        s = df[col]
        nlev = s.dropna().nunique()
        if pd.api.types.is_bool_dtype(s):
            covs.append(Covariate(col, "binary"))
        elif pd.api.types.is_numeric_dtype(s):
            covs.append(Covariate(col, "binary" if nlev == 2 and set(s.dropna().unique()) <= {0, 1} else "numeric"))
        else:
            _refuse_mostly_numeric(s, col, where)
            covs.append(Covariate(col, "binary" if nlev == 2 else "categorical"))
    return SurvivalSchema(time=time, event=event, covariates=tuple(covs), id=id)


MOSTLY_NUMERIC = 0.8  # a text column whose values are at least this share numbers is a numeric column with typos


def _bad_cells(s: pd.Series, bad: pd.Series, limit: int = 3) -> str:
    """'row 12: 'unknown', row 40: '?'' for the first ``limit`` flagged cells (rows 1-based, as in
    a spreadsheet's data rows; file line = row + 1 for a CSV with a header)."""
    rows = np.flatnonzero(bad.to_numpy())
    shown = ", ".join(f"row {i + 1}: {str(s.iloc[i])!r}" for i in rows[:limit])
    return shown + (f" (and {len(rows) - limit} more)" if len(rows) > limit else "")


def _refuse_mostly_numeric(s: pd.Series, col: str, where: str) -> None:
    """A text column that is mostly numbers would become a one-hot of every distinct value: refuse
    it, naming the rows and values that are not numbers."""
    present = s.notna()
    if not present.any():
        return
    num = pd.to_numeric(s.where(present), errors="coerce")
    bad = num.isna() & present
    if bad.any() and (~bad[present]).mean() >= MOSTLY_NUMERIC:
        raise InputError(
            f"{where}: column '{col}' holds numbers except {_bad_cells(s, bad)}; fix the values "
            "(leave a missing value empty or write NA), or give a --schema that declares the column's type"
        )


def read_frame(path: str | Path) -> pd.DataFrame:
    """Read a CSV/TSV/Parquet file into a DataFrame with a clear error naming the file."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: file not found")
    suffix = p.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            optional_import("pyarrow")
            return pd.read_parquet(p)
        if suffix in (".csv", ".tsv", ".txt"):
            return pd.read_csv(p, sep="\t" if suffix == ".tsv" else ",", float_precision="round_trip")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{p}: cannot read the table ({exc})") from exc
    raise InputError(f"{p}: unsupported table format '{suffix}' (use .csv, .tsv or .parquet)")


def read_table(
    path: str | Path,
    schema: SurvivalSchema | str | Path | None = None,
    time_col: str | None = None,
    event_col: str | None = None,
    id_col: str | None = None,
) -> SurvivalTable:
    """Read a user table. Give ``schema`` (object or YAML path) or ``time_col``+``event_col``."""
    df = read_frame(path)
    if isinstance(schema, (str, Path)):
        schema = load_schema(schema)
    if schema is None:
        if not time_col or not event_col:
            raise ConfigError(f"{path}: give a schema file (--schema) or both --time-col and --event-col")
        for col in (time_col, event_col):
            if col not in df.columns:
                raise InputError(f"{path}: column '{col}' not found.{suggest(col, [str(c) for c in df.columns])}")
        schema = infer_schema(df, time_col, event_col, id_col, where=str(path))
    return table_from_frame(df, schema, str(path), name=Path(path).stem)


# ---------------------------------------------------------------------------------------------
# Per-fold encoder


class TableEncoder:
    """Encode raw covariates into a float matrix, fitted on training rows only.

    numeric: median imputation; binary: 0/1 (second level = 1), most-frequent imputation;
    categorical: one-hot without the reference (first) level, most-frequent imputation, unseen
    levels -> all zeros; ordinal: integer codes, median-code imputation. A missing indicator
    (``name__missing``) is added for each covariate with missing values in the training rows.
    Output columns follow schema order; ``blocks`` gives each output column's block.
    """

    def __init__(self, schema: SurvivalSchema) -> None:
        self.schema = schema
        self._plan: list[dict[str, Any]] = []
        self.feature_names: list[str] = []
        self.feature_blocks: list[str] = []

    def fit(self, X: pd.DataFrame) -> TableEncoder:
        self._plan, self.feature_names, self.feature_blocks = [], [], []
        for cov in self.schema.covariates:
            s = X[cov.name]
            step: dict[str, Any] = {"cov": cov, "indicator": bool(s.isna().any())}
            if s.isna().all():
                raise InputError(f"training rows: covariate '{cov.name}' has no values in the training rows")
            if cov.type == "numeric":
                step["fill"] = float(np.nanmedian(s.to_numpy(dtype=np.float64)))
                names = [cov.name]
            elif cov.type == "ordinal":
                codes = s.map(lambda v, c=cov.categories: np.nan if pd.isna(v) else float(c.index(str(v))))
                step["fill"] = float(np.nanmedian(codes.to_numpy(dtype=np.float64)))
                names = [cov.name]
            else:
                levels = list(cov.categories) or sorted(s.dropna().astype(str).unique())
                step["levels"] = levels
                step["fill"] = str(s.dropna().astype(str).mode().iloc[0])
                if cov.type == "binary":
                    names = [
                        cov.name
                        if set(levels) <= {"0", "1", "0.0", "1.0", "False", "True"}
                        else f"{cov.name}={levels[-1]}"
                    ]
                else:
                    names = [f"{cov.name}={lev}" for lev in levels[1:]]
            if step["indicator"]:
                names = names + [f"{cov.name}__missing"]
            step["names"] = names
            self._plan.append(step)
            self.feature_names += names
            self.feature_blocks += [cov.block] * len(names)
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """(N, F) float64 matrix; F = len(feature_names)."""
        if not self._plan:
            raise ConfigError("TableEncoder: call fit() before transform()")
        cols: list[np.ndarray] = []
        for step in self._plan:
            cov: Covariate = step["cov"]
            s = X[cov.name]
            miss = s.isna().to_numpy()
            if cov.type == "numeric":
                v = s.to_numpy(dtype=np.float64).copy()
                v[miss] = step["fill"]
                cols.append(v)
            elif cov.type == "ordinal":
                unknown = sorted({str(v) for v in s.dropna() if str(v) not in cov.categories})
                if unknown:
                    raise InputError(f"covariate '{cov.name}': levels {unknown[:5]} not among {list(cov.categories)}")
                v = np.array([step["fill"] if pd.isna(x) else float(cov.categories.index(str(x))) for x in s])
                cols.append(v)
            else:
                strs = np.where(miss, step["fill"], s.astype(str).to_numpy())
                levels = step["levels"]
                if cov.type == "binary":
                    cols.append((strs == levels[-1]).astype(np.float64))
                else:
                    cols += [(strs == lev).astype(np.float64) for lev in levels[1:]]
            if step["indicator"]:
                cols.append(miss.astype(np.float64))
        return np.column_stack(cols) if cols else np.zeros((len(X), 0))

    def fit_transform(self, X: pd.DataFrame) -> np.ndarray:
        return self.fit(X).transform(X)


# ---------------------------------------------------------------------------------------------
# Built-in datasets (files bundled with scikit-survival / lifelines; nothing is downloaded)


@dataclass(frozen=True)
class SurvivalDataset:
    """Where a built-in survival table comes from: a loader returning the raw DataFrame + schema,
    and the bundled file it reads (provenance). Its card lives in ``medfm.data.DATASETS``."""

    card: DatasetCard
    load_frame: Callable[[], tuple[pd.DataFrame, SurvivalSchema]]
    source_file: Callable[[], Path]


def _sksurv_file(name: str) -> Callable[[], Path]:
    def path() -> Path:
        datasets = optional_import("sksurv.datasets")
        return Path(datasets.__file__).parent / "data" / name

    return path


def _sksurv_frame(fn_name: str, omics_prefix: str | None = None) -> Callable[[], tuple[pd.DataFrame, SurvivalSchema]]:
    """Loader wrapping ``sksurv.datasets.<fn_name>``: categories -> binary/categorical covariates."""

    def load() -> tuple[pd.DataFrame, SurvivalSchema]:
        datasets = optional_import("sksurv.datasets")
        X, y = getattr(datasets, fn_name)()
        ev_name, t_name = y.dtype.names
        covs = []
        for col in X.columns:
            s = X[col]
            block = "omics" if omics_prefix and str(col).startswith(omics_prefix) else "ehr"
            if isinstance(s.dtype, pd.CategoricalDtype):
                cats = tuple(str(c) for c in s.cat.categories)
                covs.append(Covariate(str(col), "binary" if len(cats) == 2 else "categorical", cats, block))
            else:
                covs.append(Covariate(str(col), "numeric", block=block))
        df = X.copy()
        df[t_name] = y[t_name]
        df[ev_name] = y[ev_name].astype(int)
        return df, SurvivalSchema(time=t_name, event=ev_name, covariates=tuple(covs))

    return load


def _lifelines_file(name: str) -> Callable[[], Path]:
    def path() -> Path:
        datasets = optional_import("lifelines.datasets")
        return Path(datasets.__file__).parent / name

    return path


def _rossi_frame() -> tuple[pd.DataFrame, SurvivalSchema]:
    datasets = optional_import("lifelines.datasets")
    df = datasets.load_rossi()
    covs = tuple(
        Covariate(c, "binary" if c in ("fin", "race", "wexp", "mar", "paro") else "numeric")
        for c in ("fin", "age", "race", "wexp", "mar", "paro", "prio")
    )
    return df, SurvivalSchema(time="week", event="arrest", covariates=covs)


_SKSURV_CITE = "Pölsterl S. scikit-survival: A Library for Time-to-Event Analysis Built on Top of scikit-learn. JMLR 21(212), 2020."
_BUILTINS: tuple[tuple[DatasetCard, Callable[[], tuple[pd.DataFrame, SurvivalSchema]], Callable[[], Path]], ...] = (
    (
        DatasetCard(
            name="gbsg2",
            task="survival",
            modality="ehr",
            splits=("all",),
            license="GPL-3.0 (as bundled in scikit-survival; data from the TH.data R package)",
            citation="Schumacher M, et al. Randomized 2x2 trial evaluating hormonal treatment and the duration of chemotherapy in node-positive breast cancer patients. J Clin Oncol 12(10), 1994. "
            + _SKSURV_CITE,
            description="German Breast Cancer Study Group 2: 686 node-positive breast cancer patients, 8 covariates, recurrence-free survival (days).",
            options={"source": "sksurv:GBSG2.arff"},
        ),
        _sksurv_frame("load_gbsg2"),
        _sksurv_file("GBSG2.arff"),
    ),
    (
        DatasetCard(
            name="whas500",
            task="survival",
            modality="ehr",
            splits=("all",),
            license="GPL-3.0 (as bundled in scikit-survival)",
            citation="Hosmer DW, Lemeshow S, May S. Applied Survival Analysis, 2nd ed. Wiley, 2008 (Worcester Heart Attack Study). "
            + _SKSURV_CITE,
            description="Worcester Heart Attack Study: 500 patients after myocardial infarction, 14 covariates, all-cause mortality (days).",
            options={"source": "sksurv:whas500.arff"},
        ),
        _sksurv_frame("load_whas500"),
        _sksurv_file("whas500.arff"),
    ),
    (
        DatasetCard(
            name="veterans",
            task="survival",
            modality="ehr",
            splits=("all",),
            license="GPL-3.0 (as bundled in scikit-survival; data from the survival R package)",
            citation="Kalbfleisch JD, Prentice RL. The Statistical Analysis of Failure Time Data. Wiley, 1980 (Veterans' Administration lung cancer trial). "
            + _SKSURV_CITE,
            description="Veterans' Administration lung cancer trial: 137 patients, 6 covariates, survival (days).",
            options={"source": "sksurv:veteran.arff"},
        ),
        _sksurv_frame("load_veterans_lung_cancer"),
        _sksurv_file("veteran.arff"),
    ),
    (
        DatasetCard(
            name="aids",
            task="survival",
            modality="ehr",
            splits=("all",),
            license="GPL-3.0 (as bundled in scikit-survival)",
            citation="Hammer SM, et al. A controlled trial of two nucleoside analogues plus indinavir in persons with HIV infection and CD4 cell counts of 200 per cubic millimeter or less. NEJM 337, 1997 (ACTG 320). "
            + _SKSURV_CITE,
            description="AIDS Clinical Trial Group 320: 1,151 patients, 11 covariates, time to AIDS diagnosis or death (days).",
            options={"source": "sksurv:actg320.arff"},
        ),
        _sksurv_frame("load_aids"),
        _sksurv_file("actg320.arff"),
    ),
    (
        DatasetCard(
            name="flchain",
            task="survival",
            modality="ehr",
            splits=("all",),
            license="GPL-3.0 (as bundled in scikit-survival; data from the survival R package)",
            citation="Dispenzieri A, et al. Use of nonclonal serum immunoglobulin free light chains to predict overall survival in the general population. Mayo Clin Proc 87(6), 2012. "
            + _SKSURV_CITE,
            description="Serum free light chain study (Olmsted County): 7,874 subjects, 9 covariates with missing values, all-cause mortality (days).",
            options={"source": "sksurv:flchain.arff"},
        ),
        _sksurv_frame("load_flchain"),
        _sksurv_file("flchain.arff"),
    ),
    (
        DatasetCard(
            name="breast_cancer",
            task="survival",
            modality="omics",
            splits=("all",),
            license="GPL-3.0 (as bundled in scikit-survival; GEO GSE7390)",
            citation="Desmedt C, et al. Strong time dependence of the 76-gene prognostic signature for node-negative breast cancer patients in the TRANSBIG multicenter independent validation series. Clin Cancer Res 13(11), 2007. "
            + _SKSURV_CITE,
            description="TRANSBIG GSE7390: 198 node-negative breast cancer patients, 76 gene-expression probes (block 'omics') + 4 clinical covariates (block 'ehr'), time to distant metastasis (days).",
            options={"source": "sksurv:breast_cancer_GSE7390-metastasis.arff", "blocks": ["ehr", "omics"]},
        ),
        _sksurv_frame("load_breast_cancer", omics_prefix="X"),
        _sksurv_file("breast_cancer_GSE7390-metastasis.arff"),
    ),
    (
        DatasetCard(
            name="rossi",
            task="survival",
            modality="ehr",
            splits=("all",),
            license="MIT (as bundled in lifelines)",
            citation="Rossi PH, Berk RA, Lenihan KJ. Money, Work and Crime: Some Experimental Results. Academic Press, 1980. Davidson-Pilon C. lifelines: survival analysis in Python. JOSS 4(40), 2019.",
            description="Recidivism of 432 released prisoners over one year, 7 covariates, time to re-arrest (weeks).",
            options={"source": "lifelines:rossi.csv"},
        ),
        _rossi_frame,
        _lifelines_file("rossi.csv"),
    ),
)

_SOURCES: dict[str, SurvivalDataset] = {c.name: SurvivalDataset(c, load, f) for c, load, f in _BUILTINS}
CARDS: tuple[DatasetCard, ...] = tuple(c for c, _, _ in _BUILTINS)


class SurvivalSplit:
    """A survival table seen through the ``SplitData`` protocol (one ``Sample`` per row:
    ``time``, ``event``, raw covariates in ``meta['covariates']``; ``labels`` = event as int)."""

    def __init__(self, card: DatasetCard, split: str, table: SurvivalTable) -> None:
        self.card = card
        self.split = split
        self.table = table

    def images(self) -> None:
        """None: a survival table holds no images (see ``SplitData.images``)."""
        return None

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> Sample:
        row = self.table.X.iloc[i].to_dict()
        return Sample(
            id=str(self.table.ids[i]),
            time=float(self.table.time[i]),
            event=bool(self.table.event[i]),
            meta={"covariates": row},
        )

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))

    @property
    def labels(self) -> np.ndarray:
        return self.table.event.astype(np.int64)

    @property
    def ids(self) -> Sequence[str]:
        return [str(i) for i in self.table.ids]

    def checksum(self) -> str:
        return self.table.checksum()


def _registry_loader(card: DatasetCard, located: Any = None, **options: Any) -> dict[str, SurvivalSplit]:
    """Loader for ``medfm.data.register_card``: the whole table as split ``all``."""
    if options:
        raise ConfigError(f"dataset {card.name}: unknown option(s) {sorted(options)}")
    return {"all": SurvivalSplit(card, "all", load_survival_dataset(card.name))}


# The global dataset registry (``medfm.data.registry``) registers these with their loader.
CARDS_AND_LOADERS: tuple[tuple[DatasetCard, Callable[..., dict[str, SurvivalSplit]]], ...] = tuple(
    (card, _registry_loader) for card in CARDS
)


def survival_dataset_names() -> list[str]:
    """Names of the registered survival datasets (cards with task 'survival')."""
    from medfm.data.registry import list_cards

    return [c.name for c in list_cards() if c.task == "survival"]


def _source(name: str) -> SurvivalDataset:
    """The built-in source of a registered survival card; ConfigError for other names."""
    from medfm.data.registry import get_card

    card = get_card(name)  # unknown names: did-you-mean over every dataset
    if card.task != "survival" or name not in _SOURCES:
        raise ConfigError(
            f"dataset {name} is a {card.task} dataset, not a survival table. "
            f"Survival datasets: {', '.join(survival_dataset_names())}"
        )
    return _SOURCES[name]


def load_survival_dataset(name: str) -> SurvivalTable:
    """Load a built-in dataset by name (see ``survival_dataset_names()``), validated."""
    entry = _source(name)
    df, schema = entry.load_frame()
    return table_from_frame(df, schema, where=f"{name} ({entry.card.options.get('source', '')})", name=name)


def dataset_file_hash(name: str) -> str | None:
    """sha256 of the bundled file a built-in dataset is read from (provenance)."""
    from medfm._paths import file_hash

    p = _source(name).source_file()
    return file_hash(p) if p.is_file() else None


TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")


def load_survival_input(
    dataset: str,
    data_dir: str | Path | None = None,
    schema: str | Path | None = None,
    time_col: str | None = None,
    event_col: str | None = None,
    id_col: str | None = None,
    embeddings: str | Path | None = None,
) -> tuple[SurvivalTable, str | None]:
    """(table, checksum of its source) for a built-in dataset name or a CSV/Parquet table file
    (a relative path is also looked up under ``data_dir``), with an optional image-embedding
    block appended (see ``add_embeddings``). Nothing is written."""
    from medfm._paths import file_hash
    from medfm.data.registry import DATASETS

    if dataset in DATASETS:
        if schema or time_col or event_col:
            raise ConfigError(f"{dataset}: --schema/--time-col/--event-col apply to table files, not built-in datasets")
        table, checksum = load_survival_dataset(dataset), dataset_file_hash(dataset)
    else:
        path = Path(dataset).expanduser()
        if not path.exists() and data_dir is not None and (Path(data_dir) / dataset).exists():
            path = Path(data_dir) / dataset
        if path.suffix.lower() not in TABLE_SUFFIXES and not path.exists():
            names = survival_dataset_names()
            raise ConfigError(
                f"unknown survival dataset '{dataset}'.{suggest(dataset, names)} Built-in: {', '.join(names)}; "
                "or give a .csv/.parquet table with --schema or --time-col/--event-col"
            )
        table = read_table(path, schema=schema, time_col=time_col, event_col=event_col, id_col=id_col)
        checksum = file_hash(path)
    if embeddings is not None:
        table = add_embeddings(table, Path(embeddings))
    return table, checksum


def _read_embeddings(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(embeddings (N, D), ids or None) from a .npy or an .npz with ``embeddings`` (+ ``ids``)."""
    if not path.is_file():
        raise InputError(f"{path}: embeddings file not found")
    try:
        if path.suffix == ".npy":
            return np.load(path), None
        if path.suffix != ".npz":
            raise InputError(f"{path}: embeddings must be .npy or .npz")
        with np.load(path, allow_pickle=False) as z:
            if "embeddings" not in z:
                raise InputError(f"{path}: .npz needs an 'embeddings' array (and optionally 'ids'); found {list(z.keys())}")
            return z["embeddings"], (z["ids"].astype(str) if "ids" in z else None)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read embeddings ({exc})") from exc


def add_embeddings(table: SurvivalTable, path: Path) -> SurvivalTable:
    """Append an image-embedding block (columns ``img_0..``): .npy (N, D) row-aligned, or .npz
    with ``embeddings`` (N, D) and optional ``ids`` matched to the table's id column."""
    emb, ids = _read_embeddings(path)
    if emb.ndim != 2 or not np.all(np.isfinite(emb)):
        raise InputError(f"{path}: embeddings must be a finite (N, D) array, got shape {emb.shape}")
    if ids is not None:
        pos = {k: i for i, k in enumerate(ids)}
        missing = [i for i in table.ids if i not in pos]
        if missing:
            raise InputError(f"{path}: no embedding for table ids {missing[:5]} (ids come from the schema's id column)")
        emb = emb[[pos[i] for i in table.ids]]
    elif len(emb) != len(table):
        raise InputError(f"{path}: {len(emb)} embeddings for {len(table)} table rows (add 'ids' to align them)")
    return table.with_block("image", emb, prefix="img")


def split_columns(names: Sequence[str], blocks: Sequence[str]) -> dict[str, np.ndarray]:
    """Block name -> column indices of an encoded matrix (from ``TableEncoder.feature_blocks``)."""
    out: dict[str, list[int]] = {}
    for j, b in enumerate(blocks):
        out.setdefault(b, []).append(j)
    return {b: np.asarray(v, dtype=int) for b, v in out.items()}

