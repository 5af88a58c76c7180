"""Drift monitor on BreastMNIST: false-alarm rate on random halves, detection of real shifts, speed.

    MEDFM_DATA=../shared/data python benchmarks/trust_monitor.py --repeats 100 --model test/vit-tiny-timm

Prints (one run): the share of 100 random test-set halves that alarm at alpha 0.05 (issue goal:
at most 5%), the verdict and p-values for contrast / noise / resolution-shifted copies of the test
split and for RetinaMNIST, and the speed of the vectorised MMD permutation test as a ratio
against a per-permutation loop over the same kernel (baseline from the same run).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="test/vit-tiny-timm")
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--n-perm", type=int, default=200)
    ap.add_argument("--data-dir", default=os.environ.get("MEDFM_DATA"))
    a = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from medfm.data import load_dataset
    from medfm.models import create_model
    from medfm.models.embed import embed_arrays
    from medfm.tasks.trust.monitor import MonitorConfig, input_stats, mmd_permutation_test, monitor, reduce_dims

    images = load_dataset("breastmnist", a.data_dir).split("test").images()
    model = create_model(a.model)
    emb = embed_arrays(model, images, progress=False)
    rng = np.random.default_rng(0)
    alarms = 0
    for r in range(a.repeats):
        p = rng.permutation(len(emb))
        h = len(p) // 2
        rep = monitor(emb[p[:h]], emb[p[h:]], MonitorConfig(n_perm=a.n_perm, seed=r), input_stats(images[p[:h]]), input_stats(images[p[h:]]))
        alarms += rep.drift
    print(f"random halves: {alarms} of {a.repeats} alarm at alpha 0.05 ({100 * alarms / a.repeats:.1f}%; goal <= 5%)")

    f = images.astype(np.float32) / 255.0
    t = F.interpolate(torch.from_numpy(f), size=(14, 14), mode="bilinear", antialias=True)
    shifted = {
        "contrast x0.6": (f - 0.5) * 0.6 + 0.5,
        "noise sd 0.08": f + rng.normal(0, 0.08, f.shape),
        "resolution 28->14->28": F.interpolate(t, size=(28, 28), mode="bilinear").numpy(),
    }
    cases = {k: (np.clip(v, 0, 1) * 255).round().astype(np.uint8) for k, v in shifted.items()}
    cases["RetinaMNIST test"] = load_dataset("retinamnist", a.data_dir).split("test").images()
    for name, imgs in cases.items():
        rep = monitor(emb, embed_arrays(model, imgs, progress=False), MonitorConfig(n_perm=a.n_perm), input_stats(images), input_stats(imgs))
        ps = ", ".join(f"{t.name} {t.p_value:.2g}" for t in rep.tests)
        print(f"{name}: {rep.verdict.upper()} ({ps})")

    x, y = reduce_dims(emb[:78], emb[78:], 32)
    t0 = time.perf_counter()
    mmd_permutation_test(x, y, 1000)
    fast = time.perf_counter() - t0
    pooled = np.vstack([x, y])
    d2 = ((pooled[:, None] - pooled[None]) ** 2).sum(-1)
    t0 = time.perf_counter()
    k = np.exp(-d2 / np.median(d2[d2 > 0]))
    for _ in range(1000):  # baseline: one relabelling at a time
        perm = rng.permutation(len(pooled))
        kk = k[np.ix_(perm, perm)]
        _ = kk[:78, :78].mean() + kk[78:, 78:].mean() - 2 * kk[:78, 78:].mean()
    loop = time.perf_counter() - t0
    print(f"MMD, 1000 permutations: vectorised {fast:.3f} s vs loop {loop:.3f} s (speed-up x{loop / fast:.1f})")


if __name__ == "__main__":
    main()
