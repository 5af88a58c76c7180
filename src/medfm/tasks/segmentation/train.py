"""Supervised segmentation training with MONAI: patch sampling, Dice+CE, sliding-window validation.

``train_segmentation(train, val, config, out)`` trains on ``Sample``s (image + mask Images),
samples patches with ``RandCropByPosNegLabeld``, optimises ``DiceCELoss`` with AdamW and a
polynomial learning-rate decay driven by whichever runs out first of the epoch count and the
time budget, validates by ``sliding_window_inference`` (mean foreground Dice over the val split)
and keeps the best weights (model selection on val only). The folder it writes is a saved model
(see ``medfm.tasks.segmentation.model``); running again with ``resume=True`` continues from its
one checkpoint file (``medfm.tasks.segmentation.state``). ``SegTrainer`` holds the loop's pieces
(as MONAI's ``SupervisedTrainer``): ``run_epoch`` / ``train_step``, ``end_epoch`` (validate and
checkpoint), and ``_finish`` writes the card. A non-finite loss stops the run with
``TrainingDivergedError`` naming the step; a run whose val Dice never rose above its first
validation is finished but marked (card description and ``extra.warning``, a printed warning).

Precision: ``auto`` trains under bf16 autocast where bf16 is fast (CUDA, AMX CPUs); the loss and
every normalisation layer run in fp32 (``model.fp32_normalization``).

Budgets (``budget.Budget``): ``minutes`` (wall clock), ``cpu_minutes`` (this process's CPU time: on
a shared machine wall time depends on the neighbours, CPU time does not), ``max_steps`` and
``epochs`` all stop training and drive the learning-rate decay; the history records both clocks.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfm.data.card import Sample
from medfm.errors import ConfigError, InputError, TrainingDivergedError
from medfm.tasks.segmentation.budget import Budget
from medfm.tasks.segmentation.model import (
    WEIGHTS_FILE,
    NetSpec,
    SegModelInfo,
    TrainedSegmenter,
    build_network,
    labels_to_index,
    load_weights,
    match_channels,
    normalize_intensity,
    resize_array,
    save_weights,
    weights_to_save,
    write_card,
)
from medfm._paths import write_durably
from medfm.tasks.segmentation.state import CHECKPOINT_FILE, TrainState

DEFAULT_PATCH = {"unet2d": (256, 256), "unet3d": (32, 48, 32), "swinunetr": (32, 64, 32), "frozen_encoder": (224, 224)}


@dataclass
class SegTrainConfig:
    """Training settings. ``minutes`` and ``epochs`` both bound the run (first reached wins);
    ``max_steps`` bounds optimiser steps (tests). Empty tuples mean "derive from the data/arch"."""

    arch: str = "unet3d"
    encoder: str | None = None
    labels: tuple[int, ...] = ()
    label_names: tuple[str, ...] = ()
    patch_size: tuple[int, ...] = ()
    input_size: tuple[int, ...] = ()
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    batch_size: int = 2
    samples_per_image: int = 2
    pos: float = 2.0
    neg: float = 1.0
    flip_axes: tuple[int, ...] = ()
    rotate_deg: float = 0.0  # random rotation up to +-this (degrees; 3D: about each axis), p = 0.5
    scale_aug: float = 0.0  # random isotropic-per-axis zoom by up to +-this fraction, p = 0.5
    select_inference: bool = True  # choose flip TTA / post-processing on val after training
    refine: bool = False  # 2D: also train a refiner on crops around the object (refine.py); val decides its use
    refine_input_size: tuple[int, ...] = (256, 256)
    refine_patch_size: tuple[int, ...] = (224, 224)
    refine_crops: int = 6  # random training crops per image
    refine_budget: float = 1.0  # the refiner's minutes / CPU minutes / steps, as a fraction of the first stage's
    lr: float = 2e-3
    weight_decay: float = 1e-5
    epochs: int = 1000
    minutes: float | None = None
    cpu_minutes: float | None = None  # budget in process CPU time (reproducible on a shared machine)
    max_steps: int | None = None
    val_every: int = 1
    val_every_s: float = 0.0
    seed: int = 0
    precision: str = "auto"
    overlap: float = 0.5
    dataset: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SegTrainResult:
    out: Path
    best_val_dice: float | None
    best_epoch: int
    epochs: int
    steps: int
    seconds: float
    history: list[dict[str, float]]
    cpu_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)  # e.g. val never rose above its first epoch


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _prepare(samples: Sequence[Sample], labels: tuple[int, ...], input_size: tuple[int, ...], in_ch: int) -> list[dict]:
    """Samples -> [{"image": float32 (C, *s), "label": int64 (1, *s)}] normalised (and resized)."""
    items = []
    for s in samples:
        if s.image is None or s.mask is None:
            raise InputError(f"sample {s.id}: segmentation training needs an image and a mask")
        img = s.image.array
        if img.shape[0] != in_ch:
            img = match_channels(img, in_ch)
        lab = labels_to_index(s.mask.array, labels, where=f"mask of {s.id}")
        if lab.shape != img.shape[1:]:
            raise InputError(f"sample {s.id}: mask shape {lab.shape} != image shape {img.shape[1:]}")
        x = normalize_intensity(img)
        y = lab[None].astype(np.float32)
        if input_size:
            x = resize_array(x, input_size, "bilinear" if len(input_size) == 2 else "trilinear")
            y = resize_array(y, input_size, "nearest")
        items.append({"image": x.astype(np.float32), "label": y.astype(np.int64), "id": s.id})
    return items


def infer_labels(samples: Sequence[Sample]) -> tuple[int, ...]:
    """Foreground label values present in the masks (sorted)."""
    vals: set[int] = set()
    for s in samples:
        if s.mask is not None:
            vals.update(int(v) for v in np.unique(s.mask.array))
    vals.discard(0)
    return tuple(sorted(vals))


def mean_dice(pred_idx: np.ndarray, gt_idx: np.ndarray, num_classes: int) -> float:
    """Mean over foreground classes of MONAI's Dice (empty-vs-empty = 1) of two index maps."""
    import torch
    from monai.metrics import compute_dice

    p = torch.as_tensor(pred_idx)[None, None]
    g = torch.as_tensor(gt_idx)[None, None]
    d = compute_dice(p, g, include_background=False, ignore_empty=False, num_classes=num_classes)
    return float(d.mean())


