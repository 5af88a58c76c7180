"""Federated training across sites that keep their images: FedAvg / FedProx, optional DP-SGD.

``dirichlet_split`` makes non-IID sites: each class's training images are shared among the
sites with proportions drawn from Dirichlet(alpha) (small alpha = strong label skew); with
``size_skew`` the sites' sizes are skewed too (a second Dirichlet over sites).

``run_federated(data, cfg)`` trains a small CNN (no batch norm, so that Opacus can clip
per-sample gradients) and reports test AUROC with bootstrap CIs for the federated model, the
centralised model (all training images in one place, same epochs) and each site alone. The
global model of every round is scored on the validation split and the best round is kept
(the same rule for every arm). Each round every site starts from the global weights, trains
``local_epochs`` (FedProx adds (mu / 2) ||w - w_global||^2 to its loss), and the server
averages the weights weighted by the sites' sizes (McMahan et al. 2017). The server may treat
"global minus average" as a pseudo-gradient and step along it with its own optimiser (Reddi et al.
2021, "Adaptive federated optimization"): ``server_lr`` scales the step, ``fedavgm`` adds server
momentum (Hsu et al. 2019), ``fedadam`` is Adam on the server; the formulas are Flower's
``FedAvgM`` / ``FedAdam`` (``ServerOptimizer``), so a simulated and a gRPC run agree.

With ``cfg.dp_epsilon`` each site trains with Opacus DP-SGD (per-sample clipping at
``max_grad_norm``, Gaussian noise calibrated by Opacus to reach ``dp_epsilon`` at ``dp_delta``
over all its local steps); the per-site epsilon reported is the one Opacus' accountant gives.

Frozen features: when the splits hold embeddings (N, D) instead of images, each site trains a
linear head on them (``embed_splits`` computes L2-normalised embeddings of a frozen encoder,
per sample, so no statistic crosses sites). DP-SGD on a linear head over frozen features is the
standard remedy for DP's utility loss (Tramer & Boneh 2021; De et al. 2022). With
``standardise`` the head first standardises each feature with the mean / variance of the arm's
training data; a federation gets them from the sites' summed moments (count, sum, sum of
squares: the same numbers as pooling, without sharing a sample), the centralised arm from all
training images, a single site from its own. The statistics are buffers of the model, so they
travel with its weights. They are not privatised: under DP-SGD the reported epsilon covers the
training steps only, so ``standardise`` is switched off in DP runs.

``select_on_val(data, cfg, grid)`` tunes every arm on the validation split only: each arm
(federated, centralised, each site) is trained at every grid point (e.g. ``lr`` x
``local_epochs``; for DP also ``max_grad_norm`` x ``batch_size``), keeps the point with its best
validation AUROC, and only that one is scored on test (once).

``FlowerSite`` wraps one site as a Flower ``NumPyClient`` (the same local training), and
``run_flower_grpc`` runs server and clients over gRPC on loopback (Flower 1.42 API).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medfm.errors import ConfigError, InputError

STRATEGIES = ("fedavg", "fedprox", "fedavgm", "fedadam")
ADAM_BETA2, ADAM_TAU = 0.99, 1e-3  # FedAdam (Reddi et al. 2021: tau 1e-3 works across their tasks)


@dataclass
class FederatedConfig:
    """``sites``, Dirichlet ``alpha`` (label skew), ``size_skew`` (None = sizes follow the
    label split only; a number = Dirichlet concentration over site sizes), ``rounds``,
    ``local_epochs``, ``strategy`` fedavg | fedprox (with ``mu``) | fedavgm | fedadam, the server's
    ``server_lr`` and ``server_momentum`` (FedAvgM's momentum, FedAdam's beta1); local ``optimizer``
    adam | sgd (momentum 0.9), kept across rounds at each site unless ``reset_optimizer``; ``standardise``
    features with the arm's pooled moments; DP: ``dp_epsilon`` (None = off), ``dp_delta``,
    ``max_grad_norm``; optimiser ``lr`` / ``batch_size``; ``n_boot`` for CIs."""

    sites: int = 5
    alpha: float = 0.5
    size_skew: float | None = None
    rounds: int = 20
    local_epochs: int = 1
    strategy: str = "fedavg"
    mu: float = 0.01
    server_lr: float = 1.0
    server_momentum: float = 0.9
    standardise: bool = False
    lr: float = 1e-3
    optimizer: str = "adam"
    reset_optimizer: bool = False
    batch_size: int = 32
    dp_epsilon: float | None = None
    dp_delta: float = 1e-5
    max_grad_norm: float = 1.0
    single_sites: bool = True
    centralised: bool = True
    n_boot: int = 1000
    score_test: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"federated: strategy must be one of {STRATEGIES}, got '{self.strategy}'")
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"federated: optimizer must be adam or sgd, got '{self.optimizer}'")
        if self.sites < 1 or self.rounds < 1 or self.local_epochs < 1 or self.batch_size < 1:
            raise ConfigError("federated: sites, rounds, local_epochs and batch_size must be >= 1")
        if self.alpha <= 0 or (self.size_skew is not None and self.size_skew <= 0):
            raise ConfigError(f"federated: alpha and size_skew must be positive (got {self.alpha}, {self.size_skew})")
        if self.server_lr <= 0 or not 0 <= self.server_momentum < 1:
            raise ConfigError(f"federated: server_lr must be positive and server_momentum in [0, 1) "
                              f"(got {self.server_lr}, {self.server_momentum})")
        if self.dp_epsilon is not None and self.dp_epsilon <= 0:
            raise ConfigError(f"federated: dp_epsilon must be positive, got {self.dp_epsilon}")


def dirichlet_split(y: np.ndarray, sites: int, alpha: float, seed: int = 0, size_skew: float | None = None) -> list[np.ndarray]:
    """Indices of each site: per class, a Dirichlet(alpha) share of that class's samples.

    ``size_skew`` additionally multiplies each site's class shares by a Dirichlet(size_skew)
    site weight (renormalised per class), so some sites end up much larger than others.
    Sites may come out empty at small alpha; ``check_sites`` refuses that.
    """
    y = np.asarray(y).reshape(-1).astype(np.int64)
    rng = np.random.default_rng(seed)
    weight = rng.dirichlet(np.full(sites, size_skew)) if size_skew is not None else np.ones(sites)
    parts: list[list[int]] = [[] for _ in range(sites)]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        p = rng.dirichlet(np.full(sites, alpha)) * weight
        p = p / p.sum()
        cuts = (np.cumsum(p)[:-1] * len(idx)).round().astype(int)
        for s, chunk in enumerate(np.split(idx, cuts)):
            parts[s].extend(chunk.tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def check_sites(parts: list[np.ndarray], min_samples: int = 1) -> None:
    """A site with fewer than ``min_samples`` training images is an InputError naming it."""
    for i, p in enumerate(parts):
        if len(p) < min_samples:
            raise InputError(
                f"federated: site {i} has {len(p)} training samples (needs at least {min_samples}); "
                "raise alpha / size_skew, use fewer sites, or change the seed"
            )


# --------------------------------------------------------------------------------------
# model and local training
# --------------------------------------------------------------------------------------
def build_model(x: np.ndarray, n_classes: int, standardise: bool = False) -> Any:
    """The model for these inputs: a linear head on features (N, D) (after ``Standardise`` when
    ``standardise``), else ``build_cnn`` on images."""
    from torch import nn

    if x.ndim == 2:
        head = nn.Linear(x.shape[1], n_classes)
        return nn.Sequential(_standardise_module(x.shape[1]), head) if standardise else head
    return build_cnn(x.shape[1], n_classes, x.shape[-1])


def _standardise_module(dim: int) -> Any:
    """(x - mean) / std with mean and std as buffers (not trained; set by ``set_standardisation``)."""
    import torch
    from torch import nn

    class Standardise(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.zeros(dim))
            self.register_buffer("std", torch.ones(dim))

        def forward(self, x: Any) -> Any:
            return (x - self.mean) / self.std

    return Standardise()


def moments(x: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """What one site shares for standardisation: its count, per-feature sum and sum of squares."""
    x = np.asarray(x, dtype=np.float64)
    return len(x), x.sum(axis=0), (x * x).sum(axis=0)


def pooled_mean_std(site_moments: list[tuple[int, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the union of the sites from their summed moments (equal to pooling the data)."""
    n = float(sum(m[0] for m in site_moments))
    mean = sum(m[1] for m in site_moments) / n
    var = np.maximum(sum(m[2] for m in site_moments) / n - mean * mean, 0.0)
    return mean, np.sqrt(var) + 1e-6


