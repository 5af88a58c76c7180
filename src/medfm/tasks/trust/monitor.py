"""Drift monitoring: is an incoming batch of images distributed like the reference set?

``monitor(ref_emb, inc_emb, ref_images, inc_images, cfg)`` runs, on embeddings (N, D):

- ``mmd``: maximum mean discrepancy (RBF kernel, median-distance bandwidth, biased V-statistic)
  with a permutation test; every permutation is one row of a (P, N) weight matrix, so the P
  statistics are one matrix product with the pooled kernel.
- ``ks``: a two-sample Kolmogorov-Smirnov test per dimension, Bonferroni-combined into one
  p-value (dimensions flagged after Benjamini-Hochberg are listed as evidence).
- ``c2st``: classifier two-sample test: a logistic regression told to separate reference from
  incoming, cross-fitted over stratified folds; held-out AUROC and a one-sided Mann-Whitney
  p-value per fold, Bonferroni-combined.

and, when images are given, on input statistics: per-image mean and standard deviation of
the intensities and its mean absolute difference between neighbouring pixels along the last
axis (``intensity_gradient``: noise raises it, blur and lost resolution lower it; KS tests), the pooled intensity histogram (total-variation distance),
image sizes, channels, spacing and modality tags. Embeddings wider than ``cfg.max_dims`` are
projected on the top principal components of the pooled set first (the projection depends on
the pooled set only, so the tests stay valid under the null hypothesis).

The verdict is "drift" when any test's Bonferroni-adjusted p-value (over all tests run) is
below ``alpha``, or when sizes / channels / modality / spacing differ outright.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medfm.errors import ConfigError, InputError, MedfmError


@dataclass
class MonitorConfig:
    """``alpha``: family-wise false-alarm rate; ``n_perm``: MMD permutations; ``min_samples``
    per side; ``max_dims``: embeddings are reduced to this many principal components;
    ``folds``: C2ST cross-fitting folds; ``hist_bins``: intensity histogram bins."""

    alpha: float = 0.05
    n_perm: int = 500
    min_samples: int = 20
    max_dims: int = 32
    folds: int = 2
    hist_bins: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ConfigError(f"monitor: alpha must be in (0, 1), got {self.alpha}")
        if self.n_perm < 19 or self.min_samples < 2 * max(self.folds, 2) or self.max_dims < 1 or self.folds < 2:
            raise ConfigError(
                f"monitor: need n_perm >= 19, folds >= 2, min_samples >= 2 * folds and max_dims >= 1 "
                f"(got {self.n_perm}, {self.folds}, {self.min_samples}, {self.max_dims})"
            )


@dataclass
class TestResult:
    """One two-sample test: statistic, raw and adjusted p-value, whether it alarms, details."""

    name: str
    statistic: float
    p_value: float
    p_adjusted: float = math.nan
    alarm: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class MonitorReport:
    """Verdict ("drift" / "no drift") with the evidence: tests, input comparison, sizes."""

    verdict: str
    alpha: float
    n_reference: int
    n_incoming: int
    dim: int
    tests: list[TestResult]
    inputs: dict[str, Any]
    reasons: list[str]

    @property
    def drift(self) -> bool:
        return self.verdict == "drift"


# --------------------------------------------------------------------------------------
# embedding tests
# --------------------------------------------------------------------------------------
def _check_pair(x: np.ndarray, y: np.ndarray, min_samples: int, what: str = "embeddings") -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2:
        raise InputError(f"monitor: {what} must be (N, D) arrays, got shapes {x.shape} and {y.shape}")
    if x.shape[1] != y.shape[1]:
        raise InputError(
            f"monitor: reference {what} have {x.shape[1]} dimensions but incoming have {y.shape[1]}; "
            "embed both with the same model"
        )
    for side, a in (("reference", x), ("incoming", y)):
        if len(a) < min_samples:
            raise InputError(f"monitor: {len(a)} {side} samples; the tests need at least {min_samples} per side")
        if not np.isfinite(a).all():
            raise InputError(f"monitor: {side} {what} contain NaN or inf")
    return x, y


def reduce_dims(x: np.ndarray, y: np.ndarray, max_dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Standardise on the pooled set and, when wider than ``max_dims``, project both on the
    pooled set's top principal components."""
    pooled = np.vstack([x, y])
    mu, sd = pooled.mean(axis=0), pooled.std(axis=0)
    keep = sd > 1e-12
    if not keep.any():
        return np.zeros((len(x), 1)), np.zeros((len(y), 1))
    pooled = (pooled[:, keep] - mu[keep]) / sd[keep]
    if pooled.shape[1] > max_dims:
        _, _, vt = np.linalg.svd(pooled, full_matrices=False)
        pooled = pooled @ vt[:max_dims].T
    return pooled[: len(x)], pooled[len(x):]


