"""What every generator shares: generation options, prompt templates, image conversion.

Options come from the card (``config["generation"]``) and are overridden per call through
``generate(prompt, images, **kwargs)``; an unknown keyword is a ``ConfigError``, never dropped.
``temperature == 0`` means greedy decoding (deterministic).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfm.errors import ConfigError, InputError
from medfm.models.base import ModelAdapter
from medfm.models.card import ModelCard

if TYPE_CHECKING:
    from PIL import Image as PILImage


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding settings. ``temperature`` 0 = greedy; ``seed`` seeds sampling otherwise."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")


def generation_options(card: ModelCard, overrides: dict[str, Any]) -> GenerationOptions:
    """Card defaults (``config["generation"]``) updated with per-call ``overrides``."""
    allowed = {f.name for f in dataclasses.fields(GenerationOptions)}
    values = dict(card.config.get("generation", {}))
    values.update(overrides)
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ConfigError(f"model '{card.id}': unknown generation option(s) {unknown}; allowed: {sorted(allowed)}")
    return GenerationOptions(**values)


def render_prompt(card: ModelCard, task: str, **fields: str) -> str:
    """Fill the card's prompt template for ``task`` (``config["prompt_templates"][task]``).

    Templates use ``{question}`` (VQA) or no field (report); a card without a template for
    ``task`` gets the fields joined as they are (the question itself for VQA).
    """
    templates = card.config.get("prompt_templates", {})
    template = templates.get(task)
    if template is None:
        return "\n".join(str(v) for v in fields.values())
    try:
        return template.format(**fields)
    except KeyError as exc:
        raise ConfigError(f"model '{card.id}': prompt template for '{task}' needs field {exc}") from exc


def to_pil(image: Any, where: str = "image") -> PILImage.Image:
    """An image given to ``generate`` -> RGB PIL image.

    Accepts a PIL image, a file path, or an array (H, W), (C, H, W) with C in {1, 3, 4} or
    (H, W, C); uint8 is kept, other dtypes are min-max scaled to 0..255.
    """
    import numpy as np
    from PIL import Image as PILImage

    if isinstance(image, PILImage.Image):
        return image.convert("RGB")
    if isinstance(image, (str, Path)):
        try:
            with PILImage.open(image) as im:
                return im.convert("RGB")
        except OSError as exc:
            raise InputError(f"{image}: cannot read image ({exc})") from exc
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise InputError(f"{where}: expected a 2D image (H, W) or (C, H, W), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return PILImage.fromarray(arr).convert("RGB")


class GeneratorAdapter(ModelAdapter):
    """Base of text generators: ``generate(prompt, images=None, **options) -> str``.

    ``accepts_images`` is False for text-only models: passing images is an ``InputError``.
    ``context_length`` is the model's maximum number of tokens (prompt + new tokens).
    """

    accepts_images: bool = False
    context_length: int | None = None

    def render(self, task: str, **fields: str) -> str:
        """This model's prompt for ``task`` (see :func:`render_prompt`)."""
        return render_prompt(self.card, task, **fields)

    def _check_images(self, images: list[Any] | None) -> list[Any]:
        images = list(images or [])
        if images and not self.accepts_images:
            raise InputError(f"model '{self.card.id}' is text-only and cannot take images ({len(images)} given)")
        return images

    def _check_length(self, n_prompt: int, opts: GenerationOptions) -> None:
        if self.context_length is not None and n_prompt + opts.max_new_tokens > self.context_length:
            raise InputError(
                f"model '{self.card.id}': prompt has {n_prompt} tokens + {opts.max_new_tokens} new tokens, "
                f"more than the model's context of {self.context_length} tokens; shorten the prompt"
            )


def torch_dtype(name: str | None) -> Any:
    """``"auto"`` / None / ``"float32"`` / ``"bfloat16"`` / ``"float16"`` -> what from_pretrained takes."""
    import torch

    if name in (None, "auto"):
        return "auto"
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise ConfigError(f"dtype must be one of auto, {', '.join(table)}; got {name!r}")
    return table[name]


def quantization_config(mode: str | None) -> Any:
    """transformers ``BitsAndBytesConfig`` for ``"8bit"`` / ``"4bit"`` (None: no quantization).

    Needs the ``bitsandbytes`` package; without it a ``ConfigError`` says so (no silent fp32).
    """
    if mode is None:
        return None
    if mode not in ("8bit", "4bit"):
        raise ConfigError(f"quantization must be '8bit' or '4bit', got {mode!r}")
    from medfm._optional import is_available

    if not is_available("bitsandbytes"):
        raise ConfigError(f"{mode} quantization needs the 'bitsandbytes' package (pip install bitsandbytes); it is not installed")
    import torch
    import transformers

    if mode == "8bit":
        return transformers.BitsAndBytesConfig(load_in_8bit=True)
    return transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_type="nf4")
