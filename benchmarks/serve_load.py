"""Load on ``medfm serve``: concurrent clients prompting on cached embeddings (not a test).

Starts the service as a separate process (uvicorn on a free loopback port, token auth on, the
SAM ViT-B architecture with random weights behind medfm's SAM adapter unless ``--model`` names a
zoo segmenter), uploads ``--images`` images (their embeddings are then kept), and measures over
real HTTP (stdlib ``http.client``, keep-alive, one connection per client):
(a) one client alone, ``--single-runs`` box prompts: p50 / p95 latency and requests/s (the baseline);
(b) ``--clients`` clients (default 20) prompting for ``--seconds`` (default 60), each prompt on one of
the kept images (so the service switches kept embeddings): p50 / p95, requests/s, errors;
and the server's RSS sampled every second. Prompts share one model (a lock), so under load a
request waits for those ahead of it: latency grows with the queue, throughput must not drop.
Targets: zero errors; throughput under load >= 0.8 x one client's; RSS growth after warm-up
(the first quarter of the run) <= 5 %. Ratios are printed against (a) from the same run.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/serve_load.py [--seconds 60] [--clients 20] [--model ID]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time

import numpy as np

TOKEN = "serve-load-benchmark"


def _png(seed: int, size: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = (rng.random((size, size)) * 120).astype(np.uint8)
    arr[size // 5 : size * 7 // 10, size * 3 // 10 : size * 4 // 5] += 100
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def serve(port: int, model: str, threads: int) -> None:
    """The server process: the service behind uvicorn on 127.0.0.1:port, token on."""
    import dataclasses

    import torch
    import uvicorn

    from medfm._runtime import configure_threads
    from medfm.serve import SegmentationService, create_app

    configure_threads(threads)
    if model == "random-vit-b":
        from transformers import SamConfig, SamModel

        from medfm.models import get_model_card
        from medfm.models.adapters.sam import SamAdapter

        torch.manual_seed(0)
        card = dataclasses.replace(get_model_card("sam/vit-base"), source=None, id="bench/sam-vit-b-random")
        seg = SamAdapter(card, SamModel(SamConfig()).eval(), "cpu")
    else:
        from medfm.models import create_model

        seg = create_model(model, device="cpu", precision="fp32")
    app = create_app(SegmentationService(seg, max_images=16), token=TOKEN)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


class Client:
    """One keep-alive HTTP connection with the token."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def call(self, method: str, path: str, body: bytes | None = None, ctype: str = "application/json") -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": ctype}
        self.conn.request(method, path, body=body, headers=headers)
        r = self.conn.getresponse()
        return r.status, r.read()


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the concurrent phase (bounded: at most 600)")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--single-runs", type=int, default=40)
    ap.add_argument("--images", type=int, default=2, help="images uploaded (embeddings kept) and prompted in turn")
    ap.add_argument("--size", type=int, default=512, help="side of the uploaded PNGs (pixels)")
    ap.add_argument("--model", default="random-vit-b", help="random-vit-b (SAM ViT-B architecture) or a zoo segmenter id")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    ap.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)  # internal: run the server on this port
    args = ap.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.model, args.threads)
        return 0
    if not 0 < args.seconds <= 600 or not 1 <= args.clients <= 100:
        ap.error("--seconds must be in (0, 600] and --clients in 1..100")

    import psutil

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, __file__, "--serve", str(port), "--model", args.model, "--threads", str(args.threads)]
    server = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    try:
        return _run(args, port, psutil.Process(server.pid))
    finally:
        server.terminate()
        server.wait(timeout=30)