def mmd_permutation_test(x: np.ndarray, y: np.ndarray, n_perm: int = 500, seed: int = 0) -> TestResult:
    """Squared MMD (RBF kernel, median heuristic) and its permutation p-value (1 + #>=) / (1 + P)."""
    pooled = np.vstack([x, y])
    n, m = len(x), len(y)
    sq = np.sum(pooled**2, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * pooled @ pooled.T, 0.0)
    off = d2[np.triu_indices(n + m, k=1)]
    bw = float(np.median(off[off > 0])) if (off > 0).any() else 1.0
    k = np.exp(-d2 / bw)
    w0 = np.r_[np.full(n, 1.0 / n), np.full(m, -1.0 / m)]
    obs = float(w0 @ k @ w0)
    rng = np.random.default_rng(seed)
    perms = np.argsort(rng.random((n_perm, n + m)), axis=1)
    w = w0[perms]  # (P, N): each row the weights of one relabelling
    stats = np.einsum("pi,pi->p", w @ k, w)
    p = float((1 + np.sum(stats >= obs - 1e-12)) / (1 + n_perm))
    return TestResult("mmd", obs, p, detail={"bandwidth": bw, "n_perm": n_perm, "kernel": "rbf"})


def ks_test(x: np.ndarray, y: np.ndarray, alpha: float = 0.05) -> TestResult:
    """Per-dimension two-sample KS; Bonferroni-combined p-value; BH-flagged dimensions as evidence."""
    from scipy.stats import false_discovery_control, ks_2samp

    res = ks_2samp(x, y, axis=0)
    p = np.atleast_1d(res.pvalue)
    stat = np.atleast_1d(res.statistic)
    d = len(p)
    flagged = np.flatnonzero(false_discovery_control(p, method="bh") < alpha)
    return TestResult(
        "ks", float(stat.max()), float(min(1.0, p.min() * d)),
        detail={"dims": d, "max_statistic_dim": int(stat.argmax()), "dims_flagged_bh": int(len(flagged)),
                "correction": "bonferroni over dimensions"},
    )


def classifier_test(x: np.ndarray, y: np.ndarray, folds: int = 2, seed: int = 0) -> TestResult:
    """C2ST by cross-fitting: a logistic regression is trained to separate reference from
    incoming on all folds but one and scored on the held-out fold; each fold's one-sided
    Mann-Whitney p-value (incoming scores above reference scores) is exact given its model,
    and the fold p-values are Bonferroni-combined. (Pooling out-of-fold scores of different
    models into one rank test is anti-conservative: 3% false alarms at a 0.8% level here.)"""
    from scipy.stats import mannwhitneyu
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    data = np.vstack([x, y])
    label = np.r_[np.zeros(len(x), dtype=int), np.ones(len(y), dtype=int)]
    aucs, ps = [], []
    for tr, te in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(data, label):
        clf = LogisticRegression(C=1.0, max_iter=1000).fit(data[tr], label[tr])
        s, lab = clf.decision_function(data[te]), label[te]
        u = mannwhitneyu(s[lab == 1], s[lab == 0], alternative="greater")
        aucs.append(float(u.statistic / ((lab == 1).sum() * (lab == 0).sum())))
        ps.append(float(u.pvalue))
    return TestResult(
        "c2st", float(np.mean(aucs)), float(min(1.0, folds * min(ps))),
        detail={"folds": folds, "fold_auroc": aucs, "classifier": "logistic regression", "correction": "bonferroni over folds"},
    )