def set_standardisation(model: Any, mean: np.ndarray, std: np.ndarray) -> None:
    """Load ``mean`` / ``std`` into the model's ``Standardise`` layer."""
    import torch

    model[0].mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
    model[0].std.copy_(torch.as_tensor(std, dtype=torch.float32))


def build_cnn(in_channels: int, n_classes: int, size: int) -> Any:
    """A small CNN without batch norm (Opacus needs per-sample gradients): 2 conv blocks + MLP."""
    from torch import nn

    feat = 32 * (size // 4) ** 2
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(feat, 64), nn.ReLU(), nn.Linear(64, n_classes),
    )


def _tensor(x: np.ndarray) -> Any:
    import torch

    t = torch.as_tensor(np.ascontiguousarray(x))
    if x.ndim == 2:  # features: used as they are (embed_splits normalises them per sample)
        return t.float()
    t = t.float() / 255.0 if x.dtype == np.uint8 else t.float()
    return (t - 0.5) / 0.5


def get_weights(model: Any) -> list[np.ndarray]:
    """The model's state as numpy arrays (Flower's parameter format), in state-dict order."""
    return [v.detach().cpu().numpy().copy() for v in model.state_dict().values()]


def set_weights(model: Any, weights: list[np.ndarray]) -> None:
    import torch

    keys = list(model.state_dict().keys())
    if len(keys) != len(weights):
        raise InputError(f"federated: {len(weights)} weight arrays for a model with {len(keys)}")
    model.load_state_dict({k: torch.as_tensor(w) for k, w in zip(keys, weights, strict=True)}, strict=True)


