"""Round-trip latency of ``medfm serve`` for interactive segmentation (not a test).

Builds the SAM ViT-B architecture (transformers ``SamConfig()`` defaults, random weights) behind
medfm's SAM adapter and the REST service, and measures over HTTP (FastAPI's in-process test
client, so no network stack) in one run:
(a) uploading a 1024x1024 PNG = reading it and running the image encoder once;
(b) a new box prompt on that image: prompt + mask decoder + PNG/base64/JSON of the mask;
(c) a prompt that switches to another uploaded image (its kept embedding is restored);
and, as the baseline, (d) the adapter's own ``predict`` without the service.
Targets: (b) and (c) <= 100 ms, (a) / (b) >= 20 (the point of keeping embeddings), and the
service overhead (b) - (d) small next to (b). Wall clock; CPU time of the process is printed too.

    OMP_NUM_THREADS=1 python benchmarks/serve_latency.py [--prompt-runs 30] [--threads N] [--precision auto]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import statistics
import sys
import time

import numpy as np


def _png(seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = (rng.random((1024, 1024)) * 120).astype(np.uint8)
    arr[200:700, 300:800] += 100
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _timed(fn, runs: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds of ``fn()`` over ``runs`` calls."""
    wall, cpu = [], []
    for k in range(runs):
        t, c = time.perf_counter(), time.process_time()
        fn(k)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt-runs", type=int, default=30)
    ap.add_argument("--upload-runs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: medfm's choice)")
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"], help="image encoder precision")
    args = ap.parse_args(argv)

    import torch
    from fastapi.testclient import TestClient
    from transformers import SamConfig, SamModel

    from medfm._runtime import configure_threads
    from medfm.models import get_model_card
    from medfm.models.adapters.sam import SamAdapter
    from medfm.serve import SegmentationService, create_app

    threads = configure_threads(args.threads)
    torch.manual_seed(0)
    card = dataclasses.replace(get_model_card("sam/vit-base"), source=None, id="bench/sam-vit-b-random")
    seg = SamAdapter(card, SamModel(SamConfig()).eval(), "cpu")
    seg.precision = args.precision  # the decoder runs fp32 unless bf16 is asked for
    client = TestClient(create_app(SegmentationService(seg, max_images=64)), base_url="http://127.0.0.1")  # an allowed Host

    images = [_png(1000 + k) for k in range(args.upload_runs + 2)]
    ids: list[str] = []

    def upload(k: int) -> None:
        r = client.post("/images", params={"name": f"bench{k}.png"}, content=images[k])
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])

    def box(k: int) -> list[int]:
        return [200 + k % 7, 300 + k % 5, 700 - k % 3, 800 - k % 11]  # a new prompt every run

    def prompt_same(k: int) -> None:
        r = client.post(f"/images/{ids[0]}/segment", json={"box": box(k)})
        assert r.status_code == 200, r.text

    def prompt_switch(k: int) -> None:  # alternate between two images: restore a kept embedding each time
        r = client.post(f"/images/{ids[k % 2]}/segment", json={"box": box(k)})
        assert r.status_code == 200, r.text

    def predict_direct(k: int) -> None:
        seg.predict(boxes=np.array([box(k)], float))

    upload(len(images) - 1)  # warm-up: allocations, oneDNN kernels
    ids.clear()
    up_ms, up_cpu = _timed(upload, args.upload_runs)
    prompt_same(0)
    same_ms, same_cpu = _timed(prompt_same, args.prompt_runs)
    switch_ms, switch_cpu = _timed(prompt_switch, args.prompt_runs)
    seg.set_image(_decode(images[0]))
    predict_direct(0)
    direct_ms, direct_cpu = _timed(predict_direct, args.prompt_runs)
    out = {
        "threads": threads,
        "precision": args.precision,
        "upload_embed_ms": round(up_ms, 1),
        "prompt_ms": round(same_ms, 1),
        "prompt_switching_images_ms": round(switch_ms, 1),
        "model_predict_ms": round(direct_ms, 1),
        "cpu_ms": {"upload": round(up_cpu, 1), "prompt": round(same_cpu, 1), "switch": round(switch_cpu, 1), "predict": round(direct_cpu, 1)},
        "upload_over_prompt": round(up_ms / same_ms, 1),
        "service_overhead_ms": round(same_ms - direct_ms, 1),
    }
    print(json.dumps(out, indent=2))
    ok = same_ms <= 100 and switch_ms <= 100 and up_ms / same_ms >= 20
    print(f"targets (prompt and switch <= 100 ms, upload / prompt >= 20): {'met' if ok else 'NOT met'}")
    return 0


def _decode(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)))


if __name__ == "__main__":
    sys.exit(main())
