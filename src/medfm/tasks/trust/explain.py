"""Explanations of a probed classifier, with the sanity checks most tools skip.

The classifier is what medfm probes: a model's image tower (``adapter.trainable_module()``,
preprocessed (N, C, H, W) -> (N, D)) followed by a standardised linear head fitted on the
dataset's training embeddings (logistic regression, C chosen on validation AUROC), so
gradients flow from the class logit to the pixels.

Explainers (``EXPLAINERS``), each ``(classifier, x (N, C, H, W), target (N,)) -> maps (N, H, W)``
at the model's input resolution, non-negative:

- ``gradcam``: Grad-CAM (``pytorch_grad_cam``) at the last convolution (CNNs) or the last
  block's first norm, tokens reshaped to the patch grid (timm ViTs).
- ``integrated_gradients`` / ``occlusion``: Captum attributions, |sum over channels|.
- ``attention_rollout``: Abnar & Zuidema 2020, timm ViTs only (head-mean attention plus
  identity, multiplied through the blocks; the class token's row over the patches).

Sanity checks:

- ``randomisation_test``: Adebayo et al. 2018: re-initialise every weight of the classifier and
  explain again; the Spearman rank correlation of the maps must be low (``passed`` when the mean
  is below ``max_rank_corr``). An explainer that ignores the weights fails it.
- ``deletion_insertion``: remove the most important pixels first (set to the image's mean;
  deletion: the class probability should fall fast, low AUC) or reveal them first onto the
  mean image (insertion: high AUC), compared with random pixel orders.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medfm.errors import ConfigError, InputError

EXPLAINERS = ("gradcam", "integrated_gradients", "occlusion", "attention_rollout")


def _torch() -> Any:
    import torch

    return torch


# --------------------------------------------------------------------------------------
# the classifier: tower + linear head
# --------------------------------------------------------------------------------------
def build_classifier(tower: Any, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> Any:
    """``tower`` then ``(z - mean) / scale`` then a linear layer -> class logits (N, C).

    ``coef`` (C, D) / ``intercept`` (C,); a binary scikit-learn head (1, D) becomes the two
    logits ``[-(w.z + b) / 2, (w.z + b) / 2]`` (same softmax as sklearn's sigmoid; a constant
    class-0 logit would give class-0 predictions all-zero gradient maps).
    """
    torch = _torch()
    from torch import nn

    coef = np.asarray(coef, dtype=np.float32)
    intercept = np.asarray(intercept, dtype=np.float32).reshape(-1)
    if coef.shape[0] == 1:  # symmetric, so that either class's logit has a gradient
        coef = np.vstack([-coef / 2, coef / 2])
        intercept = np.r_[-intercept / 2, intercept / 2].astype(np.float32)

    class Probed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tower = tower
            self.register_buffer("mean", torch.tensor(np.asarray(mean, dtype=np.float32)))
            self.register_buffer("scale", torch.tensor(np.asarray(scale, dtype=np.float32)))
            self.head = nn.Linear(coef.shape[1], coef.shape[0])
            with torch.no_grad():
                self.head.weight.copy_(torch.from_numpy(coef))
                self.head.bias.copy_(torch.from_numpy(intercept))

        def forward(self, x: Any) -> Any:
            z = self.tower(x).float()
            return self.head((z - self.mean) / self.scale)

    return Probed().eval()


def fit_probe(train_z: np.ndarray, train_y: np.ndarray, val_z: np.ndarray, val_y: np.ndarray,
              c_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0), seed: int = 0) -> dict[str, Any]:
    """Standardised logistic regression, C chosen by validation AUROC: mean, scale, coef, intercept, C."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(train_z)
    xt, xv = sc.transform(train_z), sc.transform(val_z)
    best: tuple[float, Any, float] | None = None
    for c in c_grid:
        clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(xt, train_y)
        p = clf.predict_proba(xv)
        try:
            auc = roc_auc_score(val_y, p[:, 1]) if p.shape[1] == 2 else roc_auc_score(val_y, p, multi_class="ovr")
        except ValueError:
            auc = float(np.mean(p.argmax(1) == val_y))
        if best is None or auc > best[0]:
            best = (auc, clf, c)
    assert best is not None
    scale = np.where(sc.scale_ > 0, sc.scale_, 1.0)
    return {"mean": sc.mean_, "scale": scale, "coef": best[1].coef_, "intercept": best[1].intercept_,
            "C": best[2], "val_auroc": float(best[0])}


