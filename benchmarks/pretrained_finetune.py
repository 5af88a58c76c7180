"""Fine-tuning the pip-packaged pretrained 2D encoders on BreastMNIST, recipe chosen on validation.

Issue 15's goal: a pretrained model reaching test AUROC >= 0.92 on BreastMNIST (MedMNIST v2,
28 px: ResNet-18 0.901, AutoML 0.919). Each (model, recipe) of a small grid (full / LoRA
fine-tuning x learning rate, ``medfm``'s ``finetune`` protocol, images upsampled to ``--size``,
flip + shift augmentation) is trained with seed 0 and scored on the VALIDATION split only; the
recipe with the best validation AUROC is then the only one whose test AUROC is read (with a
95% stratified bootstrap CI), for ``--seeds`` seeds, and the random-init twin of the same
architecture is trained with exactly that recipe. Printed: the validation grid, the chosen
recipe, test AUROC (mean over seeds, CI of seed 0), the gap to the goal and to the twin.

    MEDFM_DATA=../shared/data OMP_NUM_THREADS=1 nice -n 10 python benchmarks/pretrained_finetune.py \
        --models imagenet/efficientnet-lite0 --size 128 --epochs 12 --results lite0.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import time
from pathlib import Path

import numpy as np

GOAL = 0.92


def parse_grid(text: str) -> list[dict]:
    """``method:lr[:rank],...`` -> finetune overrides, e.g. ``full:1e-4,lora:1e-3:8``."""
    grid = []
    for item in text.split(","):
        parts = item.strip().split(":")
        cfg = {"method": parts[0], "lr": float(parts[1])}
        if len(parts) > 2:
            cfg["lora_rank"] = int(parts[2])
        grid.append(cfg)
    return grid


def choose_recipe(rows: list[dict]) -> dict:
    """The grid row with the highest validation AUROC (the first one on ties); test is never read here."""
    if not rows:
        raise ValueError("empty grid")
    return max(rows, key=lambda r: r["val_auroc"])


def resized(adapter, size: int):
    """``adapter`` with its card's 2D preprocessing resizing to ``size`` px (the card is frozen: replaced)."""
    pp = dataclasses.replace(adapter.card.preprocess, size=(size, size))
    adapter.card = dataclasses.replace(adapter.card, preprocess=pp)
    return adapter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="breastmnist")
    ap.add_argument("--models", default="imagenet/efficientnet-lite0")
    ap.add_argument("--grid", default="full:1e-4,full:3e-4,lora:1e-3:8",
                    help="recipes method:lr[:lora rank], tried with seed 0 and compared on validation AUROC")
    ap.add_argument("--size", type=int, default=128, help="upsampled input size (px)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--augment", default="flip_shift")
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--seeds", type=int, default=1, help="seeds for the chosen recipe (test) and its twin")
    ap.add_argument("--no-twin", action="store_true")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--results", type=Path, default=None)
    ap.add_argument("--baseline-val", type=float, default=None,
                    help="best validation AUROC of recipes tried in an earlier run (e.g. another --size): "
                         "when no recipe here beats it, stop without reading test")
    ap.add_argument("--verbose", action="store_true", help="print every epoch's loss and val AUROC")
    args = ap.parse_args()

    from medfm.bench import metric_task
    from medfm.bench.runner import default_context
    from medfm.metrics import classification as cls_metrics
    from medfm.models import create_model
    from medfm.tasks.classification import PROTOCOLS, ImageSplits

    ctx = default_context()
    ds = ctx.dataset(args.dataset, None)
    task = metric_task(ds.card)
    split = {}
    for s in ("train", "val", "test"):
        y = np.asarray(ds.split(s).labels)
        split[s] = (ctx.images(args.dataset, None, s), y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y)
    data = ImageSplits(*split["train"], *split["val"], *split["test"], label_names=tuple(ds.card.labels), task=task)
    proto = PROTOCOLS.get("finetune")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, capture_output=True, text=True).stdout.strip()
    base = {"epochs": args.epochs, "patience": args.patience, "batch_size": args.batch_size, "augment": args.augment,
            "head_lr": args.head_lr, "precision": args.precision,
            "verbose": args.verbose}

    def train(model_id: str, recipe: dict, seed: int):
        adapter = resized(create_model(model_id, precision=args.precision), args.size)
        cfg = proto.make_config(base | recipe)
        t = time.perf_counter()
        preds = proto.run(adapter, data, cfg, seed=seed)
        info = preds.info
        row = {"model": model_id, "recipe": recipe, "seed": seed, "val_auroc": float(info["best_val_auroc"]),
               "best_epoch": info["best_epoch"], "epochs_run": info["epochs"], "seconds": time.perf_counter() - t,
               "trainable_params": info["trainable_params"], "history": info["history"]}
        print(f"[{model_id}] {recipe} seed={seed}: val AUROC {row['val_auroc']:.3f} (best epoch {row['best_epoch']}/"
              f"{row['epochs_run']}), {row['seconds']:.0f} s", flush=True)
        return row, preds

    def test_metric(preds, n_boot: int) -> dict:
        m = cls_metrics.compute_metrics(np.asarray(preds.test_y), np.asarray(preds.test_scores), task,
                                        n_boot=n_boot, seed=0)["auroc"]
        return {"test_auroc": float(m.value), "test_ci": [m.ci_low, m.ci_high], "n_test": len(preds.test_y)}

    out: dict = {"settings": vars(args) | {"results": str(args.results), "commit": commit, "n": {
        s: len(split[s][1]) for s in split}}, "grid": [], "chosen": []}
    for model_id in [m for m in args.models.split(",") if m]:
        grid_rows = []
        kept = {}
        for recipe in parse_grid(args.grid):
            row, preds = train(model_id, recipe, 0)
            grid_rows.append(row)
            kept[json.dumps(recipe)] = preds  # test scores stay unread unless this recipe is chosen
        best = choose_recipe(grid_rows)
        recipe = best["recipe"]
        print(f"[{model_id}] chosen on validation: {recipe} (val AUROC {best['val_auroc']:.3f})", flush=True)
        out["grid"] += grid_rows
        if args.baseline_val is not None and best["val_auroc"] <= args.baseline_val:
            print(f"[{model_id}] no recipe beats the earlier best validation AUROC {args.baseline_val:.3f}: "
                  "test not read, twin not trained", flush=True)
            continue
        twin = "random/" + model_id.split("/", 1)[1]
        for mid in [model_id] + ([] if args.no_twin else [twin]):
            runs = []
            for seed in range(args.seeds):
                if mid == model_id and seed == 0:
                    row, preds = best, kept[json.dumps(recipe)]
                else:
                    row, preds = train(mid, recipe, seed)
                runs.append(row | test_metric(preds, args.n_boot if seed == 0 else 0))
            tests = [r["test_auroc"] for r in runs]
            chosen = {"model": mid, "recipe": recipe, "seeds": len(runs), "test_mean": float(np.mean(tests)),
                      "test_sd": float(np.std(tests)), "test_ci_seed0": runs[0]["test_ci"], "runs": runs,
                      "val_mean": float(np.mean([r["val_auroc"] for r in runs]))}
            out["chosen"].append(chosen)
            ci = chosen["test_ci_seed0"]
            print(f"[{mid}] {recipe}: test AUROC {chosen['test_mean']:.3f}±{chosen['test_sd']:.3f} over {len(runs)} "
                  f"seed(s), 95% CI (seed 0) [{ci[0]:.3f}, {ci[1]:.3f}], val {chosen['val_mean']:.3f}; "
                  f"goal {GOAL}: {chosen['test_mean'] - GOAL:+.3f}", flush=True)
        if len(out["chosen"]) >= 2 and not args.no_twin:
            p, r = out["chosen"][-2], out["chosen"][-1]
            print(f"{model_id} vs twin (same recipe): {p['test_mean'] - r['test_mean']:+.3f} test AUROC, "
                  f"ratio {p['test_mean'] / r['test_mean']:.3f}")
    if args.results:
        args.results.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