def average(weights: list[list[np.ndarray]], sizes: list[int]) -> list[np.ndarray]:
    """FedAvg: per-array mean weighted by the sites' sample counts."""
    total = float(sum(sizes))
    return [sum(w[i] * (n / total) for w, n in zip(weights, sizes, strict=True)) for i in range(len(weights[0]))]


class ServerOptimizer:
    """The server's step from the global weights towards the sites' average (module doc), as Flower computes it:
    fedavg / fedprox: w - server_lr * (w - avg) (the average itself at server_lr 1); fedavgm: the same with momentum
    (``FedAvgM``: m = momentum * m + (w - avg)); fedadam: ``FedAdam`` (beta1 = server_momentum, its bias-corrected step)."""

    def __init__(self, cfg: FederatedConfig) -> None:
        self.strategy, self.lr, self.beta1 = cfg.strategy, cfg.server_lr, cfg.server_momentum
        self.m: list[np.ndarray] | None = None
        self.v: list[np.ndarray] | None = None
        self.round = 0

    def step(self, glob: list[np.ndarray], avg: list[np.ndarray]) -> list[np.ndarray]:
        self.round += 1
        if self.strategy == "fedadam":
            delta = [a - g for g, a in zip(glob, avg, strict=True)]
            self.m = [self.beta1 * m + (1 - self.beta1) * d for m, d in zip(self.m or [0 * d for d in delta], delta, strict=True)]
            self.v = [ADAM_BETA2 * v + (1 - ADAM_BETA2) * d * d for v, d in zip(self.v or [0 * d for d in delta], delta, strict=True)]
            eta = self.lr * math.sqrt(1 - ADAM_BETA2 ** (self.round + 1)) / (1 - self.beta1 ** (self.round + 1))
            return [g + eta * m / (np.sqrt(v) + ADAM_TAU) for g, m, v in zip(glob, self.m, self.v, strict=True)]
        pseudo = [g - a for g, a in zip(glob, avg, strict=True)]
        if self.strategy == "fedavgm" and self.beta1 > 0:
            self.m = pseudo if self.m is None else [self.beta1 * m + p for m, p in zip(self.m, pseudo, strict=True)]
            pseudo = self.m
        if self.lr == 1.0 and self.strategy != "fedavgm":
            return [np.asarray(a) for a in avg]
        return [g - self.lr * p for g, p in zip(glob, pseudo, strict=True)]


