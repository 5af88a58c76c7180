"""Does self-supervised pretraining on the training images beat the same encoder at random init?

Issue: "BreastMNIST: an encoder pretrained on the training images only, in at most 15 minutes on
2 CPU cores, beats the same architecture at random init by at least 0.05 linear-probe test
AUROC, and lifts the few-shot curve at k <= 10." Also runnable on AdrenalMNIST3D.

    MEDFM_DATA=../shared/data python benchmarks/ssl_breastmnist.py --minutes 15 --method simclr --arch resnet18
    MEDFM_DATA=../shared/data python benchmarks/ssl_breastmnist.py --dataset adrenalmnist3d --minutes 15 \
        --epochs 8 --batch-size 32   # 3D ResNet-18 at 28^3: ~1.7-2.3 min per epoch on 1 thread
    # AdrenalMNIST3D 64^3, 1 / 4 / 16 labels per class, a finished `medfm pretrain` run (docs/pretrained.md):
    #   ~13.5 min per SimCLR epoch on 2 threads of a CPU without AMX
    MEDFM_DATA=../shared/data python benchmarks/ssl_breastmnist.py --dataset adrenalmnist3d_64 \
        --encoder runs/ssl64/pretrain/encoder --shots 1,4,16 --seeds 3

Prints, from one run: linear-probe test AUROC (95% bootstrap CI) of the random-init and the
pretrained encoder, their difference, and the few-shot (``--shots``, default k = 1, 2, 4, 8; ``--seeds`` draws) mean test AUROC
of both. Labels are used only by the probes, never by pretraining. Settings are the run's flags;
no choice is made on the test split: the per-epoch loss and the probes' validation AUROC (at the
C chosen on val) are printed so that settings can be compared on validation only. ``--results``
writes every number as JSON. ``--image-size`` resizes inputs for both encoders (a cheaper 3D run).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="breastmnist")
    ap.add_argument("--method", default="simclr")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", type=Path, default=None, help="keep the pretraining run here (default: a temp folder)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--shots", default="1,2,4,8", help="labels per class of the few-shot draws (comma-separated)")
    ap.add_argument("--image-size", type=int, default=None, help="resize to this size (default: native)")
    ap.add_argument("--precision", default="auto", help="auto | bf16 | fp32 (pretraining)")
    ap.add_argument("--results", type=Path, default=None, help="write the results as JSON here")
    ap.add_argument("--encoder", type=Path, default=None,
                    help="evaluate this finished pretraining (OUT/pretrain/encoder) instead of pretraining again")
    args = ap.parse_args()
    shots = [int(k) for k in args.shots.split(",")]

    from medfm.data import load_dataset
    from medfm.metrics.classification import compute_metrics
    from medfm.models import create_model
    from medfm.models.embed import embed_arrays
    from medfm.models.native import build_native_encoder, native_card, save_native_model
    from medfm.tasks.classification import PROTOCOLS, FeatureSplits
    from medfm.tasks.pretrain import PretrainConfig, pretrain

    ds = load_dataset(args.dataset)
    splits = {s: ds.split(s) for s in ("train", "val", "test")}
    x = {s: sp.images() for s, sp in splits.items()}
    y = {s: np.asarray(sp.labels).reshape(-1) for s, sp in splits.items()}
    task = "multiclass" if len(ds.card.labels) > 2 else "binary"
    ndim, ch = x["train"].ndim - 2, x["train"].shape[1]
    size = args.image_size or x["train"].shape[-1]
    work = args.out or Path(tempfile.mkdtemp(prefix="medfm-ssl-"))

    # the floor: the same architecture, random init (same seed as pretraining starts from)
    torch.manual_seed(0)
    enc = build_native_encoder(args.arch, ch, ndim, size)
    rand_dir = save_native_model(enc, native_card("random/native", args.arch, ch, ndim, size, enc.embed_dim), work / "random")

    cfg = PretrainConfig(method=args.method, arch=args.arch, epochs=args.epochs, minutes=args.minutes,
                         batch_size=args.batch_size, lr=args.lr, image_size=args.image_size, precision=args.precision)
    t0 = time.perf_counter()
    if args.encoder is not None:  # a finished run (same --arch / --image-size): history in the folder above
        hist = json.loads((args.encoder.parent / "pretrain.json").read_text())
        res = SimpleNamespace(folder=args.encoder, losses=hist["losses"], epochs_done=len(hist["losses"]),
                              seconds=hist["seconds"], stopped=hist["stopped"])
    else:
        res = pretrain(x["train"], cfg, work / "pretrain", source=f"{args.dataset}:train")
    print(f"pretraining: {res.epochs_done} epochs in {res.seconds / 60:.1f} min ({res.stopped}); "
          f"loss {res.losses[0]:.3f} -> {res.losses[-1]:.3f}; wall {time.perf_counter() - t0:.0f}s")
    print("loss per epoch: " + " ".join(f"{v:.3f}" for v in res.losses))
    cpu0 = time.process_time()

    results = {}
    for name, folder in (("random-init", rand_dir), ("pretrained", res.folder)):
        model = create_model(str(folder), device="cpu")
        # embed_arrays takes a stacked array of 2D images, or a list of images / volumes (C, D, H, W)
        emb = {s: embed_arrays(model, list(x[s]) if ndim == 3 else x[s], batch_size=256, progress=False) for s in x}
        feats = FeatureSplits(emb["train"], y["train"], emb["val"], y["val"], emb["test"], y["test"],
                              tuple(ds.card.labels), task)
        lp = PROTOCOLS.get("linear_probe")
        pred = lp.run(feats, lp.make_config({}), seed=0, shots=None)
        full = compute_metrics(pred.test_y, pred.test_scores, task, n_boot=1000, seed=0)["auroc"]
        val = compute_metrics(feats.val_y, pred.val_scores, task, n_boot=0)["auroc"].value
        few = {}
        for k in shots:
            vals = []
            for seed in range(args.seeds):
                for proto in ("linear_probe", "prototype"):
                    p = PROTOCOLS.get(proto)
                    pr = p.run(feats, p.make_config({}), seed=seed, shots=k)
                    vals.append((proto, compute_metrics(pr.test_y, pr.test_scores, task, n_boot=0)["auroc"].value,
                                 compute_metrics(feats.val_y, pr.val_scores, task, n_boot=0)["auroc"].value))
            few[k] = {proto: float(np.mean([v for q, v, _ in vals if q == proto])) for proto in ("linear_probe", "prototype")}
            # validation AUROC of the same draws: the only basis for choosing between the two protocols
            few[k].update({f"{proto}_val": float(np.mean([w for q, _, w in vals if q == proto]))
                           for proto in ("linear_probe", "prototype")})
        results[name] = (full, few, val, pred.info["C"])
        print(f"{name:12s} linear probe val AUROC {val:.3f} (C={pred.info['C']:g})  "
              f"test AUROC {full.value:.3f} [{full.ci_low:.3f}, {full.ci_high:.3f}]  "
              + "  ".join(f"k={k}: lp {v['linear_probe']:.3f} (val {v['linear_probe_val']:.3f}) / proto "
                          f"{v['prototype']:.3f} (val {v['prototype_val']:.3f})" for k, v in few.items()))
    gain = results["pretrained"][0].value - results["random-init"][0].value
    print(f"gain (pretrained - random-init) linear-probe test AUROC: {gain:+.3f} (goal >= +0.05)")
    for k in shots:
        g = {p: results["pretrained"][1][k][p] - results["random-init"][1][k][p] for p in ("linear_probe", "prototype")}
        print(f"few-shot k={k}: gain linear probe {g['linear_probe']:+.3f}, prototype {g['prototype']:+.3f}")
    print(f"evaluation CPU time {time.process_time() - cpu0:.0f}s; pretraining {res.seconds:.0f}s wall")
    if args.results:
        out = {
            "args": {k: str(v) for k, v in vars(args).items()}, "size": size,
            "pretraining": {"epochs_done": res.epochs_done, "seconds": res.seconds, "stopped": res.stopped,
                            "losses": res.losses, "folder": str(res.folder)},
            "gain_test_auroc": gain,
        }
        for name, (full, few, val, c) in results.items():
            out[name] = {"test_auroc": full.value, "ci": [full.ci_low, full.ci_high], "val_auroc": val, "C": c,
                         "few_shot": {str(k): v for k, v in few.items()}}
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