def evaluate(segmenter: TrainedSegmenter, items: list[dict]) -> float:
    """Mean foreground Dice over ``items`` (already prepared); at the network's input size."""
    k = segmenter.info.net.num_classes
    scores = []
    for it in items:
        prob = _forward_prepared(segmenter, it["image"])
        scores.append(mean_dice(prob.argmax(0), it["label"][0], k))
    return float(np.mean(scores)) if scores else math.nan


def _forward_prepared(segmenter: TrainedSegmenter, x: np.ndarray) -> np.ndarray:
    import torch
    from monai.inferers import sliding_window_inference

    from medfm._runtime import autocast_dtype

    dtype = autocast_dtype(segmenter.device, segmenter.precision)
    segmenter.net.eval()
    with torch.inference_mode(), torch.autocast("cpu" if segmenter.device == "cpu" else "cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        logits = sliding_window_inference(
            torch.as_tensor(x)[None].to(segmenter.device),
            roi_size=segmenter.info.net.patch_size,
            sw_batch_size=4,
            predictor=segmenter.net,
            overlap=segmenter.info.overlap,
            mode="gaussian",
        )
    return logits[0].float().cpu().numpy()


def _transforms(cfg: SegTrainConfig, patch: tuple[int, ...]):
    from monai.transforms import (
        Compose,
        RandAffined,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandScaleIntensityd,
        RandShiftIntensityd,
        SpatialPadd,
    )

    ts = []
    if cfg.rotate_deg or cfg.scale_aug:
        nd = len(patch)
        rot = math.radians(cfg.rotate_deg)
        ts.append(RandAffined(
            keys=["image", "label"], prob=0.5, rotate_range=(rot,) if nd == 2 else (rot,) * 3,
            scale_range=(cfg.scale_aug,) * nd, mode=("bilinear", "nearest"), padding_mode="zeros",
        ))
    ts += [
        SpatialPadd(keys=["image", "label"], spatial_size=patch),
        RandCropByPosNegLabeld(
            keys=["image", "label"],
            label_key="label",
            spatial_size=patch,
            pos=cfg.pos,
            neg=cfg.neg,
            num_samples=cfg.samples_per_image,
            allow_smaller=True,
        ),
        RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
    ]
    for ax in cfg.flip_axes:
        ts.append(RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=ax))
    return Compose(ts)


