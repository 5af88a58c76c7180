"""Calibration goals on a bench run: ECE after temperature scaling <= before, conformal coverage
within 2 points of the target, for every cell.

    medfm bench --out runs/breast                     # the default benchmark (BreastMNIST)
    MEDFM_DATA=../shared/data python benchmarks/trust_calibration.py runs/breast --alpha 0.1

Prints one line per cell (temperature, ECE before -> after, test coverage vs 1 - alpha, share
predicted under abstention), the two counts the issue's goals are about, and the same read per
model (mean over its cells). ``--conformal lac,smoothed`` compares the two set constructions on
the same cells. Everything is fitted on the validation split; the test split is only scored.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from medfm.report.trust import calibrate_run
from medfm.tasks.trust.calibrate import CalibrationConfig, summary_row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--conformal", default="lac", help="comma-separated: lac, smoothed")
    a = ap.parse_args()
    for method in a.conformal.split(","):
        print(f"== conformal: {method}")
        one(a, method)


def one(a: argparse.Namespace, method: str) -> None:
    out = Path(tempfile.mkdtemp(prefix="medfm-cal-"))
    cfg = CalibrationConfig(alpha=a.alpha, n_boot=a.n_boot, conformal=method)
    res = calibrate_run(a.run, out, cfg, data_dir=os.environ.get("MEDFM_DATA"))
    per_model: dict[str, list[dict[str, float]]] = {}
    worse = off = outside = 0
    for rec, r in zip(res.records, res.results, strict=True):
        row = summary_row(r)
        per_model.setdefault(rec.model, []).append(row)
        worse += row["ece_after"] > row["ece_before"] + 1e-12
        off += abs(row["conformal_coverage"] - row["target_coverage"]) > 0.02
        lo, hi = row["conformal_coverage_ci_low"], row["conformal_coverage_ci_high"]
        outside += not lo <= row["target_coverage"] <= hi
        shots = "all" if rec.shots is None else rec.shots
        print(f"{rec.model:24s} {rec.protocol:13s} shots {shots!s:4s} seed {rec.seed}  T {row['temperature']:6.2f}  "
              f"ECE {row['ece_before']:.3f} -> {row['ece_after']:.3f}  coverage {row['conformal_coverage']:.3f} [{lo:.3f}, {hi:.3f}] "
              f"(target {row['target_coverage']:.2f})  predicted {row['conformal_singleton_rate']:.2f}")
    n = len(res.records)
    print(f"ECE after <= before in {n - worse} of {n} cells; coverage within 2 points of target in {n - off} of {n}; "
          f"target inside the coverage's exact 95% CI in {n - outside} of {n}")
    for model, rows in per_model.items():
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("ece_before", "ece_after", "conformal_coverage")}
        n_worse = sum(r["ece_after"] > r["ece_before"] + 1e-12 for r in rows)
        print(f"model {model:28s} {len(rows):3d} cells  mean ECE {mean['ece_before']:.3f} -> {mean['ece_after']:.3f} "
              f"(rose in {n_worse})  mean coverage {mean['conformal_coverage']:.3f} (target {1 - a.alpha:.2f})")
    print(f"report: {res.report}")


if __name__ == "__main__":
    main()
