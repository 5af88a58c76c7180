"""Multi-stage frozen features of a pretrained 2D CNN on BreastMNIST, probe chosen on validation.

Does an ImageNet CNN's *intermediate* stages transfer better to 28 px breast ultrasound than its
last layer (the embedding ``medfm bench`` probes)? Each EfficientNet-Lite0 stage output is
global-average pooled (16, 24, 40, 80, 112, 192, 320 channels) beside the 1280-d embedding, with
and without horizontal-flip test-time averaging (train rows doubled with their flips). A
standardised, class-weighted logistic regression is fitted per (stage set, flip, C); the
setting is chosen on validation AUROC only, then its test AUROC is read once, beside the
last-layer-only probe chosen the same way. Preprocessing is the model card's (medfm's adapter).

    MEDFM_DATA=../shared/data OMP_NUM_THREADS=1 python benchmarks/pretrained_multilayer.py
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from medfm.metrics.classification import compute_metrics
from medfm.models import create_model

STAGE_SETS = {"final": [7], "s5+final": [5, 7], "s4-6+final": [4, 5, 6, 7], "s3-6+final": [3, 4, 5, 6, 7],
              "s2-6": [2, 3, 4, 5, 6], "all": list(range(8))}
CS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)


def stage_features(adapter, images: np.ndarray, flip: bool, batch: int = 16) -> tuple[np.ndarray, list[int]]:
    """(N, sum of stage widths + embedding) pooled stage outputs, and each block's width."""
    net = adapter.tower.eval()
    pooled: dict[int, torch.Tensor] = {}
    hooks = [blk.register_forward_hook(lambda _m, _i, o, k=k: pooled.__setitem__(k, o.mean((2, 3))))
             for k, blk in enumerate(net.blocks)]
    out = []
    try:
        for s in range(0, len(images), batch):
            x = adapter.preprocess(list(images[s:s + batch]))
            if flip:
                x = x.flip(-1)
            with torch.no_grad():
                emb = net(x.to(adapter.device))
            out.append(torch.cat([pooled[k] for k in range(len(net.blocks))] + [emb], 1).float().cpu().numpy())
    finally:
        for h in hooks:
            h.remove()
    widths = [int(pooled[k].shape[1]) for k in range(len(net.blocks))] + [int(emb.shape[1])]
    return np.concatenate(out), widths


def probe_grid(feats: dict, flips: dict | None, y: dict, column_sets: dict, cs=CS) -> list[dict]:
    """A standardised, class-weighted logistic regression per (column set, flip averaging, C),
    fitted on train; rows sorted by validation AUROC (best first), each with its ``score(split)``.
    ``flips``: the same features of flipped inputs (train rows doubled, val/test averaged), or None."""
    rows = []
    for name, cols in column_sets.items():
        for tta in (False, True) if flips is not None else (False,):
            xtr = np.concatenate([feats["train"][:, cols], flips["train"][:, cols]]) if tta else feats["train"][:, cols]
            ytr = np.concatenate([y["train"], y["train"]]) if tta else y["train"]
            sc = StandardScaler().fit(xtr)
            for c in cs:
                clf = LogisticRegression(C=c, max_iter=5000, class_weight="balanced").fit(sc.transform(xtr), ytr)

                def score(sp: str, clf=clf, sc=sc, cols=cols, tta=tta) -> np.ndarray:
                    p = clf.predict_proba(sc.transform(feats[sp][:, cols]))[:, 1]
                    return (p + clf.predict_proba(sc.transform(flips[sp][:, cols]))[:, 1]) / 2 if tta else p

                rows.append({"stages": name, "flip": tta, "C": c, "val": float(roc_auc_score(y["val"], score("val"))),
                             "score": score})
    rows.sort(key=lambda r: -r["val"])
    return rows


def read_test(rows: list[dict], y_test: np.ndarray, baseline: str, baseline_label: str) -> dict:
    """Test AUROC (95% CI) of the setting chosen on val, and of the best ``baseline``-set setting
    without flips chosen the same way; printed, and returned by label."""
    last = max((r for r in rows if r["stages"] == baseline and not r["flip"]), key=lambda r: r["val"])
    out = {}
    for label, r in (("chosen on val", rows[0]), (baseline_label, last)):
        m = compute_metrics(y_test, r["score"]("test"), task="binary", n_boot=1000, seed=0)["auroc"]
        out[label] = {"stages": r["stages"], "flip": r["flip"], "C": r["C"], "val_auroc": r["val"],
                      "test_auroc": m.value, "ci": [m.ci_low, m.ci_high], "n_test": int(len(y_test))}
        print(f"{label:16s} {r['stages']:15s} flip={r['flip']!s:5s} C={r['C']:g}: val {r['val']:.3f}  "
              f"test AUROC {m.value:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}] (n={len(y_test)})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="imagenet/efficientnet-lite0")
    ap.add_argument("--data", default=os.path.join(os.environ.get("MEDFM_DATA", "../shared/data"), "breastmnist/breastmnist.npz"))
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    d = np.load(Path(a.data))
    adapter = create_model(a.model, device="cpu", precision="fp32")
    t0 = time.perf_counter()
    feats, flips = {}, {}
    for sp in ("train", "val", "test"):
        feats[sp], widths = stage_features(adapter, d[f"{sp}_images"], flip=False)
        flips[sp], _ = stage_features(adapter, d[f"{sp}_images"], flip=True)
    y = {sp: d[f"{sp}_labels"].ravel() for sp in ("train", "val", "test")}
    print(f"{a.model}: stage widths {widths}, features {feats['train'].shape[1]}, embedded in {time.perf_counter() - t0:.0f} s")
    edges = np.cumsum([0, *widths])
    column_sets = {name: np.concatenate([np.arange(edges[i], edges[i + 1]) for i in stages])
                   for name, stages in STAGE_SETS.items()}
    rows = probe_grid(feats, flips, y, column_sets)
    print("top settings on validation (test not read):")
    for r in rows[:8]:
        print(f"  val {r['val']:.3f}  {r['stages']:11s} flip={r['flip']!s:5s} C={r['C']:g}")
    read_test(rows, y["test"], "final", "last layer only")


if __name__ == "__main__":
    main()
