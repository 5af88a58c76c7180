"""FedAvg on 5 BreastMNIST sites (Dirichlet alpha 0.5) vs centralised vs each site alone, and DP-SGD.

    MEDFM_DATA=../shared/data python benchmarks/trust_federated.py --rounds 40 --dp-epsilon 1,3,8

Issue goal: federated test AUROC >= 95% of the centralised one and above the mean single site.
Prints each arm's test AUROC with its 95% bootstrap CI, the ratio and the privacy-utility points
(per-site epsilon from Opacus' accountant). Same small CNN and the same best-round-on-val rule
for every arm; the split and the training are seeded.
"""

from __future__ import annotations

import argparse
import os
import sys

from medfm.cli.main import main as medfm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--strategy", default="fedavg")
    ap.add_argument("--dp-epsilon", default="")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    args = ["federated", "--dataset", "breastmnist", "--sites", "5", "--alpha", "0.5", "--rounds", str(a.rounds),
            "--local-epochs", str(a.local_epochs), "--strategy", a.strategy]
    if os.environ.get("MEDFM_DATA"):
        args += ["--data-dir", os.environ["MEDFM_DATA"]]
    if a.dp_epsilon:
        args += ["--dp-epsilon", a.dp_epsilon]
    if a.out:
        args += ["--out", a.out, "--force"]
    sys.exit(medfm(args))


if __name__ == "__main__":
    main()
