"""Embedding throughput of ``medfm.models.embed`` against a bare forward loop and the hardware.

ViT-B/16 (real architecture, seeded random weights: ``random/vit-b16``), N images of 224x224
uint8 (default 512). One run prints:

- medfm ``embed_arrays`` images/s / a bare ``model(x)`` loop's images/s on pre-made tensors
  (same batch size, same bf16 autocast)                                     goal >= 0.9
- bf16 speed-up over fp32 and cosine similarity bf16 vs fp32 per image      goal cos >= 0.9999
  (fp32 on the first ``--n-fp32`` images, default 128: it is the slow part)
- achieved fraction of this machine's bf16 matmul peak, measured in the same run by timing a
  2048^2 bf16 matmul (FLOPs per image counted by ``torch.utils.flop_counter``)  goal >= 0.6

Run: ``OMP_NUM_THREADS=1 python benchmarks/embed_throughput.py [--n 512] [--batch-size 32]``.
Numbers vary with load: other processes on the machine lower every rate (the ratios less).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _best(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def matmul_peak_tflops(n: int = 2048, reps: int = 10) -> float:
    """Best-of-``reps`` TFLOP/s of one n x n bf16 matmul: this machine's bf16 peak, now."""
    import torch

    a = torch.randn(n, n, dtype=torch.bfloat16)
    b = torch.randn(n, n, dtype=torch.bfloat16)
    return 2 * n**3 / _best(lambda: torch.mm(a, b), reps) / 1e12


def flops_per_image(model) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        model(torch.randn(1, 3, 224, 224))
    return float(fc.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=512, help="images for the bf16 comparison")
    ap.add_argument("--n-fp32", type=int, default=64, help="images for the fp32 comparison (slow)")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds (robust to other load)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--model", default="random/vit-b16")
    args = ap.parse_args()

    import torch

    from medfm._runtime import autocast_dtype, configure_threads, cpu_has_fast_bf16
    from medfm.models import create_model
    from medfm.models.embed import embed_arrays

    threads = configure_threads()
    adapter = create_model(args.model, device="cpu", precision="auto")
    model = adapter.trainable_module().eval()
    images = np.random.default_rng(0).integers(0, 256, (args.n, 3, 224, 224), dtype=np.uint8)
    dtype = autocast_dtype(adapter.device, "auto")
    use_amp = dtype is not None
    print(f"model {args.model}  images {args.n}x3x224x224 uint8  batch {args.batch_size}  threads {threads}  "
          f"rounds {args.rounds}  load avg {os.getloadavg()[0]:.1f}  fast-bf16 CPU {cpu_has_fast_bf16()}  "
          f"autocast {dtype}")
    flops = flops_per_image(model)
    premade = adapter.preprocess(list(images))  # the bare loop gets tensors made beforehand

    def bare(x: torch.Tensor, m: torch.nn.Module = model, amp: bool = use_amp) -> float:
        t = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            for b in x.split(args.batch_size):
                m(b)
        return x.shape[0] / (time.perf_counter() - t)

    def medfm(imgs: np.ndarray, precision: str) -> tuple[float, np.ndarray]:
        t = time.perf_counter()
        e = embed_arrays(adapter, imgs, batch_size=args.batch_size, precision=precision, progress=False)
        return imgs.shape[0] / (time.perf_counter() - t), e

    bare(premade[:2])  # warm-up (oneDNN kernel choice)
    per = max(1, args.n // args.rounds)
    peaks, bare_r, medfm_r, paired = [], [], [], []
    for r in range(args.rounds):
        sl = slice(r * per, (r + 1) * per)
        peaks.append(matmul_peak_tflops(reps=5))
        if r % 2:  # alternate the order so a load change does not favour one side
            b_ips = bare(premade[sl])
            m_ips, _ = medfm(images[sl], "auto")
        else:
            m_ips, _ = medfm(images[sl], "auto")
            b_ips = bare(premade[sl])
        bare_r.append(b_ips)
        medfm_r.append(m_ips)
        paired.append(m_ips / b_ips)
        print(f"  round {r}: peak {peaks[-1]:.3f} TFLOP/s  bare {b_ips:.2f} img/s  medfm {m_ips:.2f} img/s  "
              f"ratio {paired[-1]:.3f}  load {os.getloadavg()[0]:.1f}", flush=True)

    nf = min(args.n_fp32, args.n)
    half = max(1, nf // 2)
    speedups, emb_bf, emb_fp = [], [], []
    for r in range(2):
        sl = slice(r * half, (r + 1) * half)
        f_ips, ef = medfm(images[sl], "fp32")
        b_ips, eb = medfm(images[sl], "auto")
        speedups.append(b_ips / f_ips)
        emb_bf.append(eb)
        emb_fp.append(ef)
        print(f"  fp32 round {r}: fp32 {f_ips:.2f} img/s  bf16 {b_ips:.2f} img/s", flush=True)
    a, b = np.concatenate(emb_bf), np.concatenate(emb_fp)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    # variant: weights cast to bf16 once (no per-op autocast casts), paired with the autocast loop
    pure = create_model(args.model, device="cpu", precision="fp32").trainable_module().eval().to(torch.bfloat16)
    xb = premade[:half].to(torch.bfloat16)
    pure_ips = bare(xb, pure, False)
    auto_ips = bare(premade[:half])
    with torch.inference_mode():
        pf = torch.cat([pure(x).float() for x in xb.split(args.batch_size)]).numpy()
    cos_pure = (pf * b[:half]).sum(1) / (np.linalg.norm(pf, axis=1) * np.linalg.norm(b[:half], axis=1))

    peak = max(peaks)
    best_m = max(medfm_r)
    print("summary (best round for rates; median of paired per-round ratios):")
    print(f"  bf16 matmul 2048^2 peak (best of run): {peak:.3f} TFLOP/s; ViT-B/16 forward {flops / 1e9:.1f} GFLOP/img")
    print(f"  bare forward loop (bf16 autocast):  {max(bare_r):7.2f} img/s")
    print(f"  medfm embed_arrays (bf16 autocast): {best_m:7.2f} img/s")
    print(f"  medfm / bare: median paired {float(np.median(paired)):.3f}, best/best {best_m / max(bare_r):.3f}"
          "  (goal >= 0.9)")
    print(f"  bf16 speed-up over fp32 (medfm, {2 * half} img): median {float(np.median(speedups)):.2f}x")
    print(f"  cosine bf16 vs fp32 per image: min {cos.min():.6f} mean {cos.mean():.6f}  (goal >= 0.9999)")
    print(f"  fraction of bf16 matmul peak (medfm embed, best round): {best_m * flops / 1e12 / peak:.3f}"
          "  (goal >= 0.6)")
    print(f"  [variant] weights cast to bf16, bare loop: {pure_ips:.2f} img/s vs autocast {auto_ips:.2f} img/s "
          f"(x{pure_ips / auto_ips:.2f}); cosine vs fp32 min {cos_pure.min():.6f} mean {cos_pure.mean():.6f}")
    print(f"  load avg at end {os.getloadavg()[0]:.1f} (2 cores; other processes share them)")


if __name__ == "__main__":
    main()
