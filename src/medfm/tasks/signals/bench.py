"""Beat-level benchmark: 1D encoders (random or self-supervised) x classification protocols.

Data: labelled beat windows of an annotated record with a time-disjoint split
(``medfm.data.signals.beat_dataset``; default MIT-BIH 100, N vs A). Models: every encoder in
``encoders`` with random weights and, for each ``pretrain`` method, after self-supervised
pretraining on the train part's unlabelled windows; plus a hand-made baseline of RR-interval
features (``features/rr-intervals``), the cue cardiologists use for atrial premature beats.
Protocols: the embedding protocols of ``medfm.tasks.classification`` (knn, linear_probe,
prototype = few-shot) at each of ``shots``, and ``finetune`` (encoder + linear head trained
end to end, best validation AUROC kept). Every cell becomes a ``Record`` with bootstrap CIs.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medfm.data.signals import BeatDatasetConfig, BeatSplits, beat_dataset
from medfm.errors import ConfigError
from medfm.results import MetricValue, Record, make_provenance
from medfm.tasks.signals.pretrain import SignalPretrainConfig, pretrain_signal_encoder

FEATURE_PROTOCOLS = ("knn", "linear_probe", "prototype")
PROTOCOLS = (*FEATURE_PROTOCOLS, "finetune")
RR_BASELINE = "features/rr-intervals"


@dataclass
class SignalFinetuneConfig:
    """End-to-end training of encoder + linear head: AdamW, cosine schedule, early stopping on
    validation AUROC (``patience`` epochs)."""

    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int | None = 5


@dataclass
class SignalBenchConfig:
    """What ``medfm signals bench`` runs (see the module docstring)."""

    record: str = "ecg_physionet/mitdb/100"
    annotations: str = "atr"
    data: BeatDatasetConfig = field(default_factory=BeatDatasetConfig)
    encoders: tuple[str, ...] = ("signal/resnet1d-small", "signal/transformer1d-tiny")
    pretrain: tuple[str, ...] = ("simclr",)
    protocols: tuple[str, ...] = PROTOCOLS
    shots: tuple[int | None, ...] = (None, 4)
    seeds: tuple[int, ...] = (0,)
    rr_baseline: bool = True
    n_boot: int = 1000
    pretrain_cfg: SignalPretrainConfig = field(default_factory=SignalPretrainConfig)
    finetune: SignalFinetuneConfig = field(default_factory=SignalFinetuneConfig)

    def __post_init__(self) -> None:
        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad:
            raise ConfigError(f"signals bench: unknown protocol(s) {bad}; expected among {list(PROTOCOLS)}")
        from medfm.models.signal import SIGNAL_ENCODERS

        for e in self.encoders:
            SIGNAL_ENCODERS.get(e)
        if not self.seeds:
            raise ConfigError("signals bench: at least one seed")


def embed(encoder: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, C, L) windows -> (N, D) float64 embeddings with ``encoder`` in eval mode."""
    import torch

    encoder.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            out.append(encoder(torch.as_tensor(x[i:i + batch_size])).float().numpy())
    return np.concatenate(out).astype(np.float64)