# --------------------------------------------------------------------------------------
# input statistics
# --------------------------------------------------------------------------------------
@dataclass
class InputStats:
    """Per-image intensity summaries (scaled to [0, 1] for integer dtypes) and geometry tags."""

    means: np.ndarray
    stds: np.ndarray
    gradients: np.ndarray
    values: np.ndarray  # a subsample of pixel values for the pooled histogram
    shapes: Counter
    channels: Counter
    spacings: list[tuple[float, ...]]
    modalities: Counter
    ndim: int


def input_stats(images: Any, spacings: list[tuple[float, ...]] | None = None,
                modalities: list[str] | None = None, max_values: int = 200_000, seed: int = 0) -> InputStats:
    """Statistics of a stack (N, C, H, W[, D]) or a list of (C, ...) arrays."""
    arrays = list(images) if not isinstance(images, np.ndarray) else [images[i] for i in range(len(images))]
    if not arrays:
        raise InputError("monitor: no images")
    ndims = {a.ndim - 1 for a in arrays}
    if len(ndims) != 1:
        raise InputError(f"monitor: images mix dimensionalities {sorted(ndims)}")
    means, stds, grads, vals = [], [], [], []
    rng = np.random.default_rng(seed)
    per = max(1, max_values // len(arrays))
    for a in arrays:
        f = a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else (
            a.astype(np.float64) / 65535.0 if a.dtype == np.uint16 else a.astype(np.float64))
        means.append(f.mean())
        stds.append(f.std())
        grads.append(np.abs(np.diff(f, axis=-1)).mean() if f.shape[-1] > 1 else 0.0)
        flat = f.ravel()
        vals.append(flat if flat.size <= per else rng.choice(flat, per, replace=False))
    return InputStats(
        np.asarray(means), np.asarray(stds), np.asarray(grads), np.concatenate(vals),
        Counter(tuple(a.shape[1:]) for a in arrays), Counter(int(a.shape[0]) for a in arrays),
        list(spacings or []), Counter(modalities or []), ndims.pop(),
    )


def compare_inputs(ref: InputStats, inc: InputStats, bins: int = 32) -> tuple[list[TestResult], dict[str, Any], list[str]]:
    """KS tests on per-image mean / std, histogram distance and hard mismatches (with reasons)."""
    from scipy.stats import ks_2samp

    if ref.ndim != inc.ndim:
        raise InputError(f"monitor: reference images are {ref.ndim}D but incoming images are {inc.ndim}D")
    tests = []
    pairs = (("intensity_mean", ref.means, inc.means), ("intensity_std", ref.stds, inc.stds),
             ("intensity_gradient", ref.gradients, inc.gradients))
    for name, a, b in pairs:
        r = ks_2samp(a, b)
        tests.append(TestResult(name, float(r.statistic), float(r.pvalue),
                                detail={"reference_median": float(np.median(a)), "incoming_median": float(np.median(b))}))
    lo = float(min(ref.values.min(), inc.values.min()))
    hi = float(max(ref.values.max(), inc.values.max()))
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    h_ref = np.histogram(ref.values, edges)[0] / len(ref.values)
    h_inc = np.histogram(inc.values, edges)[0] / len(inc.values)
    info: dict[str, Any] = {
        "histogram_tv_distance": float(0.5 * np.abs(h_ref - h_inc).sum()),
        "histogram": {"edges": [round(float(e), 4) for e in edges], "reference": h_ref.round(5).tolist(),
                      "incoming": h_inc.round(5).tolist()},
        "sizes": {"reference": _top(ref.shapes), "incoming": _top(inc.shapes)},
        "channels": {"reference": _top(ref.channels), "incoming": _top(inc.channels)},
        "modality": {"reference": _top(ref.modalities), "incoming": _top(inc.modalities)},
    }
    reasons = []
    if set(ref.shapes) != set(inc.shapes) and not (set(inc.shapes) <= set(ref.shapes)):
        reasons.append(f"image sizes differ: reference {_top(ref.shapes)}, incoming {_top(inc.shapes)}")
    if set(inc.channels) - set(ref.channels):
        reasons.append(f"channels differ: reference {_top(ref.channels)}, incoming {_top(inc.channels)}")
    known_ref = {m for m in ref.modalities if m and m != "OT"}  # "OT" = other / unknown (e.g. PNG)
    known_inc = {m for m in inc.modalities if m and m != "OT"}
    if known_ref and known_inc and known_inc - known_ref:
        reasons.append(f"modality differs: reference {_top(ref.modalities)}, incoming {_top(inc.modalities)}")
    if ref.spacings and inc.spacings:
        r_med = np.median(np.asarray(ref.spacings, dtype=float), axis=0)
        i_med = np.median(np.asarray(inc.spacings, dtype=float), axis=0)
        info["spacing_mm"] = {"reference_median": r_med.round(4).tolist(), "incoming_median": i_med.round(4).tolist()}
        if r_med.shape == i_med.shape and np.any(np.abs(np.log(i_med / r_med)) > math.log(1.1)):
            reasons.append(f"pixel spacing differs by more than 10%: reference {r_med.tolist()} mm, incoming {i_med.tolist()} mm")
    return tests, info, reasons


def _top(c: Counter, k: int = 3) -> dict[str, int]:
    return {str(key): int(v) for key, v in c.most_common(k)}


# --------------------------------------------------------------------------------------
# all together
# --------------------------------------------------------------------------------------
def monitor(
    reference: np.ndarray,
    incoming: np.ndarray,
    cfg: MonitorConfig | None = None,
    reference_inputs: InputStats | None = None,
    incoming_inputs: InputStats | None = None,
) -> MonitorReport:
    """Compare incoming embeddings (and input statistics, when given) with the reference."""
    cfg = cfg or MonitorConfig()
    x, y = _check_pair(reference, incoming, cfg.min_samples)
    xr, yr = reduce_dims(x, y, cfg.max_dims)
    tests = [
        mmd_permutation_test(xr, yr, cfg.n_perm, cfg.seed),
        ks_test(xr, yr, cfg.alpha),
        classifier_test(xr, yr, cfg.folds, cfg.seed),
    ]
    inputs: dict[str, Any] = {}
    reasons: list[str] = []
    if reference_inputs is not None and incoming_inputs is not None:
        more, inputs, reasons = compare_inputs(reference_inputs, incoming_inputs, cfg.hist_bins)
        tests += more
    for t in tests:
        t.p_adjusted = min(1.0, t.p_value * len(tests))
        t.alarm = t.p_adjusted < cfg.alpha
    reasons = [f"{t.name}: p = {t.p_value:.3g} (adjusted {t.p_adjusted:.3g} < {cfg.alpha})" for t in tests if t.alarm] + reasons
    return MonitorReport(
        verdict="drift" if reasons else "no drift", alpha=cfg.alpha, n_reference=len(x), n_incoming=len(y),
        dim=int(x.shape[1]), tests=tests, inputs=inputs, reasons=reasons,
    )


# --------------------------------------------------------------------------------------
# where the two sides come from: embeddings files, 'medfm embed' folders, bench runs,
# dataset names, folders of image files
# --------------------------------------------------------------------------------------
@dataclass
class Side:
    """One side of a comparison: embeddings (or None until embedded), images for input
    statistics (or None), and where they came from."""

    description: str
    embeddings: np.ndarray | None = None
    images: Any = None
    spacings: list[tuple[float, ...]] = field(default_factory=list)
    modalities: list[str] = field(default_factory=list)
    model: str | None = None
    data_key: str | None = None

    def stats(self) -> InputStats | None:
        if self.images is None:
            return None
        return input_stats(self.images, self.spacings, self.modalities)


IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".dcm")