def train_segmentation(
    train: Sequence[Sample],
    val: Sequence[Sample],
    config: SegTrainConfig,
    out: str | Path,
    resume: bool = False,
    device: str = "cpu",
) -> SegTrainResult:
    """Train a segmentation network; writes a loadable model folder to ``out`` (see module doc)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info, in_ch = _model_info(train, config)
    trainer = SegTrainer(train, val, config, info, in_ch, out, device)
    if resume:
        trainer.resume()
    while not trainer.finished():
        losses = trainer.run_epoch()
        trainer.end_epoch(losses)
    return _finish(trainer, train, val, resume)


def _model_info(train: Sequence[Sample], cfg: SegTrainConfig) -> tuple[SegModelInfo, int]:
    """Check the config against the data; the network spec and inference settings, input channels."""
    if not train:
        raise InputError("no training samples")
    if cfg.arch not in DEFAULT_PATCH:
        raise ConfigError(f"unknown segmentation architecture '{cfg.arch}'; choose one of {', '.join(DEFAULT_PATCH)}")
    labels = tuple(cfg.labels) or infer_labels(train)
    if not labels:
        raise InputError("training masks contain no foreground label")
    first = train[0].image
    patch = tuple(cfg.patch_size) or DEFAULT_PATCH[cfg.arch]
    if len(patch) != first.ndim:
        raise ConfigError(f"patch size {patch} does not fit {first.ndim}-D images ({cfg.arch})")
    in_ch = 3 if cfg.arch == "frozen_encoder" else first.channels
    spec = NetSpec(
        arch=cfg.arch, in_channels=in_ch, num_classes=len(labels) + 1, patch_size=patch,
        channels=tuple(cfg.channels), encoder=cfg.encoder,
    )
    info = SegModelInfo(
        net=spec, labels=labels, label_names=tuple(cfg.label_names), input_size=tuple(cfg.input_size),
        overlap=cfg.overlap, dataset=cfg.dataset,
    )
    return info, in_ch


class SegTrainer:
    """One supervised run, as MONAI's ``SupervisedTrainer``: network, AdamW, Dice+CE and a patch
    loader, a ``TrainState`` it checkpoints after every epoch and a ``Budget`` that ends it."""

    def __init__(self, train: Sequence[Sample], val: Sequence[Sample], cfg: SegTrainConfig, info: SegModelInfo,
                 in_ch: int, out: Path, device: str) -> None:
        import torch
        from monai.data import DataLoader, Dataset
        from monai.losses import DiceCELoss
        from monai.utils import set_determinism

        from medfm._runtime import autocast_dtype

        self.cfg, self.info, self.out, self.device = cfg, info, out, device
        set_determinism(seed=cfg.seed)
        torch.manual_seed(cfg.seed)
        self.net = build_network(info.net).to(device)
        self.opt = torch.optim.AdamW([p for p in self.net.parameters() if p.requires_grad], lr=cfg.lr,
                                     weight_decay=cfg.weight_decay)
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        train_items = _prepare(train, info.labels, tuple(cfg.input_size), in_ch)
        self.val_items = _prepare(val, info.labels, tuple(cfg.input_size), in_ch)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.loader = DataLoader(Dataset(train_items, transform=_transforms(cfg, info.net.patch_size)),
                                 batch_size=cfg.batch_size, shuffle=True, num_workers=0, generator=self.gen)
        self.dtype = autocast_dtype(device, cfg.precision)
        self.segmenter = TrainedSegmenter(self.net, info, device, cfg.precision)
        self.state = TrainState()
        self.budget = Budget(cfg.minutes, cfg.cpu_minutes, cfg.max_steps, cfg.epochs).start()
        self.best_weights: dict[str, Any] | None = None
        self.stopped = False
        self._last_val = time.perf_counter()

    def resume(self) -> None:
        """Continue from ``checkpoint.pt`` (nothing there: start afresh); re-export the best weights,
        in case a kill came between the checkpoint and their export."""
        path = self.out / CHECKPOINT_FILE
        if not path.is_file():
            if (self.out / "train_state.pt").is_file():  # before checkpoint.pt: weights and state in two files
                raise InputError(f"{self.out}: written by an older medfm (train_state.pt + last.safetensors), which "
                                 f"cannot be resumed consistently; train into a new --out")
            return
        self.state, self.best_weights = TrainState.load(path, self.net, self.opt, self.gen)
        self.budget.start(self.state.elapsed, self.state.cpu)
        if self.best_weights is not None:
            save_weights(self.best_weights, self.out / WEIGHTS_FILE)
        st = self.state
        _log(f"train-seg: resumed at epoch {st.epoch}, step {st.step}, {st.elapsed / 60:.1f} min done")

    def finished(self) -> bool:
        return self.stopped or self.budget.epochs_done(self.state.epoch)

    def run_epoch(self) -> list[float]:
        """One pass over the training patches (cut short when the step or time budget runs out)."""
        self.net.train()
        losses = []
        for batch in self.loader:
            losses.append(self.train_step(batch))
            if self.budget.steps_done(self.state.step) or self.budget.out_of_time():
                self.stopped = True
                break
        self.state.epoch += 1
        return losses

    def train_step(self, batch: dict[str, Any]) -> float:
        """One optimiser step (poly LR decay over the budget); a non-finite loss stops the run."""
        import torch

        frac = self.budget.fraction(self.state.epoch, self.state.step)
        for g in self.opt.param_groups:
            g["lr"] = self.cfg.lr * (1 - frac) ** 0.9
        x, y = batch["image"].to(self.device), batch["label"].to(self.device)
        dev_type = "cuda" if self.device.startswith("cuda") else "cpu"
        with torch.autocast(dev_type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            logits = self.net(x)
        loss = self.loss_fn(logits.float(), y)  # the loss in fp32 whatever the autocast dtype
        value = float(loss.item())
        if not math.isfinite(value):
            self._diverged(value)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.state.step += 1
        return value

    def _diverged(self, value: float) -> None:
        st = self.state
        prec = "bf16 autocast" if self.dtype is not None else "fp32"
        kept = f"its last checkpoint (epoch {st.epoch}) is kept in {self.out}" if st.epoch else "nothing was saved"
        raise TrainingDivergedError(
            f"training loss is {value} at step {st.step + 1} (epoch {st.epoch + 1}, {prec}, lr {self.cfg.lr:g}); "
            f"stopped, {kept}; try {'--precision fp32 or ' if self.dtype is not None else ''}a lower --lr")

    def end_epoch(self, losses: list[float]) -> None:
        """Record the epoch, validate when due (keeping the best weights), checkpoint."""
        st, b, cfg = self.state, self.budget, self.cfg
        rec = {"epoch": st.epoch, "step": st.step, "loss": float(np.mean(losses)) if losses else math.nan,
               "minutes": b.elapsed() / 60, "cpu_minutes": b.cpu() / 60}
        last = self.stopped or b.epochs_done(st.epoch)
        time_for_val = cfg.val_every_s > 0 and time.perf_counter() - self._last_val >= cfg.val_every_s
        improved = False
        if self.val_items and (st.epoch % max(cfg.val_every, 1) == 0 or last or time_for_val):
            rec["val_dice"], improved = self.validate()
        elif not self.val_items and last:  # no val split: the last weights are the model
            self.best_weights, st.best_epoch, improved = weights_to_save(self.net), st.epoch, True
        st.history.append(rec)
        _log("train-seg: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.items()))
        self.checkpoint(export_best=improved)
        if b.out_of_time():
            self.stopped = True

    def validate(self) -> tuple[float, bool]:
        """Mean val Dice now; (dice, whether it is the best so far, its weights then kept)."""
        self._last_val = time.perf_counter()
        dice = evaluate(self.segmenter, self.val_items)
        improved = self.state.record_val(dice)
        if improved:
            self.best_weights = weights_to_save(self.net)
        return dice, improved

    def checkpoint(self, export_best: bool) -> None:
        """Write the one checkpoint file, then (if the best changed) export ``model.safetensors``."""
        self.state.elapsed, self.state.cpu = self.budget.elapsed(), self.budget.cpu()
        self.state.save(self.out / CHECKPOINT_FILE, self.net, self.opt, self.gen, self.best_weights)
        if export_best and self.best_weights is not None:
            save_weights(self.best_weights, self.out / WEIGHTS_FILE)


def _finish(trainer: SegTrainer, train: Sequence[Sample], val: Sequence[Sample], resume: bool) -> SegTrainResult:
    """Record the run in the model card (with a warning when val never improved), train the refiner
    and choose the inference settings on val; write the card and ``history.json``."""
    from medfm._paths import file_hash

    cfg, st, info, out = trainer.cfg, trainer.state, trainer.info, trainer.out
    seconds, cpu = trainer.budget.elapsed(), trainer.budget.cpu()
    if not (out / WEIGHTS_FILE).is_file():
        save_weights(trainer.net, out / WEIGHTS_FILE)
    info.val_dice = None if st.best == -math.inf else float(st.best)
    info.extra = {"best_epoch": st.best_epoch, "epochs": st.epoch, "steps": st.step, "minutes": seconds / 60,
                  "cpu_minutes": cpu / 60, "autocast": "bf16" if trainer.dtype is not None else "none (fp32)",
                  "config": _cfg_dict(cfg)}
    warning = _no_improvement_warning(st)
    if warning:
        info.extra["warning"] = warning
        _log(f"train-seg: WARNING: {warning}")
    segmenter = trainer.segmenter
    if cfg.refine:
        segmenter.refiner = _train_refiner(train, val, cfg, out, resume, trainer.device)
        info.extra["refiner"] = {"best_val_dice_on_crops": segmenter.refiner.info.val_dice, **segmenter.refiner.info.extra}
    if cfg.select_inference and val:
        _choose_inference(segmenter, val, cfg, out)
    description = f"WARNING: {warning}" if warning else None
    write_card(out, info, name=f"{cfg.dataset or 'folder'}-{cfg.arch}", weights_hash=file_hash(out / WEIGHTS_FILE),
               description=description)
    write_durably(out / "history.json", json.dumps(st.history, indent=2).encode())
    return SegTrainResult(out, info.val_dice, st.best_epoch, st.epoch, st.step, seconds, st.history, cpu,
                          warnings=[warning] if warning else [])


def _no_improvement_warning(st: TrainState) -> str | None:
    """The run's validation never rose above its first value (or never above 0): say so."""
    if not st.never_improved():
        return None
    return (f"val Dice never rose above its first validation ({st.first_val:.4f} at epoch {st.first_val_epoch}; "
            f"best {st.best:.4f} in {st.n_val} validations): the saved model is the epoch-{st.best_epoch} weights "
            "and is probably not trained; check the loss in history.json, the learning rate and the precision")