def finetune_encoder(encoder: Any, data: BeatSplits, cfg: SignalFinetuneConfig, seed: int) -> Any:
    """Train a copy of ``encoder`` with a linear head on the train split; returns Predictions."""
    import torch

    from medfm.tasks.classification._train import fit, lr_lambda_cosine, predict_proba
    from medfm.tasks.classification.data import Predictions

    torch.manual_seed(seed)
    enc = copy.deepcopy(encoder)
    model = torch.nn.Sequential(enc, torch.nn.Linear(enc.embed_dim, len(data.label_names)))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * max(1, (len(data.y["train"]) + cfg.batch_size - 1) // cfg.batch_size)

    def to_input(a: np.ndarray) -> Any:
        return torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32))

    res = fit(model, model, to_input, (data.x["train"], data.y["train"]), (data.x["val"], data.y["val"]), "binary",
              opt, lr_lambda_cosine(steps, max(1, steps // 20)), cfg.epochs, cfg.batch_size, seed, "cpu", None,
              patience=cfg.patience)
    p_test = predict_proba(model, to_input, data.x["test"], "binary", 256, "cpu", None)
    p_val = predict_proba(model, to_input, data.x["val"], "binary", 256, "cpu", None)
    return Predictions(p_test, data.y["test"], p_val, {"best_epoch": res.best_epoch, "epochs": res.epochs_run,
                                                        "model_trained": True, "trained": True})


def _record(dataset: str, model: str, protocol: str, shots: int | None, seed: int, preds: Any, cfg: Any,
            checksum: str | None, n_boot: int, seconds: float, **extra: Any) -> Record:
    from medfm.metrics.classification import compute_metrics

    y = np.asarray(preds.test_y)
    metrics = compute_metrics(y, np.asarray(preds.test_scores), "binary", n_boot=n_boot, seed=seed)
    metrics = {k: v if isinstance(v, MetricValue) else MetricValue(float(v)) for k, v in metrics.items()}
    info = {k: v for k, v in dict(preds.info or {}).items() if isinstance(v, (int, float, str, bool, type(None)))}
    return Record(dataset=dataset, split="test", model=model, protocol=protocol, metrics=metrics, shots=shots,
                  seed=seed, n=int(len(y)), seconds=round(seconds, 3),
                  provenance=make_provenance(cfg, data_checksum=checksum, seed=seed),
                  extra={"hyperparameters": info, "n_positive": int((y == 1).sum()), **extra})


def run_signal_bench(cfg: SignalBenchConfig, data_dir: str | None = None,
                     log: Callable[[str], None] | None = None) -> tuple[list[Record], dict[str, Any]]:
    """Run every (model, protocol, shots, seed) cell; returns (records, summary of the data)."""
    import torch

    from medfm.models.signal import create_signal_encoder
    from medfm.tasks.classification import PROTOCOLS as CLS_PROTOCOLS
    from medfm.tasks.classification import FeatureSplits
    from medfm.tasks.signals.detect import load_record, record_checksum

    say = log or (lambda s: None)
    sig = load_record(cfg.record, data_dir, cfg.annotations)
    checksum = record_checksum(sig)
    data = beat_dataset(sig, cfg.data)
    dataset = f"{cfg.record}:beats-{'-vs-'.join(cfg.data.classes)}"
    say(f"beats per split: {data.counts}")
    records: list[Record] = []
    feature_protocols = [p for p in cfg.protocols if p in FEATURE_PROTOCOLS]

    def feature_cells(model: str, feats: dict[str, np.ndarray], seed: int, extra: dict[str, Any]) -> None:
        fs = FeatureSplits(feats["train"], data.y["train"], feats["val"], data.y["val"], feats["test"], data.y["test"],
                           data.label_names, "binary")
        for proto_name in feature_protocols:
            proto = CLS_PROTOCOLS.get(proto_name)
            for shots in cfg.shots:
                t0 = time.perf_counter()
                preds = proto.run(fs, proto.make_config(), seed=seed, shots=shots)
                rec = _record(dataset, model, proto_name, shots, seed, preds, cfg, checksum, cfg.n_boot,
                              time.perf_counter() - t0, **extra)
                records.append(rec)
                say(f"{model} {proto_name} shots={shots or 'all'} seed={seed}: AUROC {rec.metrics['auroc'].value:.3f}")

    torch_threads = torch.get_num_threads()
    for seed in cfg.seeds:
        if cfg.rr_baseline and feature_protocols:
            feature_cells(RR_BASELINE, {s: data.rr[s].astype(np.float64) for s in ("train", "val", "test")}, seed,
                          {"init": "hand-made"})
        for enc_name in cfg.encoders:
            for init in ("random", *cfg.pretrain):
                enc = create_signal_encoder(enc_name, data.x["train"].shape[1], seed=seed)
                extra: dict[str, Any] = {"init": init}
                if init != "random":
                    pcfg = copy.deepcopy(cfg.pretrain_cfg)
                    pcfg.method = init
                    t0 = time.perf_counter()
                    hist = pretrain_signal_encoder(enc, data.x["unlabelled"], pcfg, seed=seed)
                    extra["pretrain"] = hist
                    say(f"{enc_name} {init}: pretrained in {time.perf_counter() - t0:.0f}s, loss {hist['losses'][0]:.3f} -> {hist['losses'][-1]:.3f}")
                model = f"{enc_name}+{init}"
                if feature_protocols:
                    feats = {s: embed(enc, data.x[s]) for s in ("train", "val", "test")}
                    feature_cells(model, feats, seed, extra)
                if "finetune" in cfg.protocols:
                    t0 = time.perf_counter()
                    preds = finetune_encoder(enc, data, cfg.finetune, seed)
                    rec = _record(dataset, model, "finetune", None, seed, preds, cfg, checksum, cfg.n_boot,
                                  time.perf_counter() - t0, **extra)
                    records.append(rec)
                    say(f"{model} finetune seed={seed}: AUROC {rec.metrics['auroc'].value:.3f}")
    torch.set_num_threads(torch_threads)
    return records, {"dataset": dataset, "counts": data.counts, "fs": data.fs, "window_samples": int(data.x["train"].shape[-1]),
                     "data_checksum": checksum}


def alarm_feature_records(records: list[str], data_dir: str | None = None, window_s: float = 16.0) -> list[Record]:
    """Challenge-2015 records -> one Record each holding the pre-alarm features (no labels are
    fitted: the stored records are too few to train or score an alarm classifier)."""
    from medfm.data.signals import alarm_features, alarm_label
    from medfm.tasks.signals.detect import load_record, record_checksum

    out = []
    for r in records:
        sig = load_record(r, data_dir, annotations=None)
        alarm, true_alarm = alarm_label(sig)
        t0 = time.perf_counter()
        feats = alarm_features(sig, window_s)
        out.append(Record(dataset=r, split="all", model="neurokit2/neurokit", protocol="alarm_features",
                          metrics={k: MetricValue(v) for k, v in feats.items()}, n=1,
                          seconds=round(time.perf_counter() - t0, 3),
                          provenance=make_provenance({"window_s": window_s}, data_checksum=record_checksum(sig)),
                          extra={"alarm": alarm, "true_alarm": true_alarm}))
    return out