def _run(args: argparse.Namespace, port: int, proc) -> int:
    deadline = time.time() + 300
    while True:  # wait for the server (model construction takes seconds)
        try:
            status, _ = Client(port).call("GET", "/health")
            if status == 200:
                break
        except OSError:
            pass
        if time.time() > deadline or proc.status() == "zombie":
            raise SystemExit("the server did not start")
        time.sleep(0.5)
    c = Client(port)
    ids, size = [], args.size
    t0 = time.perf_counter()
    for k in range(args.images):
        status, body = c.call("POST", f"/images?name=load{k}.png", _png(k, size), "application/octet-stream")
        assert status == 200, body
        ids.append(json.loads(body)["id"])
    upload_s = (time.perf_counter() - t0) / args.images

    def box(rng: random.Random) -> bytes:
        x0, y0 = rng.randint(size // 10, size // 4), rng.randint(size // 10, size // 4)
        x1, y1 = rng.randint(size // 2, size - 2), rng.randint(size // 2, size - 2)
        return json.dumps({"box": [x0, y0, x1, y1]}).encode()

    rng = random.Random(0)
    single = []
    for k in range(args.single_runs + 3):  # 3 warm-up prompts
        t = time.perf_counter()
        status, body = c.call("POST", f"/images/{ids[k % len(ids)]}/segment", box(rng))
        assert status == 200, body
        if k >= 3:
            single.append(time.perf_counter() - t)
    single_rps = len(single) / sum(single)

    latencies: list[float] = []
    errors: list[str] = []
    rss: list[tuple[float, int]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client(seed: int) -> None:
        r, cl, k = random.Random(seed), Client(port), seed
        while not stop.is_set():
            t = time.perf_counter()
            try:
                status, body = cl.call("POST", f"/images/{ids[k % len(ids)]}/segment", box(r))
                ok = status == 200
                why = f"HTTP {status}: {body[:100]!r}"
            except Exception as exc:  # noqa: BLE001 - counted as an error; the client reconnects
                ok, why, cl = False, f"{type(exc).__name__}: {exc}", Client(port)
            with lock:
                (latencies.append(time.perf_counter() - t) if ok else errors.append(why))
            k += 1

    start = time.perf_counter()
    workers = [threading.Thread(target=client, args=(1000 + i,), daemon=True) for i in range(args.clients)]
    for w in workers:
        w.start()
    while time.perf_counter() - start < args.seconds:
        rss.append((time.perf_counter() - start, proc.memory_info().rss))
        time.sleep(1.0)
    stop.set()
    for w in workers:
        w.join(timeout=150)
    elapsed = time.perf_counter() - start
    rss.append((elapsed, proc.memory_info().rss))

    warm = [m for t, m in rss if t >= args.seconds / 4] or [rss[-1][1]]
    rps = len(latencies) / elapsed
    out = {
        "model": args.model,
        "clients": args.clients,
        "seconds": round(elapsed, 1),
        "image_px": size,
        "upload_embed_s": round(upload_s, 2),
        "one_client": {"p50_ms": round(1000 * _pct(single, 50), 1), "p95_ms": round(1000 * _pct(single, 95), 1), "rps": round(single_rps, 1)},
        "loaded": {
            "p50_ms": round(1000 * _pct(latencies, 50), 1),
            "p95_ms": round(1000 * _pct(latencies, 95), 1),
            "max_ms": round(1000 * max(latencies, default=float("nan")), 1),
            "rps": round(rps, 1),
            "requests": len(latencies),
            "errors": len(errors),
        },
        "ratios": {
            "p50_loaded_over_one": round(_pct(latencies, 50) / _pct(single, 50), 2),
            "p95_loaded_over_one": round(_pct(latencies, 95) / _pct(single, 95), 2),
            "rps_loaded_over_one": round(rps / single_rps, 2),
            "rss_end_over_warm": round(rss[-1][1] / warm[0], 3),
        },
        "rss_mb": {"start": round(rss[0][1] / 2**20), "warm": round(warm[0] / 2**20), "end": round(rss[-1][1] / 2**20),
                   "max": round(max(m for _, m in rss) / 2**20)},
        "first_errors": errors[:3],
    }
    print(json.dumps(out, indent=2))
    ok = not errors and rps / single_rps >= 0.8 and rss[-1][1] / warm[0] <= 1.05
    print(
        f"targets (zero errors; loaded rps >= 0.8 x one client; RSS end <= 1.05 x after warm-up): {'met' if ok else 'NOT met'}; "
        f"p50 x{out['ratios']['p50_loaded_over_one']}, p95 x{out['ratios']['p95_loaded_over_one']} with {args.clients} clients "
        f"(queueing behind one model: ~{args.clients} x expected)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