def _choose_inference(segmenter: TrainedSegmenter, val: Sequence[Sample], cfg: SegTrainConfig, out: Path) -> None:
    """Load the best weights and pick flip TTA / post-processing / refiner use on val (into the info)."""
    info = segmenter.info
    load_weights(segmenter.net, out / WEIGHTS_FILE)
    choice = select_inference(segmenter, val, cfg.flip_axes)
    info.tta_flips, info.postprocess = tuple(choice["tta_flips"]), choice["postprocess"]
    info.refine_margin, info.refine_passes = choice["refine_margin"], choice["refine_passes"]
    info.extra["inference_selection"] = choice
    _log(f"train-seg: inference settings chosen on val: flips {info.tta_flips}, postprocess {info.postprocess}, "
         f"refine margin {info.refine_margin} x {info.refine_passes} passes (val Dice {choice['val_dice']:.4f})")


def _train_refiner(train: Sequence[Sample], val: Sequence[Sample], cfg: SegTrainConfig, out: Path, resume: bool,
                   device: str) -> TrainedSegmenter:
    """Second stage of a 2D cascade: the same network family trained on crops around the reference
    object (``refine.crop_samples``), saved in ``out/refine``; its val split is crops of val."""
    from dataclasses import replace

    from medfm.tasks.segmentation.refine import REFINE_DIR, crop_samples

    if train[0].image.ndim != 2:
        raise ConfigError("refine (a crop-refining second stage) is 2D only")
    size = tuple(cfg.refine_input_size)
    aspect = size[0] / size[1]
    f = cfg.refine_budget
    rcfg = replace(
        cfg, input_size=size, patch_size=tuple(cfg.refine_patch_size), refine=False, select_inference=False,
        minutes=cfg.minutes * f if cfg.minutes else None, cpu_minutes=cfg.cpu_minutes * f if cfg.cpu_minutes else None,
        max_steps=max(1, round(cfg.max_steps * f)) if cfg.max_steps else None, seed=cfg.seed + 1,
        dataset=f"{cfg.dataset}-refine" if cfg.dataset else "refine",
    )
    tr = crop_samples(train, aspect, cfg.refine_crops, seed=cfg.seed)
    va = crop_samples(val, aspect, 1, seed=cfg.seed, jitter=False)
    _log(f"train-seg: training the refiner on {len(tr)} crops of {len(train)} images ({len(va)} val crops)")
    train_segmentation(tr, va, rcfg, out / REFINE_DIR, resume=resume, device=device)
    return TrainedSegmenter.load(out / REFINE_DIR, device=device, precision=cfg.precision)


