"""SAM-family promptable segmenters (SAM, MedSAM, SlimSAM) through transformers ``SamModel``.

Geometry (see ``medfm.models.base``): boxes (K, 4) as (x0, y0, x1, y1) and points (K, P, 2) or
(P, 2) as (x, y), in pixels of the image given to ``set_image``. They are mapped onto the
model grid with the card's preprocessing (SAM: longest side to 1024 + pad; MedSAM: straight
resize to 1024x1024 with per-image min-max to [0, 1] and no mean/std), so the same prompt
means the same anatomy whatever the recipe. ``set_image`` runs the image encoder once and
caches the embedding; each ``predict`` runs only the prompt encoder and mask decoder.
After ``predict``: ``low_res_logits`` (K, h, w) float32 and ``iou_scores`` (K,) float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medfm._optional import optional_import
from medfm.errors import ConfigError, InputError, MissingWeightsError
from medfm.models.adapters._common import TorchAdapter, quiet_transformers, seeded
from medfm.models.card import ModelCard
from medfm.models.transforms import Geometry, geometry, prepare_one

if TYPE_CHECKING:
    import torch


class SamAdapter(TorchAdapter):
    """Box / point prompted masks with a cached image embedding."""

    def __init__(self, card: ModelCard, model: Any, device: str) -> None:
        super().__init__(card, device)
        self.model = model
        self._place(model)
        self._embedding: torch.Tensor | None = None
        self._geo: Geometry | None = None
        self.low_res_logits: np.ndarray | None = None
        self.iou_scores: np.ndarray | None = None
        self.encoder_calls = 0  # how many times the image encoder ran (the cache is observable)

    def trainable_module(self) -> torch.nn.Module:
        """The whole SamModel (MedSAM-style fine-tuning usually freezes the prompt encoder)."""
        return self.model

    def modules_for_hash(self) -> list[torch.nn.Module]:
        return [self.model]

    def set_image(self, image: np.ndarray) -> None:
        """Run the image encoder on (H, W) or (C, H, W) ``image`` and cache the embedding."""
        self.require("segmenter", "set_image")
        x = prepare_one(image, self.card.preprocess, where="set_image")
        hw = tuple(int(s) for s in np.asarray(image).shape[-2:])
        with self.autocast():
            emb = self.model.get_image_embeddings(x[None].to(self.device))
        emb = emb if hasattr(emb, "float") else emb.image_embeddings
        self._embedding = emb.float()
        self._geo = geometry(hw, self.card.preprocess)  # type: ignore[arg-type]
        self.encoder_calls += 1

    def _to_grid(self, xy: np.ndarray) -> np.ndarray:
        assert self._geo is not None
        sy, sx = self._geo.scale_yx
        oy, ox = self._geo.offset_yx
        out = np.asarray(xy, dtype=np.float32).copy()
        out[..., 0::2] = out[..., 0::2] * sx - ox
        out[..., 1::2] = out[..., 1::2] * sy - oy
        return out

    def predict(
        self, boxes: Any = None, points: Any = None, point_labels: Any = None, multimask_output: bool = False
    ) -> np.ndarray:
        """Masks (K, H, W) bool for K prompts on the last ``set_image`` image.

        boxes: (K, 4) or (4,) x0, y0, x1, y1. points: (K, P, 2) or (P, 2) x, y (one prompt of P
        points when 2D). point_labels: (K, P) or (P,), 1 = foreground, 0 = background
        (default all 1). Given together, boxes and points must have the same K.
        """
        import torch
        import torch.nn.functional as F

        self.require("segmenter", "predict")
        if self._embedding is None or self._geo is None:
            raise ConfigError("predict() needs set_image() first")
        if boxes is None and points is None:
            raise InputError("predict(): give boxes and/or points")
        kwargs: dict[str, Any] = {}
        k = None
        if boxes is not None:
            b = np.asarray(boxes, dtype=np.float32)
            b = b[None] if b.ndim == 1 else b
            if b.ndim != 2 or b.shape[1] != 4:
                raise InputError(f"boxes: expected (K, 4) x0, y0, x1, y1, got shape {b.shape}")
            if np.any(b[:, 2] < b[:, 0]) or np.any(b[:, 3] < b[:, 1]):
                raise InputError("boxes: need x1 >= x0 and y1 >= y0 (format x0, y0, x1, y1)")
            k = b.shape[0]
            kwargs["input_boxes"] = torch.from_numpy(self._to_grid(b))[None].to(self.device)
        if points is not None:
            p = np.asarray(points, dtype=np.float32)
            p = p[None] if p.ndim == 2 else p
            if p.ndim != 3 or p.shape[-1] != 2:
                raise InputError(f"points: expected (K, P, 2) or (P, 2) x, y, got shape {p.shape}")
            labels = np.ones(p.shape[:2], dtype=np.int64) if point_labels is None else np.asarray(point_labels)
            labels = labels[None] if labels.ndim == 1 else labels
            if labels.shape != p.shape[:2]:
                raise InputError(f"point_labels: shape {labels.shape} does not match points {p.shape[:2]}")
            if k is not None and p.shape[0] != k:
                raise InputError(f"{k} boxes but {p.shape[0]} point prompts")
            k = p.shape[0]
            kwargs["input_points"] = torch.from_numpy(self._to_grid(p))[None].to(self.device)
            kwargs["input_labels"] = torch.from_numpy(labels.astype(np.int64))[None].to(self.device)
        with self.autocast():
            out = self.model(image_embeddings=self._embedding, multimask_output=multimask_output, **kwargs)
        logits = out.pred_masks[0].float()  # (K, M, h, w)
        iou = out.iou_scores[0].float()  # (K, M)
        if multimask_output:  # keep each prompt's best mask
            best = iou.argmax(-1)
            logits = logits[torch.arange(logits.shape[0]), best][:, None]
            iou = iou.gather(-1, best[:, None])
        logits, iou = logits[:, 0], iou[:, 0]
        self.low_res_logits = logits.cpu().numpy()
        self.iou_scores = iou.cpu().numpy()
        geo = self._geo
        grid = tuple(self.card.preprocess.output_size)
        up = F.interpolate(logits[:, None], size=grid, mode="bilinear", align_corners=False)
        oy, ox = geo.offset_yx
        vh, vw = geo.valid_hw
        up = up[..., oy : oy + vh, ox : ox + vw]
        full = F.interpolate(up, size=geo.in_hw, mode="bilinear", align_corners=False)[:, 0]
        assert k is not None
        return (full > 0).cpu().numpy()


def _sam_config(card: ModelCard) -> Any:
    transformers = optional_import("transformers")
    cfg = dict(card.config.get("sam_config") or {})
    if not cfg:
        raise MissingWeightsError(f"model '{card.id}' has no weights folder and no config for a random init")
    return transformers.SamConfig(**cfg)


def build(card: ModelCard, folder: Path | None, weights: Path | None, device: str) -> SamAdapter:
    transformers = optional_import("transformers")
    quiet_transformers()
    if weights is not None and weights.is_dir():
        folder, weights = weights, None
    if weights is not None:
        raise ConfigError(f"{weights}: SAM models load from a transformers folder, not a single file")
    if folder is None:
        with seeded(int(card.config.get("seed", 0))):
            model = transformers.SamModel(_sam_config(card))
    else:
        if not (folder / "config.json").is_file():
            raise MissingWeightsError(f"{folder}: no config.json; not a transformers SAM folder for {card.id}")
        model = transformers.SamModel.from_pretrained(str(folder), local_files_only=True)
    return SamAdapter(card, model.eval(), device)


def save(adapter: SamAdapter, folder: Path) -> None:
    adapter.model.save_pretrained(str(folder))
