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

``--shots 1,4,16`` measures few labels instead: per labels-per-class budget, ``--seeds`` k-shot
draws (medfm's own ``subsample_shots``, the draws of ``medfm bench``), and a grid of (stage set,
feature scaling, C) for a logistic regression on the drawn rows. Feature scaling ``shots``
standardises on the drawn rows (what the bench's ``linear_probe`` does); ``pool`` on the whole
*unlabelled* training split (its labels are never read: a semi-supervised assumption, the same
volumes a self-supervised encoder would pretrain on); ``pool-l2`` then L2-normalises each row
(SimpleShot's CL2N). The setting with the best validation AUROC averaged over the draws is chosen,
then its test AUROC is read (mean and sd over the draws, 95% CI of draw 0).
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
FEW_SETS = {**STAGE_SETS, "l1": [0], "l1+l2": [0, 1]}
FEW_SCALINGS = ("shots", "pool", "pool-l2")
FEW_CS = (1e-3, 1e-2, 0.1, 1.0)


def few_shot_grid(feats: dict, y: dict, column_sets: dict, shots: list[int], seeds: int) -> list[dict]:
    """Few-label probes: per (shots, stage set, scaling, C) the mean validation AUROC over the
    draws, and each draw's test scores (for reading once the setting is chosen)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    from medfm.tasks.classification.data import subsample_shots

    pool = StandardScaler().fit(feats["train"])  # the unlabelled training split: no label is read
    rows = []
    for k in shots:
        draws = [subsample_shots(y["train"], k, seed, n_classes=2) for seed in range(seeds)]
        for name, cols in column_sets.items():
            for scaling in FEW_SCALINGS:
                for c in FEW_CS:
                    vals, tests = [], []
                    for idx in draws:
                        if scaling == "shots":
                            sc = StandardScaler().fit(feats["train"][idx][:, cols])
                            tf = lambda x, sc=sc: sc.transform(x[:, cols])  # noqa: E731
                        else:
                            mu, sd = pool.mean_[cols], pool.scale_[cols]
                            tf = lambda x, mu=mu, sd=sd: (x[:, cols] - mu) / sd  # noqa: E731
                        if scaling == "pool-l2":
                            tf = lambda x, f=tf: _l2(f(x))  # noqa: E731
                        clf = LogisticRegression(C=c, max_iter=5000).fit(tf(feats["train"][idx]), y["train"][idx])
                        vals.append(float(roc_auc_score(y["val"], clf.predict_proba(tf(feats["val"]))[:, 1])))
                        tests.append(clf.predict_proba(tf(feats["test"]))[:, 1])
                    rows.append({"shots": k, "stages": name, "scaling": scaling, "C": c,
                                 "val": float(np.mean(vals)), "val_per_draw": vals, "test_scores": tests})
    return rows


def _l2(z: np.ndarray) -> np.ndarray:
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def read_few_shot(rows: list[dict], y_test: np.ndarray, shots: list[int]) -> list[dict]:
    """Test AUROC of the setting chosen on validation per budget (test read only for that one)."""
    from medfm.metrics.classification import compute_metrics

    out = []
    for k in shots:
        best = max((r for r in rows if r["shots"] == k), key=lambda r: r["val"])
        aucs = [compute_metrics(y_test, s, task="binary", n_boot=1000 if i == 0 else 0, seed=0)["auroc"]
                for i, s in enumerate(best["test_scores"])]
        m = [a.value for a in aucs]
        out.append({"shots": k, "stages": best["stages"], "scaling": best["scaling"], "C": best["C"],
                    "val_auroc": best["val"], "test_auroc_mean": float(np.mean(m)), "test_auroc_sd": float(np.std(m)),
                    "test_auroc_per_draw": m, "ci_draw0": [aucs[0].ci_low, aucs[0].ci_high], "n_test": int(len(y_test))})
        print(f"{k:>2d} labels/class: chosen on val {best['stages']:15s} {best['scaling']:8s} C={best['C']:g}: "
              f"val {best['val']:.3f}  test AUROC {np.mean(m):.3f} +- {np.std(m):.3f} "
              f"(draw 0 [{aucs[0].ci_low:.3f}, {aucs[0].ci_high:.3f}], n={len(y_test)})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="merlin/i3resnet152-ct-stages")
    ap.add_argument("--dataset", default="adrenalmnist3d_64")
    ap.add_argument("--chunk", type=int, default=32, help="embedding cache chunk (pretrained_probe.py's --chunk)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--results", type=Path, default=None, help="write config, versions, checksums and every setting")
    ap.add_argument("--shots", default="all", help="'all', or labels per class for the few-shot grid, e.g. 1,4,16")
    ap.add_argument("--seeds", type=int, default=3, help="k-shot draws per budget (few-shot mode)")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from medfm._provenance import git_commit, git_dirty, versions
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
    few = a.shots != "all"
    column_sets = {name: np.concatenate([np.arange(edges[i], edges[i + 1]) for i in stages])
                   for name, stages in (FEW_SETS if few else STAGE_SETS).items()}
    if few:
        shots = [int(k) for k in a.shots.split(",")]
        rows = few_shot_grid(feats, y, column_sets, shots, a.seeds)
        print(f"{a.model} on {a.dataset}, {a.seeds} draws per budget: the setting chosen on validation")
        read = read_few_shot(rows, y["test"], shots)
        if a.results:
            out = {"config": {k: str(v) for k, v in vars(a).items()}, "stage_sets": FEW_SETS, "scalings": FEW_SCALINGS,
                   "Cs": list(FEW_CS), "data_checksums": checksums, "weights_hash": adapter.weights_hash,
                   "versions": versions(), "git_commit": git_commit(), "git_dirty": git_dirty(),
                   "validation": [{k: v for k, v in r.items() if k != "test_scores"} for r in rows], "test": read}
            a.results.write_text(json.dumps(out, indent=1))
            print(f"wrote {a.results}")
        return
    rows = probe_grid(feats, None, y, column_sets, CS)
    print(f"{a.model} on {a.dataset}: top settings on validation (test not read):")
    for r in rows[:8]:
        print(f"  val {r['val']:.3f}  {r['stages']:15s} C={r['C']:g}")
    read = read_test(rows, y["test"], "l4 (embedding)", "last stage only")
    if a.results:
        out = {"config": {k: str(v) for k, v in vars(a).items()}, "stage_sets": STAGE_SETS, "Cs": list(CS),
               "data_checksums": checksums, "weights_hash": adapter.weights_hash, "versions": versions(),
               "git_commit": git_commit(), "git_dirty": git_dirty(),
               "validation": [{k: v for k, v in r.items() if k != "score"} for r in rows], "test": read}
        a.results.write_text(json.dumps(out, indent=1))
        print(f"wrote {a.results}")


if __name__ == "__main__":
    main()
