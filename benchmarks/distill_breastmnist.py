"""Does a distilled small student keep its teacher's linear-probe AUROC while embedding much faster?

Issue #6: "Distillation: the student's linear-probe AUROC is within 0.02 of its teacher's while
embedding at least 5x faster (measured in one benchmark run)."

Teacher (default): ``random/vit-b16``, the largest image encoder of the zoo usable offline here
(timm ViT-B/16, 86 M parameters, seeded random initialisation, 224x224 input: BreastMNIST's
28-px images are upsampled). A random-init teacher is a legitimate but weak teacher: its
features are fixed random projections, not learned ones. ``--teacher`` also takes any zoo id or
a folder written by ``medfm pretrain`` / ``medfm distill``.
Student (default): a native ``resnet18`` (11 M parameters) at BreastMNIST's native 28 px, trained
by ``medfm.tasks.pretrain.distill.distill`` on the training images only (labels never read).

    MEDFM_DATA=../shared/data OMP_NUM_THREADS=1 python benchmarks/distill_breastmnist.py --out distill.json

Prints, from one run, for teacher and student: linear-probe AUROC (the benchmark protocol
``linear_probe``: C chosen on val) on val and on test (95% bootstrap CI), and embedding throughput
(images/s of ``embed_arrays`` on the same test images, same batch size and thread count, best of
``--rounds`` interleaved rounds); then the teacher - student test AUROC gap (goal <= 0.02) and
the speed-up (goal >= 5x). Distillation settings are the run's flags; compare settings on the
printed validation numbers only.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _throughput(model, images: np.ndarray, batch_size: int, min_seconds: float) -> float:
    """Images/s of ``embed_arrays`` over ``images``, repeated until ``min_seconds`` have passed."""
    from medfm.models.embed import embed_arrays

    n, t0 = 0, time.perf_counter()
    while True:
        embed_arrays(model, images, batch_size=batch_size, progress=False)
        n += len(images)
        dt = time.perf_counter() - t0
        if dt >= min_seconds:
            return n / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="breastmnist")
    ap.add_argument("--teacher", default="random/vit-b16", help="zoo id or model folder")
    ap.add_argument("--student", default="resnet18", help="native architecture: resnet18 | vit-tiny | vit-small")
    ap.add_argument("--student-size", type=int, default=None, help="student input size (default: native)")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--minutes", type=float, default=8.0, help="distillation wall-time budget")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--embed-batch-size", type=int, default=32, help="batch size of every embedding call")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved throughput rounds (best is reported)")
    ap.add_argument("--min-seconds", type=float, default=4.0, help="minimum timing per model and round")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--teacher-cache", type=Path, default=None,
                    help="npz of the teacher's embeddings (written if missing, reused if it matches)")
    ap.add_argument("--work", type=Path, default=None, help="keep the student here (default: a temp folder)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()

    import torch

    from medfm._runtime import configure_threads
    from medfm.data import load_dataset
    from medfm.metrics.classification import compute_metrics
    from medfm.models import create_model
    from medfm.models.embed import embed_arrays
    from medfm.tasks.classification import PROTOCOLS, FeatureSplits
    from medfm.tasks.pretrain import DistillConfig
    from medfm.tasks.pretrain.distill import distill

    threads = configure_threads()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    ds = load_dataset(args.dataset)
    splits = {s: ds.split(s) for s in ("train", "val", "test")}
    x = {s: sp.images() for s, sp in splits.items()}
    y = {s: np.asarray(sp.labels).reshape(-1) for s, sp in splits.items()}
    task = "multiclass" if len(ds.card.labels) > 2 else "binary"
    work = args.work or Path(tempfile.mkdtemp(prefix="medfm-distill-"))
    bs = args.embed_batch_size

    teacher = create_model(args.teacher, device="cpu")
    n_params = {"teacher": sum(p.numel() for p in teacher.trainable_module().parameters())}
    print(f"{args.dataset}: train {len(x['train'])}, val {len(x['val'])}, test {len(x['test'])} images "
          f"{x['train'].shape[1:]}; teacher {args.teacher} ({n_params['teacher'] / 1e6:.1f} M params); "
          f"threads {threads} (torch {torch.get_num_threads()}); load avg {os.getloadavg()[0]:.1f}", flush=True)

    # teacher embeddings: probe features of every split + distillation targets (train, plain and mirrored)
    key = f"{args.teacher}|{teacher.weights_hash}|{args.dataset}|{bs}"
    t_emb: dict[str, np.ndarray] = {}
    if args.teacher_cache and args.teacher_cache.is_file():
        cached = np.load(args.teacher_cache, allow_pickle=False)
        if str(cached["key"]) == key:
            t_emb = {k: cached[k] for k in ("train", "train_mirror", "val", "test")}
            print(f"teacher embeddings reused from {args.teacher_cache}")
    if not t_emb:
        t0 = time.perf_counter()
        t_emb = {s: embed_arrays(teacher, x[s], batch_size=bs, progress=False) for s in x}
        t_emb["train_mirror"] = embed_arrays(teacher, np.ascontiguousarray(x["train"][..., ::-1]), batch_size=bs, progress=False)
        print(f"teacher embeddings: {sum(len(v) for v in t_emb.values())} images in {time.perf_counter() - t0:.0f}s", flush=True)
        if args.teacher_cache:
            args.teacher_cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(args.teacher_cache, key=np.array(key), **t_emb)

    cfg = DistillConfig(student=args.student, epochs=args.epochs, minutes=args.minutes, batch_size=args.batch_size,
                        lr=args.lr, image_size=args.student_size)
    res = distill(teacher, x["train"], cfg, work, model_id=f"distilled/{args.student}", source=f"{args.dataset}:train",
                  targets=(t_emb["train"], t_emb["train_mirror"]), show_progress=False)
    print(f"distillation: {len(res.train_losses)} epochs in {res.seconds / 60:.1f} min ({res.stopped}); best epoch "
          f"{res.best_epoch} (held-out loss {min(res.val_losses):.3f}); train loss {res.train_losses[0]:.3f} -> "
          f"{res.train_losses[-1]:.3f}", flush=True)
    print("held-out distillation loss per epoch: " + " ".join(f"{v:.3f}" for v in res.val_losses))
    student = create_model(str(res.folder), device="cpu")
    n_params["student"] = sum(p.numel() for p in student.module.parameters())
    s_emb = {s: embed_arrays(student, x[s], batch_size=bs, progress=False) for s in x}

    results: dict[str, dict] = {}
    lp = PROTOCOLS.get("linear_probe")
    for name, emb in (("teacher", t_emb), ("student", s_emb)):
        feats = FeatureSplits(emb["train"], y["train"], emb["val"], y["val"], emb["test"], y["test"],
                              tuple(ds.card.labels), task)
        pred = lp.run(feats, lp.make_config({}), seed=0, shots=None)
        test = compute_metrics(pred.test_y, pred.test_scores, task, n_boot=args.n_boot, seed=0)["auroc"]
        val = compute_metrics(feats.val_y, pred.val_scores, task, n_boot=0)["auroc"].value
        results[name] = {"test_auroc": test.value, "ci": [test.ci_low, test.ci_high], "val_auroc": val,
                         "C": pred.info["C"], "params": n_params[name]}

    # throughput: the same test images, batch size and threads; interleaved rounds, best of each
    imgs = x["test"]
    embed_arrays(teacher, imgs[:bs], batch_size=bs, progress=False)  # warm-up (kernel choice)
    embed_arrays(student, imgs[:bs], batch_size=bs, progress=False)
    rates: dict[str, list[float]] = {"teacher": [], "student": []}
    for r in range(args.rounds):
        order = ("teacher", "student") if r % 2 == 0 else ("student", "teacher")
        for name in order:
            rates[name].append(_throughput(teacher if name == "teacher" else student, imgs, bs, args.min_seconds))
        print(f"  throughput round {r}: teacher {rates['teacher'][-1]:.1f} img/s, student {rates['student'][-1]:.1f} "
              f"img/s (load avg {os.getloadavg()[0]:.1f})", flush=True)
    for name in rates:
        results[name]["images_per_s"] = max(rates[name])
        results[name]["images_per_s_rounds"] = rates[name]

    t, s = results["teacher"], results["student"]
    gap = t["test_auroc"] - s["test_auroc"]
    speedup = s["images_per_s"] / t["images_per_s"]
    paired = float(np.median([b / a for a, b in zip(rates["teacher"], rates["student"], strict=True)]))
    for name, r in results.items():
        label = args.teacher if name == "teacher" else f"{args.student}@{cfg.image_size or x['train'].shape[-1]}px"
        print(f"{name:8s} {label:22s} linear probe val AUROC {r['val_auroc']:.3f} (C={r['C']:g})  test AUROC "
              f"{r['test_auroc']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]  {r['images_per_s']:.1f} img/s  "
              f"{r['params'] / 1e6:.1f} M params")
    print(f"gap (teacher - student) test AUROC: {gap:+.3f} (goal <= 0.02: {'met' if gap <= 0.02 else 'missed'}); "
          f"val gap {t['val_auroc'] - s['val_auroc']:+.3f}")
    print(f"speed-up student / teacher: {speedup:.1f}x best/best, {paired:.1f}x median paired "
          f"(goal >= 5x: {'met' if min(speedup, paired) >= 5 else 'missed'})")
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    print(f"run: wall {wall / 60:.1f} min, CPU {cpu / 60:.1f} min, threads {threads}")
    if args.out:
        out = {
            "args": {k: str(v) for k, v in vars(args).items()}, "threads": threads,
            "distillation": {"epochs_done": len(res.train_losses), "best_epoch": res.best_epoch, "seconds": res.seconds,
                             "stopped": res.stopped, "train_losses": res.train_losses, "val_losses": res.val_losses,
                             "folder": str(res.folder)},
            "teacher": t, "student": s, "gap_test_auroc": gap, "gap_val_auroc": t["val_auroc"] - s["val_auroc"],
            "speedup_best": speedup, "speedup_median_paired": paired,
            "goals": {"gap_le_0.02": gap <= 0.02, "speedup_ge_5": min(speedup, paired) >= 5},
            "wall_seconds": wall, "cpu_seconds": cpu,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
