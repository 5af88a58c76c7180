"""Federated training: Dirichlet splits, FedAvg/FedProx, Opacus epsilon vs its accountant, Flower over gRPC."""

from __future__ import annotations

import numpy as np
import pytest

from medfm.errors import InputError
from medfm.tasks.trust import federated as fed


def _toy(n: int = 120, seed: int = 0, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is which half is brighter (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.random((n, 1, size, size)).astype(np.float32) * 0.5
    x[y == 0, :, :, : size // 2] += 0.5
    x[y == 1, :, :, size // 2:] += 0.5
    return x, y


def _splits(seed: int = 0):
    from medfm.tasks.classification import ImageSplits

    (xt, yt), (xv, yv), (xs, ys) = _toy(160, seed), _toy(60, seed + 1), _toy(80, seed + 2)
    return ImageSplits(xt, yt, xv, yv, xs, ys, label_names=("a", "b"), task="binary")


def test_dirichlet_split_partitions_and_skews() -> None:
    y = np.repeat([0, 1, 2], 200)
    for alpha in (0.1, 100.0):
        parts = fed.dirichlet_split(y, 5, alpha, seed=1)
        assert sorted(np.concatenate(parts).tolist()) == list(range(len(y)))
    def skew(alpha: float) -> float:
        parts = fed.dirichlet_split(y, 5, alpha, seed=1)
        return float(np.mean([np.bincount(y[p], minlength=3).max() / max(len(p), 1) for p in parts if len(p)]))
    assert skew(0.1) > skew(100.0) + 0.2
    assert skew(100.0) < 0.45  # near-IID: each site close to a third per class
    sizes_even = [len(p) for p in fed.dirichlet_split(y, 5, 100.0, seed=1)]
    sizes_skew = [len(p) for p in fed.dirichlet_split(y, 5, 100.0, seed=1, size_skew=0.5)]
    assert np.std(sizes_skew) > 2 * np.std(sizes_even)


def test_site_with_no_samples_is_input_error() -> None:
    parts = fed.dirichlet_split(np.repeat([0, 1], 10), 12, 0.05, seed=0)
    assert any(len(p) == 0 for p in parts)
    with pytest.raises(InputError, match=r"site \d+ has 0 training samples"):
        fed.check_sites(parts)


def test_average_is_size_weighted() -> None:
    a = [np.ones(3), np.zeros(2)]
    b = [np.zeros(3), np.ones(2)]
    avg = fed.average([a, b], [3, 1])
    assert np.allclose(avg[0], 0.75) and np.allclose(avg[1], 0.25)


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox"])
def test_run_federated_learns_toy(strategy: str) -> None:
    cfg = fed.FederatedConfig(sites=3, alpha=1.0, rounds=4, strategy=strategy, mu=0.1, lr=3e-3, n_boot=50)
    res = fed.run_federated(_splits(), cfg)
    assert set(res.arms) == {"federated", "centralised", "site_0", "site_1", "site_2"}
    assert sum(res.site_sizes) == 160
    assert res.arms["federated"].metrics["auroc"].value > 0.9
    assert res.arms["centralised"].metrics["auroc"].value > 0.9
    assert 1 <= res.arms["federated"].best_round <= 4 and len(res.arms["federated"].val_auroc) == 4


def test_opacus_epsilon_equals_accountant() -> None:
    import torch
    from opacus.accountants import RDPAccountant

    x, y = _toy(96)
    cfg = fed.FederatedConfig(dp_epsilon=3.0, dp_delta=1e-5, batch_size=16, lr=1e-2)
    torch.manual_seed(0)
    site = fed.Site(x, y, fed.build_cnn(1, 2, 8), cfg, seed=0, epochs_total=3)
    w = fed.get_weights(site.plain)
    for _ in range(3):
        w = site.fit(w, 1)
    reported = site.epsilon()
    sample_rate = 16 / 96
    acc = RDPAccountant()
    acc.history = [(site.noise_multiplier, sample_rate, site.steps())]
    assert site.steps() > 0
    assert reported == pytest.approx(acc.get_epsilon(1e-5), rel=1e-9)
    assert 2.5 < reported <= 3.0 + 0.05  # Opacus calibrated the noise to the target over the planned epochs


def test_flower_two_rounds_two_clients_over_grpc() -> None:
    pytest.importorskip("flwr", reason="Flower (flwr==1.42.*) is not installed")
    x, y = _toy(64)
    cfg = fed.FederatedConfig(sites=2, rounds=2, lr=3e-3)
    run = fed.run_flower_grpc([(x[:32], y[:32]), (x[32:], y[32:])], n_classes=2, rounds=2, cfg=cfg)
    assert run.rounds == 2
    assert [w.shape for w in run.weights] == [w.shape for w in fed.get_weights(fed.build_cnn(1, 2, 8))]
    # the aggregated weights differ from the (same-seed) initial ones: the clients trained
    import torch

    torch.manual_seed(cfg.seed)
    init = fed.get_weights(fed.build_cnn(1, 2, 8))
    assert any(not np.allclose(a, b) for a, b in zip(run.weights, init, strict=True))


@pytest.mark.slow  # ~20 s: a 1-round federated run with DP on BreastMNIST
def test_cli_federated_bad_site_and_small_run(shared_data, tmp_path, capsys) -> None:
    import json

    from medfm.cli.main import main

    base = ["federated", "--dataset", "breastmnist", "--data-dir", str(shared_data), "--n-boot", "0"]
    assert main([*base, "--sites", "40", "--alpha", "0.01"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if line.startswith("medfm: error")]) == 1 and "training samples" in err[-1]
    out = tmp_path / "fed"
    assert main([*base, "--sites", "2", "--rounds", "1", "--no-single-sites", "--dp-epsilon", "8", "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["arms"]) == {"federated/fedavg", "centralised", "federated/fedavg+dp(eps=8)"}
    eps = doc["arms"]["federated/fedavg+dp(eps=8)"]["epsilon_per_site"]
    assert len(eps) == 2 and all(0 < e <= 8.05 for e in eps)
    assert "privacy-utility" in (out / "report.html").read_text()


def test_parse_grid_types_and_bad_keys() -> None:
    from medfm.errors import ConfigError

    g = fed.parse_grid("lr=1e-3, 3e-3; local_epochs=1,2;batch_size=16")
    assert g == {"lr": [1e-3, 3e-3], "local_epochs": [1, 2], "batch_size": [16]}
    assert isinstance(g["local_epochs"][0], int)
    with pytest.raises(ConfigError, match="seed"):
        fed.parse_grid("seed=1,2")
    with pytest.raises(ConfigError, match="bad value"):
        fed.parse_grid("lr=fast")


def test_select_on_val_picks_by_val_and_scores_test_once(monkeypatch) -> None:
    calls = []
    real = fed.score_arm
    monkeypatch.setattr(fed, "score_arm", lambda arm, data, cfg: calls.append(arm.name) or real(arm, data, cfg))
    cfg = fed.FederatedConfig(sites=2, alpha=1.0, rounds=2, n_boot=20)
    # lr 1e-7 cannot learn in 2 rounds: every arm must pick lr 3e-3 on val
    res = fed.select_on_val(_splits(), cfg, {"lr": [1e-7, 3e-3]})
    assert sorted(calls) == sorted(res.arms)  # test scored once per arm, for its chosen point only
    for name, arm in res.arms.items():
        assert arm.chosen == {"lr": 3e-3}, name
        rows = res.selection[name]
        assert [r["lr"] for r in rows] == [1e-7, 3e-3] and rows[1]["val_auroc"] > rows[0]["val_auroc"]
    assert res.config.lr == 3e-3 and res.arms["federated"].metrics["auroc"].value > 0.9
    goal = fed.goal_check(res, _splits().test_y, "binary", n_boot=50)
    r = goal["ratio_to_centralised"]
    assert r["ci"][0] <= r["value"] <= r["ci"][1] and r["met"] == (r["value"] >= 0.95)
    assert "minus_mean_single_site" in goal


def test_linear_head_on_features_with_dp() -> None:
    from medfm.tasks.classification import FeatureSplits

    rng = np.random.default_rng(0)

    def feats(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        z = rng.normal(size=(n, 16)).astype(np.float32)
        z[:, 0] += 2.0 * (2 * y - 1)
        return z / np.linalg.norm(z, axis=1, keepdims=True), y

    (a, b), (c, d), (e, f) = feats(300), feats(100), feats(100)
    data = FeatureSplits(a, b, c, d, e, f, label_names=("a", "b"), task="binary")
    assert isinstance(fed.build_model(a, 2), __import__("torch").nn.Linear)
    cfg = fed.FederatedConfig(sites=2, alpha=1.0, rounds=3, lr=0.5, optimizer="sgd", dp_epsilon=8.0, batch_size=32,
                              centralised=False, single_sites=False, n_boot=0)
    res = fed.run_federated(data, cfg)
    arm = res.arms["federated"]
    assert arm.metrics["auroc"].value > 0.85
    assert all(0 < e <= 8.05 for e in arm.epsilon)


def _feature_splits(n_train: int = 300, seed: int = 0, scale: float = 1.0):
    """Features where dimension 0 carries the class; ``scale`` shrinks every dimension (as L2-normalising does)."""
    from medfm.tasks.classification import FeatureSplits

    rng = np.random.default_rng(seed)

    def feats(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        z = rng.normal(size=(n, 16)).astype(np.float32) + 3.0
        z[:, 0] += 2.0 * (2 * y - 1)
        return (z * scale).astype(np.float32), y

    (a, b), (c, d), (e, f) = feats(n_train), feats(100), feats(100)
    return FeatureSplits(a, b, c, d, e, f, label_names=("a", "b"), task="binary")


def _flower_aggregate(strategy, glob: list[np.ndarray], local: list[list[np.ndarray]], sizes: list[int], rnd: int):
    import flwr.common as flc

    ok = flc.Status(flc.Code.OK, "")
    results = [(None, flc.FitRes(ok, flc.ndarrays_to_parameters(w), n, {})) for w, n in zip(local, sizes, strict=True)]
    params, _ = strategy.aggregate_fit(rnd, results, [])
    return flc.parameters_to_ndarrays(params)


@pytest.mark.parametrize("strategy", ["fedavgm", "fedadam", "fedavg"])
def test_server_optimizer_matches_flower(strategy: str) -> None:
    """Our server step equals Flower's FedAvgM / FedAdam / FedAvg over three rounds of the same site updates."""
    pytest.importorskip("flwr", reason="Flower (flwr==1.42.*) is not installed")
    from flwr.common import ndarrays_to_parameters
    from flwr.server import strategy as st

    rng = np.random.default_rng(0)
    glob = [rng.normal(size=(2, 3)), rng.normal(size=2)]
    cfg = fed.FederatedConfig(strategy=strategy, server_lr=0.5 if strategy != "fedadam" else 0.1, server_momentum=0.8)
    init = ndarrays_to_parameters(glob)
    if strategy == "fedadam":
        flower = st.FedAdam(initial_parameters=init, eta=cfg.server_lr, beta_1=cfg.server_momentum,
                            beta_2=fed.ADAM_BETA2, tau=fed.ADAM_TAU)
    else:
        flower = st.FedAvgM(initial_parameters=init, server_learning_rate=cfg.server_lr,
                            server_momentum=cfg.server_momentum if strategy == "fedavgm" else 0.0)
    ours = fed.ServerOptimizer(cfg)
    sizes = [3, 5]
    for rnd in (1, 2, 3):
        local = [[w + rng.normal(scale=0.3, size=w.shape) + 0.2 for w in glob] for _ in sizes]
        avg = fed.average(local, sizes)
        new = ours.step(glob, avg)
        ref = _flower_aggregate(flower, glob, local, sizes, rnd)
        for a, b in zip(new, ref, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
        if rnd > 1 and strategy != "fedavg":  # momentum: not just a scaled average any more
            plain = [g - cfg.server_lr * (g - m) for g, m in zip(glob, avg, strict=True)]
            assert any(not np.allclose(a, b) for a, b in zip(new, plain, strict=True))
        glob = new


def test_server_optimizer_steps_and_plain_fedavg_is_the_average() -> None:
    glob, avg = [np.zeros(2)], [np.ones(2)]
    assert np.array_equal(fed.ServerOptimizer(fed.FederatedConfig()).step(glob, avg)[0], avg[0])
    m = fed.ServerOptimizer(fed.FederatedConfig(strategy="fedavgm", server_lr=1.0, server_momentum=0.5))
    w1 = m.step(glob, avg)  # momentum = -1: w = 1
    w2 = m.step(w1, [w1[0] + 1])  # momentum = 0.5 * -1 + -1 = -1.5: w = 2.5
    assert np.allclose(w1[0], 1.0) and np.allclose(w2[0], 2.5)


def test_fedadam_changes_training_on_features() -> None:
    """The server optimiser is not a no-op: the same sites and seed give other weights and val curve."""
    data = _feature_splits()
    base = fed.FederatedConfig(sites=3, alpha=1.0, rounds=5, lr=0.1, optimizer="sgd", centralised=False,
                               single_sites=False, n_boot=0, score_test=False)
    plain = fed.run_federated(data, base).arms["federated"]
    adam = fed.run_federated(data, fed.FederatedConfig(**{**base.__dict__, "strategy": "fedadam", "server_lr": 0.1})).arms["federated"]
    assert plain.val_auroc != adam.val_auroc
    assert any(not np.allclose(a, b) for a, b in zip(plain.weights, adam.weights, strict=True))


def test_pooled_moments_equal_pooling() -> None:
    rng = np.random.default_rng(1)
    parts = [rng.normal(loc=i, size=(n, 4)) for i, n in enumerate((5, 17, 40))]
    mean, std = fed.pooled_mean_std([fed.moments(p) for p in parts])
    allx = np.concatenate(parts)
    np.testing.assert_allclose(mean, allx.mean(0), rtol=1e-10)
    np.testing.assert_allclose(std, allx.std(0) + 1e-6, rtol=1e-8)


def test_standardise_uses_each_arms_own_statistics_and_helps_tiny_features() -> None:
    """Federated and centralised heads carry the pooled train statistics, a site its own; on features scaled
    down to ~1e-3 a small lr learns only after standardising."""
    data = _feature_splits(scale=1e-3)
    cfg = fed.FederatedConfig(sites=2, alpha=1.0, rounds=3, lr=0.05, optimizer="sgd", standardise=True, n_boot=20)
    res = fed.run_federated(data, cfg)
    keys = ["0.mean", "0.std", "1.weight", "1.bias"]
    assert len(res.arms["federated"].weights) == len(keys)
    mean, std = data.train_x.mean(0), data.train_x.std(0)
    for arm in ("federated", "centralised"):
        np.testing.assert_allclose(res.arms[arm].weights[0], mean, rtol=1e-4)
        np.testing.assert_allclose(res.arms[arm].weights[1], std + 1e-6, rtol=1e-3)
    parts = fed.dirichlet_split(data.train_y, 2, 1.0, cfg.seed)
    np.testing.assert_allclose(res.arms["site_1"].weights[0], data.train_x[parts[1]].mean(0), rtol=1e-4)
    assert res.arms["federated"].metrics["auroc"].value > 0.9  # scored through a rebuilt model with the same buffers
    off = fed.run_federated(data, fed.FederatedConfig(**{**cfg.__dict__, "standardise": False}))
    assert off.arms["federated"].metrics["auroc"].value < res.arms["federated"].metrics["auroc"].value - 0.1


def test_parse_grid_server_keys_and_bad_values() -> None:
    from medfm.errors import ConfigError

    g = fed.parse_grid("strategy=fedavg,fedadam;server_lr=0.1,1;standardise=false,true")
    assert g == {"strategy": ["fedavg", "fedadam"], "server_lr": [0.1, 1.0], "standardise": [False, True]}
    with pytest.raises(ConfigError, match="bad value"):
        fed.parse_grid("standardise=maybe")
    with pytest.raises(ConfigError, match="strategy must be one of"):
        fed.select_on_val(_splits(), fed.FederatedConfig(rounds=1), {"strategy": ["fedavg", "fedsgd"]})
    with pytest.raises(ConfigError, match="server_lr"):
        fed.FederatedConfig(server_lr=0.0)


def test_select_on_val_scores_a_chosen_standardise_point() -> None:
    """Scoring on test rebuilds each arm's model as chosen (with its Standardise layer when that point won)."""
    data = _feature_splits(scale=1e-3)
    cfg = fed.FederatedConfig(sites=2, alpha=1.0, rounds=2, lr=0.05, optimizer="sgd", single_sites=False, n_boot=0)
    res = fed.select_on_val(data, cfg, {"standardise": [False, True]})
    assert res.arms["federated"].chosen == {"standardise": True} and res.config.standardise
    assert res.arms["federated"].metrics["auroc"].value > 0.9