# --------------------------------------------------------------------------------------
# explainers
# --------------------------------------------------------------------------------------
def _is_timm_vit(model: Any) -> bool:
    tower = getattr(model, "tower", model)
    return hasattr(tower, "blocks") and hasattr(tower, "patch_embed")


def _vit_grid(tower: Any, x: Any) -> tuple[int, ...]:
    gs = getattr(tower.patch_embed, "grid_size", None)
    if gs is None:
        raise ConfigError("attention-based explanation needs a ViT with a fixed patch grid")
    return tuple(int(g) for g in gs)


def _gradcam(model: Any, x: Any, target: np.ndarray) -> np.ndarray:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    from torch import nn

    tower = model.tower
    reshape = None
    if _is_timm_vit(model):
        layer = tower.blocks[-1].norm1
        grid = _vit_grid(tower, x)
        n_prefix = int(getattr(tower, "num_prefix_tokens", 1))

        def reshape(t: Any) -> Any:
            t = t[:, n_prefix:, :]
            return t.reshape(t.shape[0], *grid, t.shape[-1]).movedim(-1, 1)
    else:
        convs = [m for m in tower.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
        if not convs:
            raise ConfigError(
                f"gradcam cannot explain {type(tower).__name__}: it has no convolution and is not a timm ViT; "
                "use --method integrated_gradients or occlusion"
            )
        layer = convs[-1]
    with GradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in target])
    return np.asarray(maps, dtype=np.float32)


def _integrated_gradients(model: Any, x: Any, target: np.ndarray) -> np.ndarray:
    from captum.attr import IntegratedGradients

    torch = _torch()
    attr = IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=torch.as_tensor(target), n_steps=32,
                                                internal_batch_size=64)
    return attr.sum(dim=1).abs().detach().cpu().numpy().astype(np.float32)


