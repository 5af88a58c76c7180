"""From a raw survival table to risks: encoding, per-block scaling/PCA, early or late fusion.

Blocks are groups of columns (``ehr`` tabular covariates, ``omics`` expression, ``image``
embeddings). Early fusion concatenates the blocks (each standardised on its own, wide blocks
optionally reduced by PCA) and fits one model. Late fusion fits one model per block and combines
their risks by rank average (``combine="rank"``) or by a Cox model on out-of-fold block risks
(``combine="stack"``). Everything is fitted on the training rows it is given, never on test rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from medfm.data.survival import SurvivalSchema, TableEncoder
from medfm.errors import ConfigError, InputError
from medfm.tasks.survival.models import (
    SurvivalModel,
    create_model,
    ensemble_members,
    rank_average,
    split_preprocess,
)

FUSION_MODES = ("early", "late")
COMBINERS = ("rank", "stack")


@dataclass
class FusionConfig:
    """``mode`` early|late; ``combine`` rank|stack (late only); per-block ``standardize``;
    PCA to ``pca_components`` for blocks wider than ``pca_min_width`` (None: no PCA);
    ``stack_folds`` inner folds giving out-of-fold block risks for the stacked Cox;
    ``log_skewed``: log1p of non-negative, non-binary columns whose training-row skewness is > 1
    (monotone, so tree models are unaffected; it helps the linear and neural Cox models);
    ``splines``: number of knots (0: off) of a cubic B-spline basis (knots at training-row quantiles,
    linear beyond the outer knots) replacing each continuous column (>= 10 distinct values) of
    blocks no wider than ``pca_min_width``: non-linear covariate effects for Cox-type models;
    ``interactions``: append the standardised pairwise products of a narrow block's standardised
    (log-transformed, not spline-expanded) columns, products constant on the training rows or
    collinear with one column dropped: first-order effect modification for penalised linear models."""

    mode: str = "early"
    combine: str = "rank"
    standardize: bool = True
    log_skewed: bool = False
    splines: int = 0
    interactions: bool = False
    pca_components: int | None = None
    pca_min_width: int = 50
    stack_folds: int = 3

    def __post_init__(self) -> None:
        if self.mode not in FUSION_MODES:
            raise ConfigError(f"fusion mode must be one of {FUSION_MODES}, got {self.mode!r}")
        if self.combine not in COMBINERS:
            raise ConfigError(f"late-fusion combine must be one of {COMBINERS}, got {self.combine!r}")
        if self.splines != 0 and not 3 <= self.splines <= 10:
            raise ConfigError(f"splines must be 0 (off) or 3..10 knots, got {self.splines}")
        if self.pca_components is not None and self.pca_components < 1:
            raise ConfigError(f"pca_components must be >= 1, got {self.pca_components}")

    def label(self) -> str:
        """Suffix for model names in results: '' (early) or '/late-rank', '/late-stack'."""
        return "" if self.mode == "early" else f"/late-{self.combine}"


class BlockTransformer:
    """Per block: drop columns constant in the training rows, log1p skewed ones (optional),
    spline-expand continuous ones in narrow blocks (optional), standardise, append pairwise
    products in narrow blocks (optional), PCA when wide.
    Every choice is made on the rows given to ``fit``."""

    def __init__(self, blocks: list[str], config: FusionConfig, seed: int = 0) -> None:
        self.blocks = list(blocks)
        self.config = config
        self.seed = seed
        self._steps: list[tuple[str, np.ndarray, np.ndarray, Any, Any, Any, Any]] = []
        self.out_blocks: list[str] = []

    def fit(self, X: np.ndarray) -> BlockTransformer:
        from sklearn.decomposition import PCA
        from sklearn.preprocessing import StandardScaler

        self._steps, self.out_blocks = [], []
        names = np.asarray(self.blocks)
        for b in dict.fromkeys(self.blocks):
            cols = np.flatnonzero(names == b)
            cols = cols[np.nanstd(X[:, cols], axis=0) > 0]
            if len(cols) == 0:
                continue
            Xb = X[:, cols]
            logm = np.zeros(len(cols), dtype=bool)
            if self.config.log_skewed:
                from scipy.stats import skew

                nonneg = Xb.min(axis=0) >= 0
                many = np.array([len(np.unique(Xb[:, j])) > 2 for j in range(Xb.shape[1])])
                logm = nonneg & many & (skew(Xb, axis=0) > 1.0)
                Xb = np.where(logm, np.log1p(np.maximum(Xb, 0)), Xb)
            inter = None
            if self.config.interactions and 2 <= len(cols) <= self.config.pca_min_width:
                inter = _Interactions().fit(Xb)
            spl = None
            if self.config.splines and len(cols) <= self.config.pca_min_width:
                spl = _SplineExpander(self.config.splines).fit(Xb)
            Xb_in = Xb
            Xb = spl.transform(Xb) if spl is not None else Xb
            scaler = StandardScaler().fit(Xb) if self.config.standardize else None
            Xb = scaler.transform(Xb) if scaler is not None else Xb
            if inter is not None:
                Xb = np.hstack([Xb, inter.transform(Xb_in)])
            pca = None
            k = self.config.pca_components
            if k is not None and len(cols) > self.config.pca_min_width:
                pca = PCA(n_components=min(k, len(cols), len(Xb) - 1), random_state=self.seed).fit(Xb)
            self._steps.append((b, cols, logm, spl, scaler, inter, pca))
            self.out_blocks += [b] * (pca.n_components_ if pca is not None else Xb.shape[1])
        if not self._steps:
            raise InputError("every covariate is constant in the training rows")
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        parts = []
        for _, cols, logm, spl, scaler, inter, pca in self._steps:
            Xb = X[:, cols]
            Xb = np.where(logm, np.log1p(np.maximum(Xb, 0)), Xb) if logm.any() else Xb
            Xb_in = Xb
            Xb = spl.transform(Xb) if spl is not None else Xb
            Xb = scaler.transform(Xb) if scaler is not None else Xb
            if inter is not None:
                Xb = np.hstack([Xb, inter.transform(Xb_in)])
            parts.append(pca.transform(Xb) if pca is not None else Xb)
        return np.hstack(parts)


class _Interactions:
    """Products x_i * x_j (i < j) of the columns standardised on the training rows, each product
    standardised again on the training rows; products that are constant there or a linear function
    of one column (e.g. of two mutually exclusive indicators) add nothing and are dropped."""

    def fit(self, X: np.ndarray) -> _Interactions:
        from sklearn.preprocessing import StandardScaler

        self._base = StandardScaler().fit(X)
        Z = self._base.transform(X)
        i, j = np.triu_indices(X.shape[1], k=1)
        P = self._products(Z, i, j)
        sd = P.std(axis=0)
        keep = sd > 1e-12
        if keep.any():
            Zs = Z / np.where(Z.std(axis=0) > 0, Z.std(axis=0), 1.0)
            corr = ((P[:, keep] - P[:, keep].mean(0)) / sd[keep]).T @ Zs / len(Z)  # (kept products, columns)
            keep[np.flatnonzero(keep)] = np.abs(corr).max(axis=1) < 1.0 - 1e-8
        self._i, self._j = i[keep], j[keep]
        self._scale = StandardScaler().fit(P[:, keep]) if keep.any() else None
        return self

    @staticmethod
    def _products(Z: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        return Z[:, i] * Z[:, j]

    def transform(self, X: np.ndarray) -> np.ndarray:
        if self._scale is None:
            return np.empty((len(X), 0))
        return self._scale.transform(self._products(self._base.transform(X), self._i, self._j))


class _SplineExpander:
    """Replace each continuous column (>= 10 distinct training values) by a cubic B-spline basis
    (sklearn ``SplineTransformer``: ``n_knots`` knots at training quantiles, linear extrapolation,
    no intercept column); other columns pass through unchanged, in their original order."""

    MIN_DISTINCT = 10

    def __init__(self, n_knots: int) -> None:
        self.n_knots = n_knots
        self._cols: list[tuple[int, Any]] = []

    def fit(self, X: np.ndarray) -> _SplineExpander:
        from sklearn.preprocessing import SplineTransformer

        self._cols = []
        for j in range(X.shape[1]):
            st = None
            if len(np.unique(X[:, j])) >= self.MIN_DISTINCT:
                # quantile knots; tied quantiles (e.g. many equal counts) collapse, uniform if < 3 remain
                knots = np.unique(np.quantile(X[:, j], np.linspace(0.0, 1.0, self.n_knots)))
                st = SplineTransformer(
                    degree=3,
                    knots=knots[:, None] if len(knots) >= 3 else "uniform",
                    n_knots=self.n_knots,
                    extrapolation="linear",
                    include_bias=False,
                ).fit(X[:, j : j + 1])
            self._cols.append((j, st))
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        parts = [X[:, j : j + 1] if st is None else st.transform(X[:, j : j + 1]) for j, st in self._cols]
        return np.hstack(parts)


class SurvivalPipeline:
    """Encoder -> per-block transformer -> model (early) or one model per block (late); for
    ``ensemble``, one such pipeline per member (each with its own preprocessing), rank-averaged.

    ``fit(X_raw, y)`` with ``X_raw`` the table's covariate DataFrame and ``y`` the structured
    (event, time) array; ``predict_risk`` (N,), ``predict_survival`` (N, T) or None.
    """

    def __init__(
        self,
        schema: SurvivalSchema,
        model: str,
        params: dict[str, Any] | None = None,
        seed: int = 0,
        fusion: FusionConfig | None = None,
    ) -> None:
        self.schema = schema
        self.model_name = model
        self.params = dict(params or {})
        self.seed = seed
        self.fusion = fusion or FusionConfig()
        pre, self.params = split_preprocess(self.params)  # preprocessing choices tuned with model parameters
        if "log_skewed" in pre:
            self.fusion = replace(self.fusion, log_skewed=bool(pre["log_skewed"]))
        if "splines" in pre:
            self.fusion = replace(self.fusion, splines=int(pre["splines"]))
        if "interactions" in pre:
            self.fusion = replace(self.fusion, interactions=bool(pre["interactions"]))
        # an ensemble is one sub-pipeline per member, so each member keeps its own preprocessing
        self.members: list[SurvivalPipeline] = []
        if model == "ensemble":
            names, per = ensemble_members(self.params)
            self.members = [SurvivalPipeline(schema, m, per[m], seed, self.fusion) for m in names]
        self.encoder = TableEncoder(schema)
        self.transformer: BlockTransformer | None = None
        self.models: dict[str, SurvivalModel] = {}
        self.stacker: SurvivalModel | None = None
        self._stack_scale: tuple[np.ndarray, np.ndarray] | None = None

    def _features(self, X_raw: pd.DataFrame, fit: bool) -> np.ndarray:
        if fit:
            M = self.encoder.fit_transform(X_raw)
            self.transformer = BlockTransformer(self.encoder.feature_blocks, self.fusion, self.seed).fit(M)
        else:
            M = self.encoder.transform(X_raw)
        assert self.transformer is not None
        return self.transformer.transform(M)

    def _block_cols(self) -> dict[str, np.ndarray]:
        assert self.transformer is not None
        blocks = np.asarray(self.transformer.out_blocks)
        return {b: np.flatnonzero(blocks == b) for b in dict.fromkeys(self.transformer.out_blocks)}

    def fit(self, X_raw: pd.DataFrame, y: np.ndarray) -> SurvivalPipeline:
        if self.members:
            for m in self.members:
                m.fit(X_raw, y)
            return self
        Z = self._features(X_raw, fit=True)
        if self.fusion.mode == "early" or len(self._block_cols()) == 1:
            self.models = {"all": create_model(self.model_name, self.params, self.seed).fit(Z, y)}
            return self
        cols = self._block_cols()
        self.models = {
            b: create_model(self.model_name, self.params, self.seed).fit(Z[:, c], y) for b, c in cols.items()
        }
        if self.fusion.combine == "stack":
            self._fit_stacker(Z, y, cols)
        return self

    def _fit_stacker(self, Z: np.ndarray, y: np.ndarray, cols: dict[str, np.ndarray]) -> None:
        """Cox on standardised out-of-fold block risks (inner folds on the training rows only)."""
        from sklearn.model_selection import StratifiedKFold

        event = y[y.dtype.names[0]].astype(bool)
        oof = np.zeros((len(y), len(cols)))
        skf = StratifiedKFold(self.fusion.stack_folds, shuffle=True, random_state=self.seed)
        for tr, te in skf.split(Z, event):
            for j, c in enumerate(cols.values()):
                m = create_model(self.model_name, self.params, self.seed).fit(Z[tr][:, c], y[tr])
                oof[te, j] = m.predict_risk(Z[te][:, c])
        mu, sd = oof.mean(0), oof.std(0) + 1e-12
        self._stack_scale = (mu, sd)
        self.stacker = create_model("coxph", {"alpha": 1e-2}).fit((oof - mu) / sd, y)

    def _block_risks(self, Z: np.ndarray) -> np.ndarray:
        cols = self._block_cols()
        return np.column_stack([self.models[b].predict_risk(Z[:, cols[b]]) for b in self.models])

    def predict_risk(self, X_raw: pd.DataFrame) -> np.ndarray:
        if self.members:
            return rank_average([m.predict_risk(X_raw) for m in self.members])
        Z = self._features(X_raw, fit=False)
        if "all" in self.models:
            return self.models["all"].predict_risk(Z)
        R = self._block_risks(Z)
        if self.stacker is not None and self._stack_scale is not None:
            mu, sd = self._stack_scale
            return self.stacker.predict_risk((R - mu) / sd)
        return rank_average(list(R.T))

    def predict_survival(self, X_raw: pd.DataFrame, times: np.ndarray) -> np.ndarray | None:
        if self.members:
            survs = [m.predict_survival(X_raw, times) for m in self.members]
            return None if any(s is None for s in survs) else np.mean(survs, axis=0)
        Z = self._features(X_raw, fit=False)
        if "all" in self.models:
            return self.models["all"].predict_survival(Z, times)
        if self.stacker is not None and self._stack_scale is not None:
            mu, sd = self._stack_scale
            return self.stacker.predict_survival((self._block_risks(Z) - mu) / sd, times)
        cols = self._block_cols()
        survs = [self.models[b].predict_survival(Z[:, cols[b]], times) for b in self.models]
        if any(s is None for s in survs):
            return None
        return np.mean(survs, axis=0)
