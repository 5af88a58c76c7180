"""Ensembles of trained segmentation models: the mean of the members' softmax probabilities.

As nnU-Net ensembles its cross-validation folds: networks trained with other seeds make other
mistakes, so a leak into tissue beside the object that one member makes is outvoted by the
others, and the mean is more robust than any one member. Each member keeps the inference
settings chosen on val when it was trained (flip TTA, refiner); post-processing is applied
once, to the mean, and chosen again on val for the ensemble.

``build_ensemble(members, out, val)`` copies the members' model files into ``out/members/<k>``
(the folder is self-contained and can be moved) and writes a model card listing them with their
weights' SHA-256; ``load_segmenter(folder)`` reads back either a single model or an ensemble.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from medfm.data.card import Sample
from medfm.errors import ConfigError, InputError
from medfm.tasks.segmentation.model import (
    CARD_FILE,
    WEIGHTS_FILE,
    SegModelInfo,
    Segmenter,
    TrainedSegmenter,
    is_ensemble_dir,
    is_trained_model_dir,
    read_card_config,
    read_info,
    write_card,
)

MEMBERS_DIR = "members"


@dataclass
class SegEnsembleConfig:
    """What ``medfm seg-ensemble`` was given: the member folders and the dataset whose val split
    chooses the post-processing (and whose test split is reported)."""

    members: tuple[str, ...]
    dataset: str = ""
    select_inference: bool = True
    seed: int = 0
    precision: str = "auto"


class EnsembleSegmenter(Segmenter):
    """Several trained segmenters; probabilities are their mean at the source size."""

    def __init__(self, members: Sequence[TrainedSegmenter], info: SegModelInfo) -> None:
        if len(members) < 2:
            raise ConfigError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = list(members)
        self.info = info

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu", precision: str = "auto") -> EnsembleSegmenter:
        from medfm._paths import file_hash

        folder = Path(folder)
        if not is_ensemble_dir(folder):
            raise InputError(f"{folder / CARD_FILE}: not an ensemble written by medfm seg-ensemble")
        entries = read_card_config(folder)["ensemble"].get("members", [])
        members = []
        for e in entries:
            sub = folder / e["dir"]
            want = e.get("weights_sha256")
            if want and is_trained_model_dir(sub) and file_hash(sub / WEIGHTS_FILE) != want:
                raise InputError(f"{sub / WEIGHTS_FILE}: changed since the ensemble was built (SHA-256 differs from its card)")
            members.append(TrainedSegmenter.load(sub, device, precision))
        return cls(members, read_info(folder))

    def probabilities(self, array: np.ndarray) -> np.ndarray:
        """(C, *spatial) -> (K+1, *spatial): the mean of the members' probabilities (each with its own
        flip TTA and refiner as chosen when it was trained)."""
        total = None
        for m in self.members:
            p = m.probabilities(array)
            total = p if total is None else total + p
        return total / len(self.members)


def load_segmenter(folder: str | Path, device: str = "cpu", precision: str = "auto") -> Segmenter:
    """A folder written by ``train-seg`` or by ``seg-ensemble`` -> a segmenter ready to predict."""
    if is_ensemble_dir(folder):
        return EnsembleSegmenter.load(folder, device, precision)
    return TrainedSegmenter.load(folder, device, precision)


def check_members(folders: Sequence[str | Path], dataset: str | None = None) -> list[SegModelInfo]:
    """Each folder is a trained model (not an ensemble), all with the same labels, dimensions and
    (when given) training dataset; returns their infos. Duplicates are refused."""
    if len(folders) < 2:
        raise ConfigError(f"an ensemble needs at least 2 trained models, got {len(folders)}")
    resolved = [Path(f).resolve() for f in folders]
    if len(set(resolved)) != len(resolved):
        raise ConfigError("the same model folder is given twice; an ensemble's members must differ")
    infos = []
    for f in folders:
        f = Path(f)
        if is_ensemble_dir(f):
            raise InputError(f"{f}: is itself an ensemble; give the trained model folders it was built from")
        if not is_trained_model_dir(f):
            raise InputError(f"{f}: not a trained model folder (needs {CARD_FILE} and {WEIGHTS_FILE}, written by train-seg)")
        infos.append(read_info(f))
    first = infos[0]
    for f, info in zip(folders[1:], infos[1:]):
        if tuple(info.labels) != tuple(first.labels):
            raise InputError(f"{f}: labels {list(info.labels)} differ from {folders[0]}'s {list(first.labels)}")
        if info.net.spatial_dims != first.net.spatial_dims:
            raise InputError(f"{f}: a {info.net.spatial_dims}-D model; {folders[0]} is {first.net.spatial_dims}-D")
    if dataset is not None:
        for f, info in zip(folders, infos):
            if info.dataset and info.dataset != dataset:
                raise InputError(f"{f}: trained on '{info.dataset}', not on '{dataset}'")
    return infos


def _copy_member(src: Path, dst: Path) -> None:
    """The files inference needs (card, selected weights, the refiner's); not the training state."""
    from medfm.tasks.segmentation.refine import REFINE_DIR

    for sub in (Path("."), Path(REFINE_DIR)):
        if not (src / sub / WEIGHTS_FILE).is_file():
            continue
        (dst / sub).mkdir(parents=True, exist_ok=True)
        for name in (CARD_FILE, WEIGHTS_FILE):
            shutil.copy2(src / sub / name, dst / sub / name)


def build_ensemble(folders: Sequence[str | Path], out: str | Path, val: Sequence[Sample] = (),
                   config: SegEnsembleConfig | None = None, device: str = "cpu") -> EnsembleSegmenter:
    """Copy the members into ``out/members``, choose the post-processing on ``val`` (none when
    ``val`` is empty or ``config.select_inference`` is off: the first member's is kept) and write
    the ensemble's card. Returns the loaded ensemble."""
    from medfm._config import to_dict
    from medfm._paths import file_hash
    from medfm.tasks.segmentation.train import select_inference

    out = Path(out)
    cfg = config or SegEnsembleConfig(members=tuple(str(f) for f in folders))
    infos = check_members(folders, cfg.dataset or None)
    entries = []
    for k, f in enumerate(folders):
        rel = f"{MEMBERS_DIR}/{k}"
        _copy_member(Path(f), out / rel)
        entries.append({"dir": rel, "source": str(Path(f).resolve()), "weights_sha256": file_hash(out / rel / WEIGHTS_FILE),
                        "val_dice": infos[k].val_dice, "tta_flips": list(infos[k].tta_flips),
                        "refine_margin": infos[k].refine_margin, "refine_passes": infos[k].refine_passes,
                        "postprocess": infos[k].postprocess})
    members = [TrainedSegmenter.load(out / e["dir"], device, cfg.precision) for e in entries]
    # the ensemble's own settings: members apply their TTA and refiner inside ``probabilities``
    info = replace(infos[0], tta_flips=(), refine_margin=0.0, refine_passes=1, val_dice=None,
                   dataset=cfg.dataset or infos[0].dataset, extra={})
    ens = EnsembleSegmenter(members, info)
    if cfg.select_inference and val:
        choice = select_inference(ens, val, ())
        info.postprocess, info.val_dice = choice["postprocess"], choice["val_dice"]
        info.extra["inference_selection"] = choice
    info.extra["config"] = to_dict(cfg)
    combined = _combined_hash(e["weights_sha256"] for e in entries)
    write_card(out, info, name=f"{info.dataset or 'folder'}-ensemble{len(entries)}", weights_hash=combined,
               extra_config={"ensemble": {"members": entries, "combine": "mean of softmax probabilities"}},
               description=f"mean of {len(entries)} models trained by medfm train-seg on {info.dataset or 'a folder'}")
    return ens


def _combined_hash(parts: Any) -> str:
    """SHA-256 of the members' hashes in order: one identifier for the ensemble's weights."""
    import hashlib

    h = hashlib.sha256()
    for p in parts:
        h.update(str(p).encode())
    return h.hexdigest()
