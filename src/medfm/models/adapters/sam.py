"""SAM-family promptable segmenters (SAM, MedSAM, SlimSAM) through transformers ``SamModel``.

Geometry (see ``medfm.models.base``): boxes (K, 4) as (x0, y0, x1, y1) and points (K, P, 2) or
(P, 2) as (x, y), in pixels of the image given to ``set_image``. They are mapped onto the
model grid with the card's preprocessing (SAM: longest side to 1024 + pad; MedSAM: straight
resize to 1024x1024 with per-image min-max to [0, 1] and no mean/std), so the same prompt
means the same anatomy whatever the recipe. ``set_image`` runs the image encoder once and
caches the embedding; each ``predict`` runs only the prompt encoder and mask decoder.
After ``predict``: ``low_res_logits`` (K, h, w) float32 and ``iou_scores`` (K,) float32.

The mask decoder runs on tensors cached by ``set_image`` in token layout ((h*w, C), contiguous):
transformers' ``SamMaskDecoder.forward`` mixes an (N, C, H, W) embedding with token-major
activations, so every add and linear in its two-way transformer works on strided memory, and
its 2x2-stride-2 transposed convolutions are slow on CPU. ``_decode`` calls the same modules
(attention projections, norms, MLPs, hypernetworks, IoU head) in transformers' order, computes
the first block's projections of the image tokens (which no prompt changes) once per image,
takes the softmax of image-to-token attention over its few keys in a layout the CPU handles
well, and runs the upscaling as matmuls on pixel rows, un-shuffling only the final low-res
mask: same math, float-rounding differences only (checked against ``SamModel.forward`` in the
tests and by the benchmark). The decoder runs in float32 unless ``precision="bf16"``: bf16
moves near-zero logits across the threshold.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
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
        self._tokens: tuple[torch.Tensor, torch.Tensor] | None = None  # (keys, positional) (1, 1, h*w, C)
        self._layer0: tuple[str, tuple[torch.Tensor, ...]] | None = None  # (precision, first-layer projections)
        self._geo: Geometry | None = None
        self.low_res_logits = None
        self.iou_scores = None
        self.encoder_calls = 0  # how many times the image encoder ran (the cache is observable)

    def trainable_module(self) -> torch.nn.Module:
        """The whole SamModel (MedSAM-style fine-tuning usually freezes the prompt encoder)."""
        return self.model

    def modules_for_hash(self) -> list[torch.nn.Module]:
        return [self.model]

    def set_image(self, image: np.ndarray, modality: str | None = None) -> None:
        """Run the image encoder on (H, W) or (C, H, W) ``image`` and cache the embedding
        (``modality`` "CT": the card's CT window first, as MedSAM's preprocessing does)."""
        self.require("segmenter", "set_image")
        x = prepare_one(image, self.card.preprocess, where="set_image", modality=modality)
        hw = tuple(int(s) for s in np.asarray(image).shape[-2:])
        with self.autocast():
            emb = self.model.get_image_embeddings(x[None].to(self.device))
        emb = emb if hasattr(emb, "float") else emb.image_embeddings
        self._embedding = emb.float()
        self._tokens = self._token_cache(self._embedding)
        self._layer0 = None
        self._geo = geometry(hw, self.card.preprocess)  # type: ignore[arg-type]
        self.encoder_calls += 1

    def image_state(self) -> tuple[Any, ...]:
        """The embedding cached by the last ``set_image`` (keep it to switch back to that image
        with ``set_image_state`` without running the image encoder again)."""
        if self._embedding is None:
            raise ConfigError("image_state() needs set_image() first")
        return (self._embedding, self._tokens, self._geo, self._layer0)

    def set_image_state(self, state: tuple[Any, ...]) -> None:
        """Make an embedding from ``image_state`` the current one (prompts then apply to its image)."""
        self._embedding, self._tokens, self._geo, self._layer0 = state

    def _token_cache(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image embedding plus the no-mask dense prompt, and the image-wide positional
        embedding, as contiguous (1, 1, h*w, C) token rows (what the two-way transformer reads)."""
        import torch

        m = self.model
        with torch.inference_mode():
            dense = m.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
            keys = (emb + dense).flatten(2).transpose(1, 2).unsqueeze(1).contiguous()
            pe = m.get_image_wide_positional_embeddings().float()
            pe = pe.flatten(2).transpose(1, 2).unsqueeze(1).contiguous()
        return keys, pe

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
        with self._decoder_precision():
            logits, iou = self._decode(multimask_output=multimask_output, **kwargs)  # (K, M, h, w), (K, M)
            logits, iou = logits.float(), iou.float()
            if multimask_output:  # keep each prompt's best mask
                best = iou.argmax(-1)
                logits = logits[torch.arange(logits.shape[0]), best][:, None]
                iou = iou.gather(-1, best[:, None])
            logits, iou = logits[:, 0], iou[:, 0]
            self.low_res_logits = logits.cpu().numpy()
            self.iou_scores = iou.cpu().numpy()
            # low-res logits -> model grid -> crop the padding -> input size (the SAM recipe);
            # the last resize is skipped when the crop already has the input size (identity)
            geo = self._geo
            grid = tuple(self.card.preprocess.output_size)
            up = F.interpolate(logits[:, None], size=grid, mode="bilinear", align_corners=False)
            oy, ox = (max(round(-o), 0) for o in geo.offset_yx)  # where the padding ends
            vh, vw = geo.valid_hw
            up = up[..., oy : oy + vh, ox : ox + vw]
            if tuple(up.shape[-2:]) != tuple(geo.in_hw):
                up = F.interpolate(up, size=geo.in_hw, mode="bilinear", align_corners=False)
            assert k is not None
            return (up[:, 0] > 0).cpu().numpy()

    @contextlib.contextmanager
    def _decoder_precision(self) -> Iterator[None]:
        """Inference mode; bf16 autocast only when asked for explicitly (``precision="bf16"``)."""
        import torch

        if self.precision == "bf16":
            with self.autocast():
                yield
        else:
            with torch.inference_mode():
                yield

    def _decode(
        self, multimask_output: bool, input_boxes: Any = None, input_points: Any = None, input_labels: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder on the cached tokens -> (K, M, 4h, 4w) logits, (K, M) IoU.

        Mirrors transformers' ``SamModel.forward`` / ``SamMaskDecoder.forward`` for image
        embeddings without a mask prompt, calling the same submodules (see the module docstring).
        """
        import torch
        import torch.nn.functional as F

        assert self._tokens is not None and self._embedding is not None
        m = self.model
        md = m.mask_decoder
        sparse, _ = m.prompt_encoder(
            input_points=input_points, input_labels=input_labels, input_boxes=input_boxes, input_masks=None
        )
        k = sparse.shape[1]
        keys, pe = self._tokens
        out_tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)[None, None].expand(1, k, -1, -1)
        tokens = torch.cat((out_tokens, sparse), dim=2).to(md.iou_token.weight.dtype)
        tr = md.transformer
        queries = tokens
        for i, layer in enumerate(tr.layers):  # keys become (K, 1, h*w, C) in the first block
            queries, keys = self._block(layer, queries, keys, tokens, pe, first=i == 0)
        attn_out = _attention(tr.final_attn_token_to_image, queries + tokens, keys + pe, keys)
        queries = tr.layer_norm_final_attn(queries + attn_out)
        iou = md.iou_prediction_head(queries[:, :, 0, :])[0]  # (K, n_mask_tokens)
        sel = slice(1, md.num_mask_tokens) if multimask_output else slice(0, 1)
        idx = range(md.num_mask_tokens)[sel]
        hyper = torch.stack([md.output_hypernetworks_mlps[i](queries[0, :, 1 + i, :]) for i in idx], dim=1)  # (K, M, c)
        # upscaling: two ConvTranspose2d(kernel 2, stride 2) = per-pixel matmuls to 2x2 sub-pixels;
        # rows stay in (k, y, x, a1, b1, a2, b2) order and only the final logits are un-shuffled
        h, w = self._embedding.shape[-2:]
        ln = md.upscale_layer_norm
        u = keys.reshape(-1, keys.shape[-1])  # (K*h*w, C)
        for conv, norm in ((md.upscale_conv1, ln), (md.upscale_conv2, None)):
            wgt = conv.weight.permute(0, 2, 3, 1).reshape(conv.in_channels, -1)  # (Cin, 2*2*Cout)
            u = torch.addmm(conv.bias.repeat(4), u, wgt).reshape(-1, conv.out_channels)
            if norm is not None:
                u = F.layer_norm(u, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
            u = md.activation(u)
        masks = torch.bmm(u.reshape(k, h * w * 16, -1), hyper.transpose(1, 2))  # (K, h*w*16, M)
        masks = masks.reshape(k, h, w, 2, 2, 2, 2, -1).permute(0, 7, 1, 3, 5, 2, 4, 6).reshape(k, -1, 4 * h, 4 * w)
        return masks, iou[:, sel]

    def _block(
        self, layer: Any, queries: torch.Tensor, keys: torch.Tensor, tokens: torch.Tensor, pe: torch.Tensor, first: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``SamTwoWayAttentionBlock.forward`` (same modules, same order). In the first block the
        image side is the cached embedding, so its projections (k/v of token-to-image, q of
        image-to-token attention) are computed once per image."""
        t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
        if layer.skip_first_layer_pe:
            queries = _attention(layer.self_attn, queries, queries, queries)
        else:
            query = queries + tokens
            queries = queries + _attention(layer.self_attn, query, query, queries)
        queries = layer.layer_norm1(queries)
        if first:
            if self._layer0 is None or self._layer0[0] != self.precision:
                kp = keys + pe
                self._layer0 = (self.precision, (t2i.k_proj(kp), t2i.v_proj(keys), i2t.q_proj(kp)))
            k_t2i, v_t2i, q_i2t = self._layer0[1]
        else:
            kp = keys + pe
            k_t2i, v_t2i, q_i2t = t2i.k_proj(kp), t2i.v_proj(keys), i2t.q_proj(kp)
        queries = layer.layer_norm2(queries + _attend(t2i, t2i.q_proj(queries + tokens), k_t2i, v_t2i))
        queries = layer.layer_norm3(queries + layer.mlp(queries))
        out = _attend(i2t, q_i2t, i2t.k_proj(queries + tokens), i2t.v_proj(queries))  # (K, 1, h*w, C)
        return queries, layer.layer_norm4(keys + out)


def _attention(attn: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``SamAttention.forward``: projections, then ``_attend``."""
    return _attend(attn, attn.q_proj(query), attn.k_proj(key), attn.v_proj(value))


def _attend(attn: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``SamAttention.forward`` after its q/k/v projections (softmax attention, no mask):
    (B, P, N, Ci) inputs, batches of size 1 broadcast over the others; returns (B', P, Nq, C).

    Image-to-token attention (4096 queries, ~7 keys) is computed as keys x queries with the
    softmax over the short key axis: 5x faster on CPU than SDPA's kernel for that shape."""
    import torch
    import torch.nn.functional as F

    n = attn.num_attention_heads

    def heads(x: torch.Tensor) -> torch.Tensor:
        b, p, t, c = x.shape
        return x.reshape(b * p, t, n, c // n).transpose(1, 2)

    qh, kh, vh = heads(q), heads(k), heads(v)
    bsz = max(qh.shape[0], kh.shape[0])
    qh, kh, vh = (x.expand(bsz, -1, -1, -1) for x in (qh, kh, vh))
    if kh.shape[2] <= 32 < qh.shape[2]:
        w = torch.softmax(torch.matmul(kh, qh.transpose(-1, -2)) * attn.scaling, dim=-2)  # (B', n, Nk, Nq)
        out = torch.matmul(w.transpose(-1, -2), vh)
    else:
        out = F.scaled_dot_product_attention(qh, kh, vh, dropout_p=0.0, scale=attn.scaling)  # (B', n, Nq, c)
    out = out.transpose(1, 2).reshape(-1, q.shape[1], q.shape[2], q.shape[3])
    return attn.out_proj(out)


def _sam_config(card: ModelCard) -> Any:
    transformers = optional_import("transformers")
    cfg = dict(card.config.get("sam_config") or {})
    if not cfg:
        raise MissingWeightsError(f"model '{card.id}' has no weights folder and no config for a random init")
    return transformers.SamConfig(**cfg)


FOLDER_FILE: str | None = "config.json"


def build(card: ModelCard, folder: Path | None, weights: Path | None, device: str, **options: Any) -> SamAdapter:
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


def save_trained(module: Any, card: ModelCard, folder: Path) -> None:
    """A fine-tuned transformers model (or a tower wrapping one as ``.model``), ``save_pretrained``."""
    from medfm.models.base import cannot_save

    transformers = optional_import("transformers")
    pretrained = module
    if not isinstance(pretrained, transformers.PreTrainedModel):
        raise cannot_save(card)
    pretrained.save_pretrained(str(folder))