class Site:
    """One site's private data and optimiser state; ``fit(global_weights)`` = one round of local training."""

    def __init__(self, x: np.ndarray, y: np.ndarray, model: Any, cfg: FederatedConfig, seed: int, epochs_total: int) -> None:
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        if len(y) == 0:
            raise InputError("federated: a site with no samples")
        self.n = int(len(y))
        self.cfg = cfg
        gen = torch.Generator().manual_seed(seed)
        ds = TensorDataset(_tensor(x), torch.as_tensor(np.asarray(y), dtype=torch.long))
        self.loader = DataLoader(ds, batch_size=min(cfg.batch_size, self.n), shuffle=True, generator=gen)
        self.model = copy.deepcopy(model)
        if cfg.optimizer == "sgd":
            self.opt = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=0.9)
        else:
            self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.engine = None
        self.noise_multiplier: float | None = None
        if cfg.dp_epsilon is not None:
            from opacus import PrivacyEngine

            self.engine = PrivacyEngine(accountant="rdp", secure_mode=False)
            self.model, self.opt, self.loader = self.engine.make_private_with_epsilon(
                module=self.model, optimizer=self.opt, data_loader=self.loader, target_epsilon=cfg.dp_epsilon,
                target_delta=cfg.dp_delta, epochs=epochs_total, max_grad_norm=cfg.max_grad_norm,
            )
            self.noise_multiplier = float(self.opt.noise_multiplier)

    @property
    def plain(self) -> Any:
        """The underlying module (Opacus wraps it in a GradSampleModule)."""
        return getattr(self.model, "_module", self.model)

    def fit(self, global_weights: list[np.ndarray], epochs: int, mu: float = 0.0) -> list[np.ndarray]:
        import torch
        import torch.nn.functional as F

        set_weights(self.plain, global_weights)
        if self.cfg.reset_optimizer:  # else each site keeps its optimiser state across rounds (a stateful client)
            getattr(self.opt, "original_optimizer", self.opt).state.clear()
        anchor = [torch.as_tensor(w) for w in global_weights] if mu > 0 else None
        params = list(self.plain.state_dict().keys())
        named = dict(self.plain.named_parameters())
        self.model.train()
        for _ in range(epochs):
            for xb, yb in self.loader:
                if len(yb) == 0:  # Poisson sampling (DP) can draw an empty batch
                    continue
                self.opt.zero_grad()
                loss = F.cross_entropy(self.model(xb), yb)
                if anchor is not None:
                    prox = sum(((named[k] - a) ** 2).sum() for k, a in zip(params, anchor, strict=True) if k in named)
                    loss = loss + 0.5 * mu * prox
                loss.backward()
                self.opt.step()
        return get_weights(self.plain)

    def epsilon(self) -> float | None:
        return None if self.engine is None else float(self.engine.get_epsilon(self.cfg.dp_delta))

    def steps(self) -> int:
        if self.engine is None:
            return 0
        return int(sum(n for _, _, n in self.engine.accountant.history))


def _probs(model: Any, x: np.ndarray) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        return torch.softmax(model(_tensor(x)), dim=1).numpy().astype(np.float64)


def _auroc(y: np.ndarray, p: np.ndarray, task: str) -> float:
    from medfm.metrics.classification import point_metric

    v = point_metric("auroc", y, p, task)
    return v if math.isfinite(v) else -1.0


# --------------------------------------------------------------------------------------
# the benchmark: federated vs centralised vs each site alone
# --------------------------------------------------------------------------------------
@dataclass
class ArmResult:
    """One arm: its test metrics (with CIs), the chosen round, val AUROC per round, privacy."""

    name: str
    metrics: dict[str, Any]
    best_round: int
    val_auroc: list[float]
    n_train: int
    epsilon: list[float | None] = field(default_factory=list)
    noise_multiplier: list[float | None] = field(default_factory=list)
    seconds: float = 0.0
    best_val_auroc: float = float("nan")
    chosen: dict[str, Any] = field(default_factory=dict)  # the grid point select_on_val kept
    weights: list[np.ndarray] | None = field(default=None, repr=False)  # best-round weights (not stored)
    test_scores: np.ndarray | None = field(default=None, repr=False)  # test probabilities (for paired CIs)


@dataclass
class FederatedResult:
    """Arms (``federated``, ``centralised``, ``site_0``...), the site sizes and label counts."""

    config: FederatedConfig
    arms: dict[str, ArmResult]
    site_sizes: list[int]
    site_label_counts: list[list[int]]
    selection: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # arm -> [{point, val_auroc}]

    def ratio_to_centralised(self, metric: str = "auroc") -> float | None:
        if "centralised" not in self.arms:
            return None
        return float(self.arms["federated"].metrics[metric].value / self.arms["centralised"].metrics[metric].value)