def _load_npy(path: Any) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read embeddings ({exc})") from exc
    if arr.ndim != 2:
        raise InputError(f"{path}: embeddings must be an (N, D) array, got shape {arr.shape}")
    return arr


def _dataset_side(name: str, split: str, data_dir: str | None, limit: int | None, model: str | None) -> Side:
    from medfm.data import load_dataset

    ds = load_dataset(name, data_dir)
    sd = ds.split(split)
    if sd.images() is not None:
        images: Any = np.asarray(sd.images())
        spacings: list[tuple[float, ...]] = []
        modalities = [ds.card.modality] * len(images)
    else:
        samples = [s for s in sd if s.image is not None]
        images = [np.asarray(s.image.array) for s in samples]
        spacings = [tuple(s.image.spacing) for s in samples]
        modalities = [s.image.modality for s in samples]
    if limit is not None:
        images, spacings, modalities = images[:limit], spacings[:limit], modalities[:limit]
    key = f"{name}/{split}/{sd.checksum()}" + (f":first{limit}" if limit else "")
    return Side(f"dataset {name} ({split}, {len(images)} images)", None, images, spacings, modalities, model, key)


def _folder_side(path: Any, limit: int | None, model: str | None) -> Side:
    import hashlib
    from pathlib import Path

    from medfm.io import read_image

    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_EXTS))
    if limit is not None:
        files = files[:limit]
    if not files:
        raise InputError(f"{root}: no image files (expected {', '.join(IMAGE_EXTS)})")
    images, spacings, modalities = [], [], []
    h = hashlib.sha256()
    for f in files:
        try:
            img = read_image(f)
        except (OSError, ValueError) as exc:
            raise InputError(f"{f}: cannot read image ({exc})") from exc
        images.append(np.asarray(img.array))
        spacings.append(tuple(img.spacing))
        modalities.append(img.modality)
        st = f.stat()
        h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    return Side(f"folder {root} ({len(images)} images)", None, images, spacings, modalities, model, f"folder/{h.hexdigest()[:32]}")


