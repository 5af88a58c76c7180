"""transformers models: ViT, DINOv2 (incl. RAD-DINO), CLIP, SigLIP (incl. MedSigLIP).

Card ``config`` keys:
- ``model_class``: transformers class name (``AutoModel``, ``CLIPModel``, ``SiglipModel``,
  ``SiglipVisionModel``, ``Dinov2Model``, ``ViTModel``).
- ``kind``: ``vision`` (image encoder only) or ``clip`` (image + text towers, joint space).
- ``pool`` (vision kind): ``cls`` = ``last_hidden_state[:, 0]`` (post-layernorm CLS, DINOv2 /
  RAD-DINO convention), ``pooler`` = ``pooler_output``, ``cls_mean`` = concat(CLS, mean patch).
- ``hf_config``: a config dict (with ``model_type``) for random-init test models.
- ``tokenizer``: ``"char"`` builds a tiny character tokenizer (test models; real models read
  the tokenizer files of their folder). ``text_padding``: ``max_length`` for SigLIP.

Images are prepared by medfm's own card-derived transform (``medfm.models.transforms``), not
by ``AutoImageProcessor`` (whose fast/slow variants differ between environments).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medfm._optional import optional_import
from medfm.errors import ConfigError, MissingWeightsError
from medfm.models.adapters._common import TorchAdapter, quiet_transformers, seeded
from medfm.models.card import ModelCard

CHAR_VOCAB = "abcdefghijklmnopqrstuvwxyz0123456789 .,-'/()"


def char_tokenizer(max_length: int) -> Any:
    """A tiny deterministic character-level fast tokenizer for random-init test text towers.

    Ids: <pad>=0, <unk>=1, <bos>=2, <eos>=3, then the lower-case characters of CHAR_VOCAB.
    """
    tokenizers = optional_import("tokenizers")
    transformers = optional_import("transformers")
    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for ch in CHAR_VOCAB:
        vocab.setdefault(ch, len(vocab))
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = tokenizers.normalizers.Lowercase()
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.post_processor = tokenizers.processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 3)]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
        model_max_length=max_length,
    )


class VisionTower(nn.Module):
    """(N, C, H, W) -> (N, D): a transformers vision backbone plus the card's pooling."""

    def __init__(self, model: nn.Module, pool: str) -> None:
        super().__init__()
        self.model = model
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x)
        if self.pool == "pooler":
            return out.pooler_output
        cls = out.last_hidden_state[:, 0]
        if self.pool == "cls_mean":
            return torch.cat([cls, out.last_hidden_state[:, 1:].mean(1)], dim=-1)
        return cls


class ClipImageTower(nn.Module):
    """Image side of CLIPModel / SiglipModel, equal to ``model.get_image_features`` (tested)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.vision_model = model.vision_model
        self.visual_projection = getattr(model, "visual_projection", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.vision_model(pixel_values=x).pooler_output
        return self.visual_projection(pooled) if self.visual_projection is not None else pooled


class HFAdapter(TorchAdapter):
    """Adapter around a transformers model; image tower in ``tower``, text via the full model."""

    def __init__(self, card: ModelCard, model: Any, tokenizer: Any, device: str, tokenizer_folder: Path | None = None) -> None:
        super().__init__(card, device)
        self.model = model
        self._tokenizer = tokenizer
        self._tokenizer_folder = tokenizer_folder  # read on first ``encode_text`` (image-only use never loads it)
        kind = card.config.get("kind", "vision")
        if kind == "clip":
            self.tower = ClipImageTower(model)
            scale = getattr(model, "logit_scale", None)
            bias = getattr(model, "logit_bias", None)
            self.logit_scale = float(scale.detach().exp()) if scale is not None else None
            self.logit_bias = float(bias.detach()) if bias is not None else None
        else:
            self.tower = VisionTower(model, card.config.get("pool", "cls"))
        self._place(model)

    @property
    def tokenizer(self) -> Any:
        """The text tokenizer, loaded from the model folder on first use (None when it has none).

        Lazy because image-only use must not need the tokenizer's libraries: SigLIP's
        ``SiglipTokenizer`` needs ``sentencepiece``."""
        if self._tokenizer is None and self._tokenizer_folder is not None:
            self._tokenizer = load_tokenizer(self._tokenizer_folder, self.card)
        return self._tokenizer

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Strings -> projected text embeddings (N, D) float32, unnormalised."""
        self.require("text_encoder", "encode_text")
        if self.tokenizer is None:
            raise MissingWeightsError(f"model '{self.card.id}': no tokenizer files in its folder")
        max_len = self.card.context_length or 64
        padding = self.card.config.get("text_padding", "longest")
        tok = self.tokenizer(
            list(texts), padding=padding, truncation=True, max_length=max_len, return_tensors="pt"
        )
        kwargs = {"input_ids": tok["input_ids"].to(self.device)}
        if "attention_mask" in tok and self.card.config.get("use_attention_mask", True):
            kwargs["attention_mask"] = tok["attention_mask"].to(self.device)
        with self.autocast():
            out = self.model.get_text_features(**kwargs)
        out = out if hasattr(out, "float") else out.pooler_output
        return out.float()

    def modules_for_hash(self) -> list[torch.nn.Module]:
        return [self.model]


