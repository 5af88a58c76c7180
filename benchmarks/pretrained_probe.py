"""Pretrained vs random-init twin vs scratch ResNet-18, at 1 / 4 / 16 / all labels per class.

Issue 15's measurements: BreastMNIST with the pip-packaged 2D encoders (EfficientNet-Lite0
ImageNet, tse-motion's brain-MRI DenseNet-121) and AdrenalMNIST3D (64 cube) with Merlin's CT
encoder, each against the seeded random init of the same architecture and a ResNet-18 trained
from scratch. Frozen embeddings come from medfm's cache (``embed_cached``, bf16 autocast where
the CPU has AMX), exactly as ``medfm bench`` computes them.

For every (model, shots) the protocol (linear probe, kNN, prototype) is chosen on the
validation AUROC (mean over seeds); only then is its test AUROC read. Printed: test AUROC mean
over seeds (95% bootstrap CI of seed 0), the protocol chosen and its val AUROC, and the ratios
pretrained / twin and pretrained / scratch. ``--results`` writes every number as JSON.

    MEDFM_DATA=../shared/data OMP_NUM_THREADS=1 nice -n 10 python benchmarks/pretrained_probe.py \
        --dataset breastmnist --models imagenet/efficientnet-lite0,random/efficientnet-lite0,\
tse/densenet121-mri,random/densenet121-mri --scratch --seeds 3
    ... --dataset adrenalmnist3d_64 --models merlin/i3resnet152-ct,random/i3resnet152-ct --seeds 3

``--train-rows shots`` embeds only the training rows the few-shot draws use (the union over
shots and seeds, plus val and test, in resumable chunks) instead of the whole training split:
the same numbers for 1 / 4 / 16 labels at a fraction of the cost (the 64^3 CT encoder runs
~1.5 volumes/s on one free core); "all" then needs the default ``--train-rows all``. The
prototype probe is left out there: it centres on the mean of the whole training split.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

PROBES = ("linear_probe", "knn", "prototype")
SUBSET_PROBES = ("linear_probe", "knn")  # need only the drawn rows (prototype centres on all train rows)


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    s = np.asarray(s)
    if s.ndim == 2 and s.shape[1] == 2:
        s = s[:, 1]
    if s.ndim == 2:
        return float(roc_auc_score(y, s, multi_class="ovr"))
    return float(roc_auc_score(y, s))


def _test_metric(y: np.ndarray, s: np.ndarray, task: str, n_boot: int) -> dict:
    from medfm.metrics import classification as cls_metrics

    m = cls_metrics.compute_metrics(y, s, task, n_boot=n_boot, seed=0)["auroc"]
    return {"value": float(m.value), "ci": [getattr(m, "ci_low", None), getattr(m, "ci_high", None)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="breastmnist")
    ap.add_argument("--models", default="imagenet/efficientnet-lite0,random/efficientnet-lite0,"
                                        "tse/densenet121-mri,random/densenet121-mri")
    ap.add_argument("--scratch", action="store_true", help="also train the from-scratch ResNet-18 (protocol scratch)")
    ap.add_argument("--shots", default="1,4,16,all")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per few-shot setting (full data: 1)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--results", type=Path, default=None)
    ap.add_argument("--train-rows", choices=("all", "shots"), default="all",
                    help="embed the whole training split, or only the rows the few-shot draws use")
    ap.add_argument("--chunk", type=int, default=2048,
                    help="images per cached chunk (resume granularity); keep it the same across reruns")
    args = ap.parse_args()

    from medfm.bench import Cell, metric_task, parse_shots
    from medfm.bench.runner import default_context
    from medfm.bench.spec import shots_value
    from medfm.models.embed import embed_cached
    from medfm.tasks.classification import PROTOCOLS, FeatureSplits, ImageSplits
    from medfm.tasks.classification.data import subsample_shots

    ctx = default_context()
    ds = ctx.dataset(args.dataset, None)
    task = metric_task(ds.card)
    shots = [shots_value(s) for s in parse_shots(args.shots)]
    names = tuple(ds.card.labels)
    labels = {}
    for s in ("train", "val", "test"):
        y = np.asarray(ds.split(s).labels)
        labels[s] = y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y

    rows: list[dict] = []
    timing: dict[str, float] = {}

    def run_protocol(model: str, proto_name: str, data, k, seed: int, adapter=None, draw_k=None):
        """``draw_k``: the k-shot draw the protocol makes itself ("same": ``k``; None: ``data``
        already holds exactly the drawn rows); ``k`` is what gets recorded."""
        proto = PROTOCOLS.get(proto_name)
        cfg = proto.make_config({})
        t = time.perf_counter()
        draw = k if draw_k == "same" else draw_k
        preds = proto.run(data, cfg, seed=seed, shots=draw) if adapter is None else proto.run(adapter, data, cfg, seed=seed, shots=draw)
        val = _auroc(labels["val"], preds.val_scores) if preds.val_scores is not None else float("nan")
        test = _test_metric(np.asarray(preds.test_y), np.asarray(preds.test_scores), task, args.n_boot if seed == 0 else 0)
        return {"model": model, "protocol": proto_name, "shots": k, "seed": seed, "val_auroc": val,
                "test_auroc": test["value"], "test_ci": test["ci"], "seconds": time.perf_counter() - t}

    draws = {(k, seed): subsample_shots(labels["train"], k, seed, n_classes=len(names))
             for k in shots if k is not None for seed in range(args.seeds)}
    if args.train_rows == "shots" and None in shots:
        raise SystemExit("--train-rows shots embeds only few-shot rows: drop 'all' from --shots")
    for model in [m for m in args.models.split(",") if m]:
        t0 = time.perf_counter()
        feats = {}
        if args.train_rows == "all" and args.chunk == 2048:
            for split in ("train", "val", "test"):
                cell = Cell(dataset=args.dataset, model=model, protocol="linear_probe", shots=None, seed=0,
                            precision=args.precision, batch_size=args.batch_size)
                feats[split] = ctx.features(cell, split)
            train_pos = None
        else:  # the same cache keys as ``ctx.features``, in chunks of --chunk (an entry with another chunk size is redone)
            adapter = ctx.adapter(model, args.precision)
            used = np.unique(np.concatenate(list(draws.values()))) if args.train_rows == "shots" else None
            for split in ("val", "test", "train"):
                data_split = ds.split(split)
                imgs = ctx.images(args.dataset, None, split)
                key = f"{args.dataset}/{split}/{data_split.checksum()}"
                if split == "train" and used is not None:
                    imgs = imgs[used]
                    key += "/rows-" + hashlib.sha256(used.astype(np.int64).tobytes()).hexdigest()[:16]
                feats[split] = np.asarray(embed_cached(adapter, imgs, key, chunk_size=args.chunk,
                                                       batch_size=args.batch_size, precision=args.precision))
            train_pos = None if used is None else {int(r): i for i, r in enumerate(used)}
        timing[f"embed {model}"] = time.perf_counter() - t0
        print(f"[{model}] embeddings train {feats['train'].shape} in {timing[f'embed {model}']:.0f} s", flush=True)
        for k in shots:
            for seed in range(args.seeds if k is not None else 1):
                if train_pos is None:
                    tr_x, tr_y, draw_k = feats["train"], labels["train"], k
                else:  # exactly the rows the protocol's own k-shot draw would take
                    pos = [train_pos[int(r)] for r in draws[(k, seed)]]
                    tr_x, tr_y, draw_k = feats["train"][pos], labels["train"][draws[(k, seed)]], None
                data = FeatureSplits(tr_x, tr_y, feats["val"], labels["val"], feats["test"], labels["test"],
                                     label_names=names, task=task)
                for p in PROBES if train_pos is None else SUBSET_PROBES:
                    rows.append(run_protocol(model, p, data, k, seed, draw_k=draw_k))
    if args.scratch:
        imgs = {s: ctx.images(args.dataset, None, s) for s in ("train", "val", "test")}
        data = ImageSplits(imgs["train"], labels["train"], imgs["val"], labels["val"], imgs["test"], labels["test"],
                           label_names=names, task=task)
        t0 = time.perf_counter()
        for k in shots:
            for seed in range(args.seeds if k is not None else 1):
                rows.append(run_protocol("scratch/resnet18", "scratch", data, k, seed, draw_k="same"))
                r = rows[-1]
                print(f"[scratch/resnet18] shots={k or 'all'} seed={seed}: test AUROC {r['test_auroc']:.3f} "
                      f"{r['test_ci']}, val {r['val_auroc']:.3f}, {r['seconds']:.0f} s", flush=True)
        timing["scratch/resnet18"] = time.perf_counter() - t0

    # choose the protocol per (model, shots) on mean val AUROC, then read its test AUROC
    table: dict[tuple[str, object], dict] = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        for k in shots:
            best = None
            for p in dict.fromkeys(r["protocol"] for r in rows if r["model"] == model):
                sel = [r for r in rows if r["model"] == model and r["protocol"] == p and r["shots"] == k]
                if not sel:
                    continue
                val = float(np.nanmean([r["val_auroc"] for r in sel])) if any(np.isfinite(r["val_auroc"]) for r in sel) else -1
                cand = {"protocol": p, "val": val, "test": float(np.mean([r["test_auroc"] for r in sel])),
                        "test_sd": float(np.std([r["test_auroc"] for r in sel])), "ci": sel[0]["test_ci"], "n": len(sel)}
                if best is None or cand["val"] > best["val"]:
                    best = cand
            if best is not None:
                table[(model, k)] = best

    print(f"\n{args.dataset}: test AUROC of the protocol chosen on val (mean over seeds; 95% CI of seed 0)")
    print(f"{'model':32s} {'shots':>5s}  {'test AUROC':>10s}  {'95% CI':>15s}  {'protocol':12s} {'val':>6s}")
    for (model, k), b in table.items():
        ci = b["ci"]
        ci_s = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci and ci[0] is not None else "-"
        print(f"{model:32s} {k or 'all'!s:>5s}  {b['test']:.3f}±{b['test_sd']:.3f}  {ci_s:>15s}  {b['protocol']:12s} {b['val']:.3f}")
    pretrained = [m for m in dict.fromkeys(r["model"] for r in rows) if not m.startswith(("random/", "scratch/"))]
    for m in pretrained:
        twin = "random/" + m.split("/", 1)[1]
        for k in shots:
            if (m, k) not in table:
                continue
            parts = [f"{m} shots={k or 'all'}"]
            if (twin, k) in table:
                parts.append(f"vs twin {table[(m, k)]['test'] - table[(twin, k)]['test']:+.3f}")
            if ("scratch/resnet18", k) in table:
                parts.append(f"vs scratch {table[(m, k)]['test'] - table[('scratch/resnet18', k)]['test']:+.3f}")
            print("  " + ", ".join(parts))
    for what, sec in timing.items():
        print(f"time {what}: {sec:.0f} s")
    if args.results:
        args.results.write_text(json.dumps({"rows": rows, "timing": timing, "chosen": [
            {"model": m, "shots": k, **b} for (m, k), b in table.items()]}, indent=1, default=str))


if __name__ == "__main__":
    main()
