"""FedAvg on 5 BreastMNIST sites (Dirichlet alpha 0.5) vs centralised vs each site alone, and DP-SGD.

    # small CNN on the images; every arm tuned on val over lr x local epochs (best round on val)
    MEDFM_DATA=../shared/data python benchmarks/trust_federated.py
    # linear head on frozen ImageNet EfficientNet-Lite0 embeddings (200 rounds: the problem is convex and the
    # features are cached, so FedAvg is run to convergence; features standardised with the sites' summed
    # moments or not, chosen on val like the rest), with the DP privacy-utility curve
    MEDFM_DATA=../shared/data python benchmarks/trust_federated.py --encoder imagenet/efficientnet-lite0 \\
        --rounds 200 --grid 'lr=0.001,0.01,0.1,1;local_epochs=1,2;standardise=false,true' --optimizer sgd \\
        --dp-epsilon 1,3,8 --dp-grid 'rounds=20,100;lr=0.5,2;max_grad_norm=0.1,1;batch_size=32,64'
    # the server optimiser as a strategy (FedAvgM / FedAdam, Reddi et al. 2021): --strategy fedadam --server-lr 0.1

Issue goal: federated test AUROC >= 95% of the centralised one and above the mean single site.
Every setting is chosen on the validation split only (each arm over the same grid, its best
round on val); the test split is scored once, for the chosen settings. Prints each arm's test
AUROC with its 95% bootstrap CI, the goal with paired bootstrap CIs, and the privacy-utility
points (per-site epsilon from Opacus' accountant).
"""

from __future__ import annotations

import argparse
import os
import sys

from medfm.cli.main import main as medfm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--grid", default="lr=1e-3,3e-3;local_epochs=1,2")
    ap.add_argument("--dp-grid", default="")
    ap.add_argument("--encoder", default="")
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--strategy", default="fedavg")
    ap.add_argument("--server-lr", default="1")
    ap.add_argument("--dp-epsilon", default="")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    args = ["federated", "--dataset", "breastmnist", "--sites", "5", "--alpha", "0.5", "--rounds", str(a.rounds),
            "--strategy", a.strategy, "--server-lr", a.server_lr, "--optimizer", a.optimizer, "--grid", a.grid]
    if os.environ.get("MEDFM_DATA"):
        args += ["--data-dir", os.environ["MEDFM_DATA"]]
    if a.encoder:
        args += ["--encoder", a.encoder]
    if a.dp_epsilon:
        args += ["--dp-epsilon", a.dp_epsilon]
    if a.dp_grid:
        args += ["--dp-grid", a.dp_grid]
    if a.out:
        args += ["--out", a.out, "--force"]
    sys.exit(medfm(args))


if __name__ == "__main__":
    main()