def load_reference(ref: str, split: str = "test", model: str | None = None, data_dir: str | None = None,
                   limit: int | None = None) -> Side:
    """The reference side from an ``(N, D)`` .npy, a ``medfm embed --out`` folder (its model and
    dataset are read from ``manifest.json``), a ``medfm bench`` run (its dataset; ``model`` or
    the run's first encoder) or a dataset name (needs ``model``)."""
    import json
    from pathlib import Path

    p = Path(ref).expanduser()
    if p.suffix == ".npy" and not p.is_file():
        raise InputError(f"{p}: file not found")
    if p.suffix == ".npy":
        return Side(f"embeddings {p}", _load_npy(p)[:limit], model=model)
    if p.is_dir() and (p / "manifest.json").is_file():
        man = json.loads((p / "manifest.json").read_text())
        splits = man.get("splits", {})
        name = split if split in splits else next(iter(splits), None)
        if name is None or not (p / f"{name}.npy").is_file():
            raise InputError(f"{p}: manifest.json lists no embeddings file for split '{split}'")
        side = Side(f"embeddings {p / f'{name}.npy'}", _load_npy(p / f"{name}.npy")[:limit], model=model or man.get("model_arg"))
        try:  # the images behind the embeddings, for input statistics
            ds_side = _dataset_side(str(man["dataset"]), name, data_dir, man.get("limit") or limit, side.model)
            side.images, side.spacings, side.modalities = ds_side.images, ds_side.spacings, ds_side.modalities
        except (KeyError, MedfmError, OSError):  # data not at hand: embeddings only
            pass
        return side
    if p.is_dir() and (p / "results.json").is_file():
        from medfm.results import read_results

        _, records = read_results(p / "results.json")
        if not records:
            raise InputError(f"{p}: results.json holds no records")
        encoders = [r.model for r in records if not r.model.startswith("scratch/")]
        chosen = model or (encoders[0] if encoders else None)
        if chosen is None:
            raise InputError(f"{p}: the run has only from-scratch models; name an encoder with --model")
        side = _dataset_side(records[0].dataset, split, data_dir, limit, chosen)
        side.description = f"run {p}: " + side.description
        return side
    if p.exists():
        raise InputError(f"{p}: not an embeddings .npy, a 'medfm embed' folder or a 'medfm bench' run")
    if model is None:
        raise InputError(f"reference '{ref}' is a dataset name: name the encoder with --model")
    return _dataset_side(ref, split, data_dir, limit, model)


