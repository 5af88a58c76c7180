"""transformers image-text-to-text models (MedGemma, LLaVA-style) behind ``generate``.

Loads ``AutoModelForImageTextToText`` + ``AutoProcessor`` from a local folder or the HF cache
and builds the input with the processor's chat template: one user turn holding the images
(as ``{"type": "image"}`` parts, in order) and then the text. Card ``config`` keys:
``dtype``, ``device_map``, ``quantization``, ``trust_remote_code``, ``system_prompt``,
``generation``, ``prompt_templates`` (as in ``hf_causal``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medfm.errors import ConfigError, InputError
from medfm.models.base import ModelAdapter, cannot_save
from medfm.models.card import ModelCard
from medfm.models.generators._base import (
    GeneratorAdapter,
    generation_options,
    quantization_config,
    to_pil,
)
from medfm.models.generators._local import (
    folder_weights_hash,
    load_transformers_pair,
    resolve_weights_folder,
)
from medfm.models.generators.hf_causal import context_from_config


class ImageTextGenerator(GeneratorAdapter):
    """A vision-language model answering a prompt about zero or more images."""

    accepts_images = True

    def __init__(
        self,
        card: ModelCard,
        device: str | None = None,
        path: str | Path | None = None,
        dtype: str | None = None,
        device_map: str | None = None,
        quantization: str | None = None,
    ) -> None:
        cfg = card.config
        quant = quantization_config(quantization if quantization is not None else cfg.get("quantization"))
        folder = resolve_weights_folder(card, path)  # before importing torch: fail fast
        from medfm._runtime import default_device

        device = device or default_device()
        super().__init__(card, device)
        self.processor, self.model = load_transformers_pair(
            card, folder, "AutoProcessor", "AutoModelForImageTextToText", device, dtype, device_map, quant
        )
        if getattr(self.processor, "chat_template", None) is None:
            raise ConfigError(f"model '{card.id}': the processor in {folder} has no chat template")
        tok = getattr(self.processor, "tokenizer", None)
        self.context_length = context_from_config(card, self.model.config, tok)
        self.weights_source = str(folder)
        self.weights_hash = folder_weights_hash(folder)

    def _messages(self, prompt: str, images: list[Any]) -> list[dict[str, Any]]:
        system = self.card.config.get("system_prompt")
        content: list[dict[str, Any]] = [{"type": "image", "image": to_pil(im, f"image {i}")} for i, im in enumerate(images)]
        content.append({"type": "text", "text": prompt})
        msgs: list[dict[str, Any]] = [{"role": "system", "content": [{"type": "text", "text": system}]}] if system else []
        return msgs + [{"role": "user", "content": content}]

    def _inputs(self, prompt: str, images: list[Any]) -> Any:
        return self.processor.apply_chat_template(
            self._messages(prompt, images),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        )

    def generate(self, prompt: str, images: list[Any] | None = None, **kwargs: Any) -> str:
        """Answer ``prompt`` about ``images`` (greedy unless ``temperature`` > 0); new text only."""
        import torch

        opts = generation_options(self.card, kwargs)
        images = self._check_images(images)
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(f"model '{self.card.id}': empty prompt")
        inputs = self._inputs(prompt, images)
        n_prompt = int(inputs["input_ids"].shape[-1])
        self._check_length(n_prompt, opts)
        dtype = next(self.model.parameters()).dtype
        inputs = {k: (v.to(self.model.device, dtype=dtype) if k == "pixel_values" else v.to(self.model.device)) for k, v in inputs.items()}
        tok = getattr(self.processor, "tokenizer", self.processor)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        sample = opts.temperature > 0
        extra = {"temperature": opts.temperature, "top_p": opts.top_p} if sample else {}
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(opts.seed)
            out = self.model.generate(**inputs, max_new_tokens=opts.max_new_tokens, do_sample=sample, pad_token_id=pad, **extra)
        return tok.decode(out[0, n_prompt:], skip_special_tokens=True).strip()


FOLDER_FILE: str | None = "config.json"


def build(card: ModelCard, folder: Path | None, weights: Path | None, device: str, **options: Any) -> ImageTextGenerator:
    """The zoo's backend contract (``medfm.models.create_model``); ``options``: ``dtype``,
    ``device_map``, ``quantization``. Without a folder the weights are looked up locally (never downloaded)."""
    if weights is not None and not weights.is_dir():
        raise ConfigError(f"{weights}: transformers models load from a folder, not a single file")
    return ImageTextGenerator(card, device=device, path=weights or folder, **options)


def save(adapter: ModelAdapter, folder: Path) -> None:
    """Generators are used as downloaded; medfm does not re-save them."""
    raise cannot_save(adapter.card, "a generator")


def save_trained(module: Any, card: ModelCard, folder: Path) -> None:
    raise cannot_save(card, "a generator")