def _model_class(card: ModelCard) -> Any:
    transformers = optional_import("transformers")
    name = card.config.get("model_class", "AutoModel")
    cls = getattr(transformers, name, None)
    if cls is None:
        raise ConfigError(f"model card {card.id}: transformers has no class {name!r}")
    return cls


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "spiece.model")


def load_tokenizer(folder: Path, card: ModelCard) -> Any:
    """``AutoTokenizer`` from ``folder``; a missing tokenizer library is a ConfigError naming it."""
    transformers = optional_import("transformers")
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (ImportError, ValueError) as exc:
        if "sentencepiece" in str(exc).lower() or (folder / "spiece.model").is_file():
            optional_import("sentencepiece")  # raises the install hint when it is the missing piece
        raise ConfigError(f"{folder}: cannot load the text tokenizer of '{card.id}' ({exc})") from exc


FOLDER_FILE: str | None = "config.json"


def build(card: ModelCard, folder: Path | None, weights: Path | None, device: str, **options: Any) -> HFAdapter:
    transformers = optional_import("transformers")
    quiet_transformers()
    cls = _model_class(card)
    tokenizer = None
    tok_folder: Path | None = None
    if weights is not None and weights.is_dir():
        folder, weights = weights, None
    if weights is not None:
        raise ConfigError(
            f"{weights}: transformers models load from a folder (config.json + weights), not a single file"
        )
    if folder is None:
        cfg_dict = dict(card.config.get("hf_config") or {})
        if not cfg_dict:
            raise MissingWeightsError(f"model '{card.id}' has no weights folder and no config for a random init")
        model_type = cfg_dict.pop("model_type")
        cfg = transformers.AutoConfig.for_model(model_type, **cfg_dict)
        with seeded(int(card.config.get("seed", 0))):
            model = (transformers.AutoModel if cls.__name__ == "AutoModel" else cls)._from_config(cfg)
        if card.config.get("tokenizer") == "char":
            tokenizer = char_tokenizer(card.context_length or 32)
    else:
        if not (folder / "config.json").is_file():
            raise MissingWeightsError(f"{folder}: no config.json; not a transformers model folder for {card.id}")
        model = cls.from_pretrained(str(folder), local_files_only=True)
        if "text_encoder" in card.capabilities and any((folder / f).is_file() for f in TOKENIZER_FILES):
            tok_folder = folder
    return HFAdapter(card, model.eval(), tokenizer, device, tokenizer_folder=tok_folder)


def save(adapter: HFAdapter, folder: Path) -> None:
    adapter.model.save_pretrained(str(folder))
    if adapter.tokenizer is not None:
        adapter.tokenizer.save_pretrained(str(folder))


def save_trained(module: Any, card: ModelCard, folder: Path) -> None:
    """A fine-tuned transformers model (or a tower wrapping one as ``.model``), ``save_pretrained``."""
    from medfm.models.base import cannot_save

    transformers = optional_import("transformers")
    pretrained = module.model if isinstance(module, VisionTower) else module
    if not isinstance(pretrained, transformers.PreTrainedModel):
        raise cannot_save(card)
    pretrained.save_pretrained(str(folder))
