"""Calibration goals on a bench run: ECE after temperature scaling <= before, conformal coverage
within 2 points of the target, for every cell.

    medfm bench --out runs/breast                     # the default benchmark (BreastMNIST)
    MEDFM_DATA=../shared/data python benchmarks/trust_calibration.py runs/breast --alpha 0.1

Prints one line per cell (temperature, ECE before -> after, test coverage vs 1 - alpha, share
predicted under abstention), the two counts the issue's goals are about, and the same read per
model (mean over its cells). ``--conformal lac,smoothed`` compares the two set constructions on
the same cells (each cell's probabilities are computed once). Everything is fitted on the validation split; the test split is only scored.
"""

from __future__ import annotations

import argparse
import os

from medfm.report.trust import is_calibratable, predictions_for, results_path
from medfm.results import read_results
from medfm.tasks.trust.calibrate import CalibrationConfig, calibrate, summary_row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--conformal", default="lac", help="comma-separated: lac, smoothed")
    a = ap.parse_args()
    _spec, records = read_results(results_path(a.run))
    # the records calibrate_run takes: single-label, at least two classes
    records = [r for r in records if is_calibratable(r)]
    # each cell's val/test probabilities once (stored, or the cell re-run seeded), then every set construction
    probs, moved = [], []
    for r in records:
        p = predictions_for(r, data_dir=os.environ.get("MEDFM_DATA"))
        probs.append((p.val_y, p.val_scores, p.test_y, p.test_scores))
        if p.test_auroc_stored is not None and p.test_auroc_now is not None and abs(p.test_auroc_stored - p.test_auroc_now) > 1e-6:
            moved.append(f"{r.model} {r.protocol} shots {r.shots} seed {r.seed}: {p.test_auroc_stored:.4f} -> {p.test_auroc_now:.4f}")
    print(f"{len(records)} cells; recomputed test AUROC differs from the stored one in {len(moved)}" + "".join(f"\n  {m}" for m in moved))
    for method in a.conformal.split(","):
        print(f"== conformal: {method}")
        cfg = CalibrationConfig(alpha=a.alpha, n_boot=a.n_boot, conformal=method)
        summarise(a, records, [calibrate(*pr, cfg) for pr in probs])


def summarise(a: argparse.Namespace, records, results) -> None:
    per_model: dict[str, list[dict[str, float]]] = {}
    worse = off = outside = 0
    for rec, r in zip(records, results, strict=True):
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
    n = len(records)
    print(f"ECE after <= before in {n - worse} of {n} cells; coverage within 2 points of target in {n - off} of {n}; "
          f"target inside the coverage's exact 95% CI in {n - outside} of {n}")
    for model, rows in per_model.items():
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in ("ece_before", "ece_after", "conformal_coverage")}
        n_worse = sum(r["ece_after"] > r["ece_before"] + 1e-12 for r in rows)
        print(f"model {model:28s} {len(rows):3d} cells  mean ECE {mean['ece_before']:.3f} -> {mean['ece_after']:.3f} "
              f"(rose in {n_worse})  mean coverage {mean['conformal_coverage']:.3f} (target {1 - a.alpha:.2f})")


if __name__ == "__main__":
    main()
