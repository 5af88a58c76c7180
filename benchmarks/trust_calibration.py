"""Calibration goals on a bench run: ECE after temperature scaling <= before, conformal coverage
within 2 points of the target, for every cell.

    medfm bench --out runs/breast                     # the default benchmark (BreastMNIST)
    MEDFM_DATA=../shared/data python benchmarks/trust_calibration.py runs/breast --alpha 0.1

Prints one line per cell (temperature, ECE before -> after, test coverage vs 1 - alpha, share
predicted under abstention) and the two counts the issue's goals are about. Everything is fitted
on the validation split; the test split is only scored.
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
    a = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="medfm-cal-"))
    res = calibrate_run(a.run, out, CalibrationConfig(alpha=a.alpha, n_boot=a.n_boot), data_dir=os.environ.get("MEDFM_DATA"))
    worse = off = outside = 0
    for rec, r in zip(res.records, res.results, strict=True):
        row = summary_row(r)
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
    print(f"report: {res.report}")


if __name__ == "__main__":
    main()