def _occlusion(model: Any, x: Any, target: np.ndarray) -> np.ndarray:
    from captum.attr import Occlusion

    torch = _torch()
    spatial = tuple(x.shape[2:])
    win = tuple(max(1, s // 7) for s in spatial)
    stride = tuple(max(1, w // 2) for w in win)
    # one occluded copy per window position (13^3 = 2197 for a 28^3 volume): several per forward
    # pass, up to ~4 M input values per batch, with a progress bar when a person is watching
    per_eval = max(1, min(16, 2**22 // max(1, int(np.prod(x.shape)))))
    attr = Occlusion(model).attribute(x, target=torch.as_tensor(target), sliding_window_shapes=(x.shape[1], *win),
                                      strides=(x.shape[1], *stride), baselines=0.0, perturbations_per_eval=per_eval,
                                      show_progress=sys.stderr.isatty())
    return attr.sum(dim=1).clamp(min=0).detach().cpu().numpy().astype(np.float32)


def _attention_rollout(model: Any, x: Any, target: np.ndarray) -> np.ndarray:
    torch = _torch()
    import torch.nn.functional as F

    if not _is_timm_vit(model):
        raise ConfigError(
            f"attention_rollout cannot explain {type(getattr(model, 'tower', model)).__name__}: it needs a timm ViT "
            "(attention blocks); use --method gradcam, integrated_gradients or occlusion"
        )
    tower = model.tower
    grid = _vit_grid(tower, x)
    n_prefix = int(getattr(tower, "num_prefix_tokens", 1))
    attn: list[Any] = []
    hooks, fused = [], []
    for blk in tower.blocks:
        fused.append(getattr(blk.attn, "fused_attn", False))
        blk.attn.fused_attn = False  # the explicit path exposes the attention probabilities
        hooks.append(blk.attn.attn_drop.register_forward_hook(lambda m, i, o: attn.append(o.detach())))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        for blk, f in zip(tower.blocks, fused, strict=True):
            blk.attn.fused_attn = f
    n_tok = attn[0].shape[-1]
    rollout = torch.eye(n_tok).expand(x.shape[0], n_tok, n_tok).clone()
    for a in attn:
        a = a.mean(dim=1) + torch.eye(n_tok)
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a @ rollout
    cls = rollout[:, 0, n_prefix:].reshape(x.shape[0], 1, *grid)
    up = F.interpolate(cls, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)
    return up[:, 0].cpu().numpy().astype(np.float32)


ExplainFn = Callable[[Any, Any, np.ndarray], np.ndarray]
_FNS: dict[str, ExplainFn] = {
    "gradcam": _gradcam,
    "integrated_gradients": _integrated_gradients,
    "occlusion": _occlusion,
    "attention_rollout": _attention_rollout,
}


def get_explainer(name: str) -> ExplainFn:
    """The explainer called ``name`` (ConfigError with a suggestion on a typo)."""
    if name not in _FNS:
        from medfm._registry import suggest

        raise ConfigError(f"unknown explanation method '{name}'.{suggest(name, sorted(_FNS))}")
    return _FNS[name]


def explain(model: Any, x: Any, method: str, target: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Maps (N, *spatial) float32 >= 0 for ``target`` (default: the predicted class) and the
    targets used. ``x`` is a preprocessed batch on the model's device."""
    torch = _torch()
    fn = get_explainer(method)
    model.eval()
    if target is None:
        with torch.no_grad():
            target = model(x).argmax(dim=1).cpu().numpy()
    maps = fn(model, x, np.asarray(target))
    if maps.shape != (x.shape[0], *x.shape[2:]):
        raise InputError(f"{method}: produced maps of shape {maps.shape} for inputs {tuple(x.shape)}")
    return np.nan_to_num(maps, nan=0.0), np.asarray(target)


# --------------------------------------------------------------------------------------
# sanity checks
# --------------------------------------------------------------------------------------
def randomise_weights(model: Any, seed: int = 0) -> Any:
    """A deep copy of ``model`` with every layer that has ``reset_parameters`` re-initialised
    (Adebayo et al.'s full randomisation: encoder and head alike)."""
    import copy

    torch = _torch()
    rnd = copy.deepcopy(model)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for m in rnd.modules():
            if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                m.reset_parameters()
        for name, p in rnd.named_parameters():  # parameters owned directly (ViT pos_embed, cls_token)
            if "." not in name or name.split(".")[-1] in ("pos_embed", "cls_token", "reg_token"):
                with torch.no_grad():
                    p.normal_(0, 0.02)
    finally:
        torch.random.set_rng_state(gen_state)
    return rnd.eval()


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    ra = rankdata(a.reshape(len(a), -1), axis=1)
    rb = rankdata(b.reshape(len(b), -1), axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))
    return np.where(den > 0, (ra * rb).sum(axis=1) / np.where(den > 0, den, 1.0), 0.0)


@dataclass
class SanityResult:
    """Per-method sanity numbers: mean rank correlation with the randomised model's maps (and
    whether it is below the threshold), deletion / insertion AUCs against the random order."""

    method: str
    rank_corr: float
    rank_corr_per_image: list[float]
    randomisation_passed: bool
    deletion_auc: float | None = None
    deletion_auc_random: float | None = None
    insertion_auc: float | None = None
    insertion_auc_random: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def randomisation_test(model: Any, x: Any, method: str | ExplainFn, max_rank_corr: float = 0.5,
                       seed: int = 0) -> tuple[float, list[float], bool]:
    """Mean Spearman correlation between maps of the model and of its randomised copy (same targets)."""
    fn = get_explainer(method) if isinstance(method, str) else method
    torch = _torch()
    with torch.no_grad():
        target = model(x).argmax(dim=1).cpu().numpy()
    a = fn(model, x, target)
    b = fn(randomise_weights(model, seed), x, target)
    rho = _spearman_rows(np.nan_to_num(a), np.nan_to_num(b))
    return float(rho.mean()), [round(float(r), 4) for r in rho], bool(rho.mean() < max_rank_corr)


def deletion_insertion(model: Any, x: Any, maps: np.ndarray, target: np.ndarray, steps: int = 16,
                       n_random: int = 3, seed: int = 0) -> dict[str, float]:
    """AUC of the target-class probability while pixels are deleted (set to the image's mean)
    or inserted (into the mean image) in the map's order, and the same for random orders."""
    torch = _torch()
    n = x.shape[0]
    spatial = tuple(x.shape[2:])
    n_pix = int(np.prod(spatial))
    dims = tuple(range(2, x.ndim))
    blurred = x.mean(dim=dims, keepdim=True).expand_as(x)  # the image's mean per channel: no spatial evidence
    fractions = np.linspace(0.0, 1.0, steps + 1)
    rng = np.random.default_rng(seed)

    def curve(order: np.ndarray, insert: bool) -> np.ndarray:
        # order: (N, P) pixel indices, most important first -> (N, steps + 1) probabilities
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(n_pix)[None].repeat(n, 0), axis=1)
        probs = []
        for f in fractions:
            keep = torch.from_numpy((ranks < int(round(f * n_pix))).reshape(n, 1, *spatial)).to(x.device)
            img = torch.where(keep, x, blurred) if insert else torch.where(keep, blurred, x)
            with torch.no_grad():
                p = torch.softmax(model(img), dim=1)[torch.arange(n), torch.as_tensor(target)]
            probs.append(p.cpu().numpy())
        return np.stack(probs, axis=1)

    def auc(c: np.ndarray) -> float:
        return float(np.trapezoid(c, fractions, axis=1).mean())

    order = np.argsort(-maps.reshape(n, -1) + 1e-9 * rng.random((n, n_pix)), axis=1)  # random tie-break
    rand = [rng.permuted(np.tile(np.arange(n_pix), (n, 1)), axis=1) for _ in range(n_random)]
    return {
        "deletion_auc": auc(curve(order, False)),
        "deletion_auc_random": float(np.mean([auc(curve(o, False)) for o in rand])),
        "insertion_auc": auc(curve(order, True)),
        "insertion_auc_random": float(np.mean([auc(curve(o, True)) for o in rand])),
    }


def sanity_checks(model: Any, x: Any, method: str, steps: int = 16, max_rank_corr: float = 0.5, seed: int = 0) -> SanityResult:
    """Both sanity checks for one method on one batch."""
    rho, per, ok = randomisation_test(model, x, method, max_rank_corr, seed)
    maps, target = explain(model, x, method)
    di = deletion_insertion(model, x, maps, target, steps=steps, seed=seed)
    return SanityResult(method, rho, per, ok, **di, extra={"max_rank_corr": max_rank_corr, "steps": steps})


# --------------------------------------------------------------------------------------
# a model id (or a bench run) + a dataset -> maps and sanity numbers
# --------------------------------------------------------------------------------------
@dataclass
class ExplainConfig:
    """``methods``: explainers to run; ``n``: images explained (the first n of the split, or the
    given files); ``sanity``: run both sanity checks; ``steps``: deletion / insertion steps;
    ``max_rank_corr``: randomisation-test threshold."""

    methods: tuple[str, ...] = ("gradcam", "integrated_gradients")
    n: int = 8
    split: str = "test"
    sanity: bool = True
    steps: int = 16
    max_rank_corr: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        for m in self.methods:
            get_explainer(m)
        if self.n < 1 or self.steps < 2:
            raise ConfigError(f"explain: n must be >= 1 and steps >= 2 (got {self.n}, {self.steps})")


@dataclass
class Explanation:
    """Maps per method for ``images`` (the source arrays, (C, H, W)), the model-space inputs'
    predicted class and probability, the probe's fit, and the sanity results per method."""

    model: str
    dataset: str
    images: list[np.ndarray]
    names: list[str]
    maps: dict[str, np.ndarray]
    target: np.ndarray
    prob: np.ndarray
    label_names: tuple[str, ...]
    probe: dict[str, Any]
    sanity: dict[str, SanityResult] = field(default_factory=dict)
    sources: list[Any] | None = None  # medfm.io.Image per input file (its geometry for NIfTI maps), else None


def check_explainable(tower: Any, methods: tuple[str, ...], model_id: str) -> None:
    """Fail before any work when a method cannot explain the tower (ConfigError naming both)."""
    from torch import nn

    vit = _is_timm_vit(tower)
    for m in methods:
        get_explainer(m)
        if m == "attention_rollout" and not vit:
            raise ConfigError(f"attention_rollout cannot explain model '{model_id}' ({type(tower).__name__}): it needs a "
                              "timm ViT (attention blocks); use --method gradcam, integrated_gradients or occlusion")
        if m == "gradcam" and not vit and not any(isinstance(x, (nn.Conv2d, nn.Conv3d)) for x in tower.modules()):
            raise ConfigError(f"gradcam cannot explain model '{model_id}' ({type(tower).__name__}): no convolution and "
                              "not a timm ViT; use --method integrated_gradients or occlusion")


def probe_classifier(model_id: str, dataset: str, data_dir: str | None = None, seed: int = 0,
                     methods: tuple[str, ...] = ()) -> tuple[Any, Any, dict[str, Any]]:
    """(adapter, classifier, probe info): the model's tower with a linear probe fitted on the
    dataset's train embeddings (C on val). Models without a differentiable image tower are a ConfigError."""
    from medfm.data import load_dataset
    from medfm.models import create_model
    from medfm.models.embed import EmbeddingCache, embed_cached

    adapter = create_model(model_id)
    adapter.require("image_encoder", "medfm explain")
    try:
        tower = adapter.trainable_module()
    except NotImplementedError as exc:
        raise ConfigError(f"medfm explain cannot explain model '{adapter.card.id}': no differentiable image tower ({exc})") from exc
    check_explainable(tower, methods, adapter.card.id)
    ds = load_dataset(dataset, data_dir)
    if ds.card.task not in ("classification", "ordinal"):
        raise ConfigError(f"medfm explain: dataset '{dataset}' is a {ds.card.task} dataset; the probe needs single-label classes")
    if ds.card.ndim != adapter.card.input_ndim:
        raise ConfigError(f"medfm explain: model '{adapter.card.id}' takes {adapter.card.input_ndim}D inputs but dataset "
                          f"'{dataset}' is {ds.card.ndim}D")
    cache = EmbeddingCache()
    z, y = {}, {}
    for s in ("train", "val"):
        sd = ds.split(s)
        imgs = sd.images() if sd.images() is not None else [smp.image.array for smp in sd]
        z[s] = np.asarray(embed_cached(adapter, imgs, f"{dataset}/{s}/{sd.checksum()}", cache=cache))
        y[s] = np.asarray(sd.labels).reshape(len(z[s]), -1)[:, 0]
    probe = fit_probe(z["train"], y["train"], z["val"], y["val"], seed=seed)
    clf = build_classifier(tower, probe["mean"], probe["scale"], probe["coef"], probe["intercept"]).to(adapter.device)
    clf.float()
    probe = {k: (float(v) if np.isscalar(v) else None) for k, v in probe.items() if k in ("C", "val_auroc")}
    probe["label_names"] = list(ds.card.labels)
    return adapter, clf, probe


def explain_images(model_id: str, dataset: str, images: list[np.ndarray] | None = None, names: list[str] | None = None,
                   cfg: ExplainConfig | None = None, data_dir: str | None = None, sources: list[Any] | None = None) -> Explanation:
    """Explain ``images`` (default: the first ``cfg.n`` of the dataset's ``cfg.split``) with each method;
    2D images or 3D volumes, as the model takes. ``sources``: the files' ``medfm.io.Image`` (NIfTI maps keep their geometry)."""
    from medfm.data import load_dataset

    cfg = cfg or ExplainConfig()
    torch = _torch()
    adapter, clf, probe = probe_classifier(model_id, dataset, data_dir, cfg.seed, cfg.methods)
    if images is None:
        sd = load_dataset(dataset, data_dir).split(cfg.split)
        n = min(cfg.n, len(sd.labels))
        stacked = sd.images()
        arr = stacked[:n] if stacked is not None else [sd[i].image.array for i in range(n)]
        images = [np.asarray(a) for a in arr]
        names = [f"{cfg.split}_{i:04d}" for i in range(n)]
    if not images:
        raise InputError("medfm explain: no images to explain")
    x = adapter.preprocess(list(images)).to(adapter.device).float()
    with torch.no_grad():
        prob = torch.softmax(clf(x), dim=1).cpu().numpy()
    target = prob.argmax(axis=1)
    maps: dict[str, np.ndarray] = {}
    sanity: dict[str, SanityResult] = {}
    for m in cfg.methods:
        maps[m], _ = explain(clf, x, m, target)
        if cfg.sanity:
            rho, per, ok = randomisation_test(clf, x, m, cfg.max_rank_corr, cfg.seed)
            di = deletion_insertion(clf, x, maps[m], target, steps=cfg.steps, seed=cfg.seed)
            sanity[m] = SanityResult(m, rho, per, ok, **di, extra={"max_rank_corr": cfg.max_rank_corr, "steps": cfg.steps})
    return Explanation(adapter.card.id, dataset, list(images), list(names or [f"input_{i}" for i in range(len(images))]),
                       maps, target, prob, tuple(probe["label_names"]), probe, sanity, sources)
