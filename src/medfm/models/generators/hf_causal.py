"""transformers causal language models (BioMistral, Meditron, CheXagent) behind ``generate``.

Card ``config`` keys (all optional):
- ``dtype``: ``auto`` | ``float32`` | ``bfloat16`` | ``float16``; ``device_map`` (e.g. ``auto``);
  ``quantization``: ``8bit`` | ``4bit`` (needs bitsandbytes).
- ``trust_remote_code``: run the repository's own model code (CheXagent).
- ``chat``: wrap the prompt in the tokenizer's chat template (instruction-tuned models);
  base models (BioMistral, Meditron) take the filled prompt template as it is.
- ``system_prompt``: system message for chat models.
- ``image_input``: ``list_format`` for CheXagent-style remote code whose tokenizer takes
  image file paths through ``tokenizer.from_list_format`` (unverified with transformers 5).
- ``generation`` / ``prompt_templates``: see ``medfm.models.generators._base``.
"""

from __future__ import annotations

import tempfile
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

# A tokenizer's ``model_max_length`` above this is the "no limit" sentinel, not a real context.
_NO_LIMIT = 10**7


def context_from_config(card: ModelCard, model_config: Any, tokenizer: Any = None) -> int | None:
    """Maximum tokens: the card's ``context_length``, else the model config's positions."""
    if card.context_length:
        return int(card.context_length)
    for obj in (model_config, getattr(model_config, "text_config", None)):
        n = getattr(obj, "max_position_embeddings", None) if obj is not None else None
        if isinstance(n, int) and n > 0:
            return n
    n = getattr(tokenizer, "model_max_length", None)
    return int(n) if isinstance(n, int) and 0 < n < _NO_LIMIT else None


class CausalLMGenerator(GeneratorAdapter):
    """``AutoModelForCausalLM`` + ``AutoTokenizer`` from a local folder or the HF cache.

    >>> gen = CausalLMGenerator(card)            # doctest: +SKIP
    >>> gen.generate("Question: what is a pneumothorax?\\nAnswer:", max_new_tokens=32)  # doctest: +SKIP
    """

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
        self.tokenizer, self.model = load_transformers_pair(
            card, folder, "AutoTokenizer", "AutoModelForCausalLM", device, dtype, device_map, quant
        )
        self.image_input = cfg.get("image_input")
        self.accepts_images = self.image_input == "list_format"
        self.context_length = context_from_config(card, self.model.config, self.tokenizer)
        self.weights_source = str(folder)
        self.weights_hash = folder_weights_hash(folder)

    # -- prompt -> token ids -------------------------------------------------------------
    def _encode(self, prompt: str, images: list[Any]) -> Any:
        import torch

        tok = self.tokenizer
        system = self.card.config.get("system_prompt")
        if images:  # CheXagent-style remote code: images as file paths inside the query
            if not hasattr(tok, "from_list_format"):
                raise ConfigError(f"model '{self.card.id}': tokenizer has no from_list_format; cannot pass images")
            self._tmp = tempfile.TemporaryDirectory(prefix="medfm-gen-")
            paths = []
            for i, im in enumerate(images):
                p = Path(self._tmp.name) / f"image_{i}.png"
                to_pil(im, where=f"image {i}").save(p)
                paths.append(str(p))
            query = tok.from_list_format([{"image": p} for p in paths] + [{"text": prompt}])
            conv = ([{"from": "system", "value": system}] if system else []) + [{"from": "human", "value": query}]
            ids = tok.apply_chat_template(conv, add_generation_prompt=True, return_tensors="pt")
            return ids if isinstance(ids, torch.Tensor) else torch.as_tensor(ids["input_ids"])
        if self.card.config.get("chat") and getattr(tok, "chat_template", None):
            msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
            text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            return tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        return tok(prompt, return_tensors="pt")["input_ids"]

    def count_tokens(self, prompt: str) -> int:
        """Number of prompt tokens as the model sees them (template and special tokens included)."""
        return int(self._encode(prompt, [])[0].shape[-1])

    def generate(self, prompt: str, images: list[Any] | None = None, **kwargs: Any) -> str:
        """Continue ``prompt`` (greedy unless ``temperature`` > 0) and return the new text only."""
        import torch

        opts = generation_options(self.card, kwargs)
        images = self._check_images(images)
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(f"model '{self.card.id}': empty prompt")
        input_ids = self._encode(prompt, images)
        self._check_length(int(input_ids.shape[-1]), opts)
        input_ids = input_ids.to(self.model.device)
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        sample = opts.temperature > 0
        extra = {"temperature": opts.temperature, "top_p": opts.top_p} if sample else {}
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(opts.seed)
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=opts.max_new_tokens,
                do_sample=sample,
                pad_token_id=pad,
                **extra,
            )
        return tok.decode(out[0, input_ids.shape[-1] :], skip_special_tokens=True).strip()


FOLDER_FILE: str | None = "config.json"


def build(card: ModelCard, folder: Path | None, weights: Path | None, device: str, **options: Any) -> CausalLMGenerator:
    """The zoo's backend contract (``medfm.models.create_model``); ``options``: ``dtype``,
    ``device_map``, ``quantization``. Without a folder the weights are looked up locally (never downloaded)."""
    if weights is not None and not weights.is_dir():
        raise ConfigError(f"{weights}: transformers models load from a folder, not a single file")
    return CausalLMGenerator(card, device=device, path=weights or folder, **options)


def save(adapter: ModelAdapter, folder: Path) -> None:
    """Generators are used as downloaded; medfm does not re-save them."""
    raise cannot_save(adapter.card, "a generator")


def save_trained(module: Any, card: ModelCard, folder: Path) -> None:
    raise cannot_save(card, "a generator")
