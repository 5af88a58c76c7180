"""Which stages of the 3D CT encoder carry AdrenalMNIST3D's label? Probe chosen on validation.

Issue 15. AdrenalMNIST3D volumes are binary shape masks, far from the CT the encoder was trained
on; do its *earlier* stages (more local shape, less CT semantics) carry more of the label than the
2048-d embedding ``medfm bench`` probes by default? ``merlin/i3resnet152-ct-stages`` (and its twin
``random/i3resnet152-ct-stages``) embeds each volume as the global averages of layer1..layer4
side by side (256 + 512 + 1024 + 2048); here subsets of those columns (the stage sets below) are
probed (``pretrained_multilayer.probe_grid``): a standardised, class-weighted logistic regression per (stage set, C) on the whole
training split, the setting chosen on validation AUROC only, then its test AUROC read once, beside
the last-stage-only probe chosen the same way. Embeddings come from medfm's cache under the same
keys as ``benchmarks/pretrained_probe.py`` (``--chunk 32``): after that script, nothing is recomputed.

    MEDFM_DATA=../shared/data OMP_NUM_THREADS=1 MEDFM_THREADS=1 \
        python benchmarks/pretrained_multilayer3d.py --model merlin/i3resnet152-ct-stages --results ml3d.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from pretrained_finetune3d import load_data
from pretrained_multilayer import probe_grid, read_test

STAGE_SETS = {"l4 (embedding)": [3], "l3": [2], "l3+l4": [2, 3], "l2-l4": [1, 2, 3], "l1-l4": [0, 1, 2, 3]}
CS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="merlin/i3resnet152-ct-stages")
    ap.add_argument("--dataset", default="adrenalmnist3d_64")
    ap.add_argument("--chunk", type=int, default=32, help="embedding cache chunk (pretrained_probe.py's --chunk)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--results", type=Path, default=None, help="write config, versions, checksums and every setting")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from medfm._provenance import git_commit, versions
    from medfm.bench.runner import default_context
    from medfm.models.adapters.pretrained_pkg import I3_STAGE_WIDTHS
    from medfm.models.embed import embed_cached

    adapter = default_context().adapter(a.model, "fp32")
    if adapter.card.embed_dim != sum(I3_STAGE_WIDTHS):
        sys.exit(f"{a.model}: a stage-pooled CT encoder is needed (embedding {sum(I3_STAGE_WIDTHS)}), "
                 f"got {adapter.card.embed_dim}; use merlin/i3resnet152-ct-stages or random/i3resnet152-ct-stages")
    _ds, data = load_data(a.dataset)
    feats, y, checksums = {}, {}, {}
    for sp in ("val", "test", "train"):
        imgs, y[sp], checksums[sp] = data[sp]
        key = f"{a.dataset}/{sp}/{checksums[sp]}"  # pretrained_probe.py's key: its cached chunks are reused
        feats[sp] = np.asarray(embed_cached(adapter, imgs, key, chunk_size=a.chunk, batch_size=a.batch_size,
                                            precision="fp32"), dtype=np.float64)
    edges = np.cumsum([0, *I3_STAGE_WIDTHS])
    column_sets = {name: np.concatenate([np.arange(edges[i], edges[i + 1]) for i in stages])
                   for name, stages in STAGE_SETS.items()}
    rows = probe_grid(feats, None, y, column_sets, CS)
    print(f"{a.model} on {a.dataset}: top settings on validation (test not read):")
    for r in rows[:8]:
        print(f"  val {r['val']:.3f}  {r['stages']:15s} C={r['C']:g}")
    read = read_test(rows, y["test"], "l4 (embedding)", "last stage only")
    if a.results:
        out = {"config": {k: str(v) for k, v in vars(a).items()}, "stage_sets": STAGE_SETS, "Cs": list(CS),
               "data_checksums": checksums, "weights_hash": adapter.weights_hash, "versions": versions(),
               "git_commit": git_commit(),
               "validation": [{k: v for k, v in r.items() if k != "score"} for r in rows], "test": read}
        a.results.write_text(json.dumps(out, indent=1))
        print(f"wrote {a.results}")


if __name__ == "__main__":
    main()