def select_inference(segmenter: TrainedSegmenter, val: Sequence[Sample], flip_axes: Sequence[int] = (),
                     min_gain: float = 1e-4) -> dict[str, Any]:
    """Choose flip test-time augmentation (only over axes flipped in training) and post-processing
    by mean Dice on the val samples at their native size (post-processing: none, largest component
    filled, and in 2D the fitted ellipse filled), and with a trained refiner (2D cascade) with and
    without it (one or two passes); a richer option must beat a simpler one by ``min_gain``. Returns {"refine_margin",
    "tta_flips", "postprocess", "val_dice", "candidates"}."""
    from medfm.tasks.segmentation.model import POSTPROCESS, postprocess_labels
    from medfm.tasks.segmentation.refine import INFER_MARGIN

    info = segmenter.info
    k = info.net.num_classes
    saved = (info.tta_flips, info.postprocess, info.refine_margin, info.refine_passes)
    flips = [()] + [tuple(flip_axes[: i + 1]) for i in range(len(flip_axes))]
    stages = [(0.0, 1)] + ([(INFER_MARGIN, 1), (INFER_MARGIN, 2)] if getattr(segmenter, "refiner", None) is not None else [])
    gts = [labels_to_index(s.mask.array, info.labels, where=f"mask of {s.id}") for s in val]
    cands = []
    try:
        for margin, passes in stages:
            info.refine_margin, info.refine_passes = margin, passes
            for tta in flips:
                info.tta_flips = tta
                idx = [segmenter.probabilities(s.image.array).argmax(axis=0) for s in val]
                for post in POSTPROCESS:
                    if post == "ellipse_fill" and len(info.net.patch_size) != 2:
                        continue
                    d = [mean_dice(postprocess_labels(i, post, k - 1), g, k) for i, g in zip(idx, gts)]
                    cands.append({"refine_margin": margin, "refine_passes": passes, "tta_flips": list(tta), "postprocess": post,
                                  "val_dice": float(np.mean(d))})
    finally:
        info.tta_flips, info.postprocess, info.refine_margin, info.refine_passes = saved
    best = cands[0]  # candidates run from simplest to richest
    for c in cands[1:]:
        if c["val_dice"] > best["val_dice"] + min_gain:
            best = c
    return {**best, "candidates": cands}


def _cfg_dict(cfg: SegTrainConfig) -> dict[str, Any]:
    from medfm._config import to_dict

    return to_dict(cfg)