def _train_arm(name: str, site_data: list[tuple[np.ndarray, np.ndarray]], data: Any, cfg: FederatedConfig,
               rounds: int, mu: float) -> ArmResult:
    """Rounds of (local training at each site, size-weighted average); best round on val."""
    import torch

    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    std_on = _standardised(data, cfg)
    model = build_model(data.train_x, data.n_classes, std_on)
    if std_on:  # the arm's own training data: the sites' summed moments
        set_standardisation(model, *pooled_mean_std([moments(x) for x, _ in site_data]))
    sites = [Site(x, y, model, cfg, cfg.seed + 1000 * i, rounds * cfg.local_epochs) for i, (x, y) in enumerate(site_data)]
    glob = get_weights(model)
    server = ServerOptimizer(cfg)
    best = (-math.inf, 0, glob)
    vals = []
    for r in range(rounds):
        local = [s.fit(glob, cfg.local_epochs, mu) for s in sites]
        glob = server.step(glob, average(local, [s.n for s in sites])) if len(sites) > 1 else local[0]
        set_weights(model, glob)
        v = _auroc(data.val_y, _probs(model, data.val_x), data.task)
        vals.append(round(v, 4))
        if v > best[0]:
            best = (v, r + 1, glob)
    arm = ArmResult(name, {}, best[1], vals, sum(s.n for s in sites), [s.epsilon() for s in sites],
                    [s.noise_multiplier for s in sites], time.perf_counter() - t0, best_val_auroc=float(best[0]), weights=best[2])
    if cfg.score_test:
        score_arm(arm, data, cfg)
    return arm


def _standardised(data: Any, cfg: FederatedConfig) -> bool:
    """Whether this arm's head standardises its features (features only, never under DP: module doc)."""
    return bool(cfg.standardise and cfg.dp_epsilon is None and np.asarray(data.train_x).ndim == 2)


def score_arm(arm: ArmResult, data: Any, cfg: FederatedConfig) -> ArmResult:
    """Test metrics (bootstrap CIs) of the arm's best-round weights, filled into ``arm.metrics``."""
    from medfm.metrics.classification import compute_metrics

    model = build_model(data.train_x, data.n_classes, _standardised(data, cfg))
    set_weights(model, arm.weights)
    arm.test_scores = _probs(model, data.test_x)
    arm.metrics = compute_metrics(data.test_y, arm.test_scores, data.task, n_boot=cfg.n_boot, seed=cfg.seed)
    return arm


def goal_check(result: FederatedResult, test_y: np.ndarray, task: str, n_boot: int = 1000, seed: int = 0,
               ratio: float = 0.95) -> dict[str, Any]:
    """The issue's goal with paired bootstrap CIs over the test set (all arms resampled together):
    federated / centralised AUROC (met when >= ``ratio``) and federated minus the mean single-site AUROC (> 0)."""
    from medfm.metrics.bootstrap import bootstrap_cis
    from medfm.metrics.classification import point_metric

    names = [n for n in ("federated", "centralised") if n in result.arms] + sorted(n for n in result.arms if n.startswith("site_"))
    if any(result.arms[n].test_scores is None for n in names):
        raise ConfigError("federated: goal_check needs scored arms (score_test)")
    c = result.arms[names[0]].test_scores.shape[1]
    stacked = np.hstack([result.arms[n].test_scores for n in names])
    col = {n: slice(i * c, (i + 1) * c) for i, n in enumerate(names)}
    sites = [n for n in names if n.startswith("site_")]

    def auc(y: np.ndarray, st: np.ndarray, n: str) -> float:
        return point_metric("auroc", y, st[:, col[n]], task)

    fns: dict[str, Any] = {}
    if "centralised" in col:
        fns["ratio_to_centralised"] = lambda y, st: auc(y, st, "federated") / auc(y, st, "centralised")
    if sites:
        fns["minus_mean_single_site"] = lambda y, st: auc(y, st, "federated") - float(np.mean([auc(y, st, n) for n in sites]))
    y = np.asarray(test_y).reshape(-1)
    cis = bootstrap_cis(fns, y, stacked, n_boot=n_boot, seed=seed, stratify=y) if n_boot else {}
    out: dict[str, Any] = {}
    for k, fn in fns.items():
        v = float(fn(y, stacked))
        ci = cis.get(k)
        out[k] = {"value": v, "ci": [ci.low, ci.high] if ci else None}
    if "ratio_to_centralised" in out:
        out["ratio_to_centralised"]["met"] = out["ratio_to_centralised"]["value"] >= ratio
        out["ratio_to_centralised"]["target"] = ratio
    if "minus_mean_single_site" in out:
        out["minus_mean_single_site"]["met"] = out["minus_mean_single_site"]["value"] > 0
    return out