def load_incoming(inc: str, split: str = "test", model: str | None = None, data_dir: str | None = None,
                  limit: int | None = None) -> Side:
    """The incoming side: an ``(N, D)`` .npy, a folder of image files, or a dataset name."""
    from pathlib import Path

    p = Path(inc).expanduser()
    if p.suffix == ".npy" and not p.is_file():
        raise InputError(f"{p}: file not found")
    if p.suffix == ".npy":
        return Side(f"embeddings {p}", _load_npy(p)[:limit], model=model)
    if p.is_dir():
        return _folder_side(p, limit, model)
    if p.exists():
        raise InputError(f"{p}: not an embeddings .npy or a folder of images")
    return _dataset_side(inc, split, data_dir, limit, model)


def embed_side(side: Side, model: Any, cache: Any = None, batch_size: int = 64) -> np.ndarray:
    """Embeddings of a side's images with ``model`` (an adapter), through the embedding cache."""
    from medfm.models.embed import embed_arrays, embed_cached

    if side.embeddings is not None:
        return side.embeddings
    if side.images is None:
        raise InputError(f"{side.description}: neither embeddings nor images")
    ndims = {np.asarray(a).ndim - 1 for a in side.images}
    if ndims != {model.card.input_ndim}:
        raise InputError(
            f"{side.description}: images are {sorted(ndims)}D but model {model.card.id} takes {model.card.input_ndim}D images"
        )
    if cache is not None and side.data_key:
        side.embeddings = np.asarray(embed_cached(model, side.images, side.data_key, cache=cache, batch_size=batch_size))
    else:
        side.embeddings = embed_arrays(model, side.images, batch_size=batch_size, progress=False)
    return side.embeddings


def monitor_sources(reference: Side, incoming: Side, cfg: MonitorConfig | None = None, cache: Any = None) -> MonitorReport:
    """Embed what needs embedding (with the reference's model) and run ``monitor``."""
    cfg = cfg or MonitorConfig()
    need = reference.embeddings is None or incoming.embeddings is None
    if need:
        name = reference.model or incoming.model
        if name is None:
            raise InputError("monitor: images must be embedded but no model is known; pass --model")
        from medfm.models import create_model

        adapter = create_model(name)
        adapter.require("image_encoder", "medfm monitor")
        embed_side(reference, adapter, cache)
        embed_side(incoming, adapter, cache)
    ref_stats, inc_stats = reference.stats(), incoming.stats()
    both = ref_stats is not None and inc_stats is not None
    rep = monitor(reference.embeddings, incoming.embeddings, cfg, ref_stats if both else None, inc_stats if both else None)
    rep.inputs["reference"] = reference.description
    rep.inputs["incoming"] = incoming.description
    if not both:
        rep.inputs["note"] = "input statistics skipped: images are known for one side only (or neither)"
    return rep