def run_federated(data: Any, cfg: FederatedConfig | None = None) -> FederatedResult:
    """Federated (``cfg.strategy``) vs centralised vs single sites on ``data`` (an ``ImageSplits``)."""
    cfg = cfg or FederatedConfig()
    if data.task == "multilabel":
        raise ConfigError("federated: label-skew splits need single-label classes")
    if data.train_x.ndim != 2 and (data.train_x.ndim != 4 or data.train_x.shape[-1] != data.train_x.shape[-2]
                                   or data.train_x.shape[-1] % 4):
        raise InputError(f"federated: needs features (N, D) or square 2D images with a side divisible by 4, "
                         f"got {data.train_x.shape[1:]}")
    parts = dirichlet_split(data.train_y, cfg.sites, cfg.alpha, cfg.seed, cfg.size_skew)
    check_sites(parts)
    site_data = [(data.train_x[p], data.train_y[p]) for p in parts]
    mu = cfg.mu if cfg.strategy == "fedprox" else 0.0
    arms = {"federated": _train_arm("federated", site_data, data, cfg, cfg.rounds, mu)}
    plain = dataclasses.replace(cfg, dp_epsilon=None)  # the comparison arms train without DP
    if cfg.centralised:
        arms["centralised"] = _train_arm("centralised", [(data.train_x, data.train_y)], data, plain,
                                         cfg.rounds * cfg.local_epochs, 0.0)
    if cfg.single_sites:
        for i, sd in enumerate(site_data):
            arms[f"site_{i}"] = _train_arm(f"site_{i}", [sd], data, plain, cfg.rounds * cfg.local_epochs, 0.0)
    counts = [np.bincount(np.asarray(y, dtype=np.int64), minlength=data.n_classes).tolist() for _, y in site_data]
    return FederatedResult(cfg, arms, [len(p) for p in parts], counts)


GRID_KEYS = ("lr", "local_epochs", "rounds", "max_grad_norm", "batch_size", "optimizer", "mu", "strategy", "server_lr",
             "server_momentum", "standardise", "reset_optimizer")


def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise ValueError(f"not a boolean: {text!r}")
    return t in ("true", "1", "yes", "on")


def parse_grid(text: str | None) -> dict[str, list[Any]]:
    """``"lr=1e-3,3e-3;local_epochs=1,2"`` -> ``{"lr": [0.001, 0.003], "local_epochs": [1, 2]}`` (typed by the config field)."""
    if not text:
        return {}
    types = {f.name: f.type for f in dataclasses.fields(FederatedConfig)}
    grid: dict[str, list[Any]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, vals = part.partition("=")
        key = key.strip()
        if not sep or key not in GRID_KEYS:
            raise ConfigError(f"federated grid: expected KEY=V1,V2 with KEY in {list(GRID_KEYS)}, got {part!r}")
        cast = {"int": int, "float": float, "bool": _bool}.get(str(types[key]), str)
        try:
            grid[key] = [cast(v.strip()) for v in vals.split(",") if v.strip()]
        except ValueError as exc:
            raise ConfigError(f"federated grid: bad value in {part!r} ({exc})") from exc
        if not grid[key]:
            raise ConfigError(f"federated grid: no values for {key!r}")
    return grid


def select_on_val(data: Any, cfg: FederatedConfig, grid: dict[str, list[Any]] | None = None,
                  log: Any = None) -> FederatedResult:
    """Every arm tuned over ``grid`` on the validation split, then scored on test once (module doc).

    The split into sites depends only on ``cfg.seed``, so every grid point sees the same sites.
    The federated arm's chosen point becomes ``result.config``; each arm's is in ``arm.chosen``
    and the whole table (val AUROC per point) in ``result.selection``.
    """
    import itertools

    grid = {k: list(v) for k, v in (grid or {}).items() if v}
    bad = sorted(set(grid) - set(GRID_KEYS))
    if bad:
        raise ConfigError(f"federated: cannot tune {bad} (tunable: {list(GRID_KEYS)})")
    points = [dict(zip(grid, vals, strict=True)) for vals in itertools.product(*grid.values())] or [{}]
    for point in points:  # a bad value (e.g. strategy=fedsgd) fails before any training
        dataclasses.replace(cfg, **point)
    best: dict[str, tuple[float, dict[str, Any], ArmResult]] = {}
    table: dict[str, list[dict[str, Any]]] = {}
    first: FederatedResult | None = None
    for point in points:
        run_cfg = dataclasses.replace(cfg, score_test=False, **point)
        res = run_federated(data, run_cfg)
        first = first or res
        for name, arm in res.arms.items():
            table.setdefault(name, []).append({**point, "val_auroc": round(arm.best_val_auroc, 4), "best_round": arm.best_round})
            if name not in best or arm.best_val_auroc > best[name][0]:
                best[name] = (arm.best_val_auroc, point, arm)
        if log is not None:
            log(f"grid {point}: val AUROC " + ", ".join(f"{k} {a.best_val_auroc:.3f}" for k, a in res.arms.items()))
    assert first is not None
    arms = {}
    for name, (_, point, arm) in best.items():
        arm.chosen = dict(point)
        arms[name] = score_arm(arm, data, dataclasses.replace(cfg, **point))  # e.g. its standardise setting
    chosen_cfg = dataclasses.replace(cfg, **best["federated"][1])
    return FederatedResult(chosen_cfg, arms, first.site_sizes, first.site_label_counts, table)


def embed_splits(data: Any, encoder: str, dataset_key: str, splits: dict[str, Any]) -> Any:
    """``data`` (ImageSplits) with images replaced by the frozen ``encoder``'s L2-normalised embeddings.

    ``splits`` maps train/val/test to the dataset's split objects (their checksums key the cache).
    Normalising each embedding on its own keeps every site's inputs private (no pooled statistics).
    """
    from medfm.models import create_model
    from medfm.models.embed import EmbeddingCache, embed_cached

    adapter = create_model(encoder)
    adapter.require("image_encoder", "medfm federated --encoder")
    cache = EmbeddingCache()
    z = {}
    for name, x in (("train", data.train_x), ("val", data.val_x), ("test", data.test_x)):
        imgs = np.asarray(x)
        if imgs.ndim == 4 and imgs.shape[1] == 1:
            imgs = imgs[:, 0]
        e = np.asarray(embed_cached(adapter, imgs, f"{dataset_key}/{name}/{splits[name].checksum()}", cache=cache),
                       dtype=np.float32)
        z[name] = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    from medfm.tasks.classification import FeatureSplits

    return FeatureSplits(z["train"], data.train_y, z["val"], data.val_y, z["test"], data.test_y,
                         label_names=data.label_names, task=data.task)


# --------------------------------------------------------------------------------------
# Flower: the same site as a NumPyClient, server + clients over gRPC on loopback
# --------------------------------------------------------------------------------------
def _no_telemetry() -> None:
    """Flower sends usage events to its servers unless FLWR_TELEMETRY_ENABLED=0; medfm runs offline
    and keeps sites' activity private, so it is off unless the user set the variable."""
    import os

    if "FLWR_TELEMETRY_ENABLED" not in os.environ:
        os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
        import flwr.supercore.telemetry as tel

        tel.FLWR_TELEMETRY_ENABLED = "0"


def flower_client(site: Site, epochs: int) -> Any:
    """A Flower ``NumPyClient`` training ``site`` (FedProx's mu comes in the fit config)."""
    from medfm._optional import optional_import

    fl = optional_import("flwr")

    class FlowerSite(fl.client.NumPyClient):
        def get_parameters(self, config: dict) -> list[np.ndarray]:
            return get_weights(site.plain)

        def fit(self, parameters: list[np.ndarray], config: dict) -> tuple[list[np.ndarray], int, dict]:
            w = site.fit(parameters, epochs, float(config.get("proximal_mu", 0.0)))
            eps = site.epsilon()
            return w, site.n, {} if eps is None else {"epsilon": eps}

    return FlowerSite()


def run_flower_grpc(site_data: list[tuple[np.ndarray, np.ndarray]], n_classes: int, rounds: int = 2,
                    cfg: FederatedConfig | None = None, port: int | None = None, timeout: float = 120.0) -> FlowerRun:
    """Flower server and one client per site, over gRPC on 127.0.0.1; returns the final weights."""
    import socket
    import threading

    import torch

    from medfm._optional import optional_import

    fl = optional_import("flwr")
    _no_telemetry()
    cfg = cfg or FederatedConfig(sites=len(site_data), rounds=rounds)
    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    torch.manual_seed(cfg.seed)
    model = build_model(site_data[0][0], n_classes)
    sites = [Site(x, y, model, cfg, cfg.seed + 1000 * i, rounds * cfg.local_epochs) for i, (x, y) in enumerate(site_data)]
    init = fl.common.ndarrays_to_parameters(get_weights(model))
    kw = {"fraction_fit": 1.0, "fraction_evaluate": 0.0, "min_fit_clients": len(sites), "min_available_clients": len(sites),
          "initial_parameters": init}
    st = fl.server.strategy
    if cfg.strategy == "fedprox":
        base, extra = st.FedProx, {"proximal_mu": cfg.mu}
    elif cfg.strategy == "fedadam":
        base, extra = st.FedAdam, {"eta": cfg.server_lr, "eta_l": cfg.lr, "beta_1": cfg.server_momentum,
                                   "beta_2": ADAM_BETA2, "tau": ADAM_TAU}
    elif cfg.strategy == "fedavgm" or cfg.server_lr != 1.0:
        base, extra = st.FedAvgM, {"server_learning_rate": cfg.server_lr,
                                   "server_momentum": cfg.server_momentum if cfg.strategy == "fedavgm" else 0.0}
    else:
        base, extra = st.FedAvg, {}
    final: dict[str, Any] = {}

    class Recording(base):  # keeps the last aggregated weights (start_server returns only the history)
        def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
            params, metrics = super().aggregate_fit(server_round, results, failures)
            if params is not None:
                final["weights"] = fl.common.parameters_to_ndarrays(params)
                final["round"] = server_round
            return params, metrics

    strategy = Recording(**extra, **kw)
    address = f"127.0.0.1:{port}"
    errors: list[BaseException] = []

    server_done = threading.Event()

    def refused(exc: BaseException) -> bool:  # the server thread is not listening yet
        import grpc

        return isinstance(exc, grpc.RpcError) and exc.code() == grpc.StatusCode.UNAVAILABLE

    def client(i: int) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fl.client.start_client(server_address=address, client=flower_client(sites[i], cfg.local_epochs).to_client())
                return
            except BaseException as exc:  # surfaced below (the server stops waiting for clients, see Bounded)
                if refused(exc) and not server_done.is_set() and time.monotonic() < deadline:
                    time.sleep(0.2)  # a client started before the server listens: connect again
                    continue
                errors.append(exc)
                return

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(len(sites))]
    for t in threads:
        t.start()
    class Bounded(fl.server.client_manager.SimpleClientManager):  # Flower waits a day for missing clients by default
        def wait_for(self, num_clients: int, timeout: int = 86400) -> bool:
            deadline = time.monotonic() + min(timeout, wait)
            while time.monotonic() < deadline and not errors:
                if super().wait_for(num_clients, timeout=1):
                    return True
            return False

    wait = timeout
    try:
        history = fl.server.start_server(server_address=address, strategy=strategy, client_manager=Bounded(),
                                         config=fl.server.ServerConfig(num_rounds=rounds, round_timeout=timeout))
    finally:
        server_done.set()
    for t in threads:
        t.join(timeout)
    if errors:
        raise errors[0]
    if "weights" not in final:
        raise InputError("federated: the Flower server finished without aggregating a round")
    return FlowerRun(history, final["weights"], int(final["round"]), [s.epsilon() for s in sites])


@dataclass
class FlowerRun:
    """What ``run_flower_grpc`` returns: Flower's history, the final global weights, rounds done, per-site epsilon."""

    history: Any
    weights: list[np.ndarray]
    rounds: int
    epsilon: list[float | None]
