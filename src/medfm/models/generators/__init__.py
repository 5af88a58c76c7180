"""Text generators behind one face: ``generate(prompt, images=None, **options) -> str``.

Backends (card ``backend``):
- ``hf_causal_lm``: transformers ``AutoModelForCausalLM`` + ``AutoTokenizer`` (BioMistral,
  Meditron, CheXagent with remote code);
- ``hf_image_text_to_text``: ``AutoModelForImageTextToText`` + ``AutoProcessor`` (MedGemma);
- ``openai_http``: any OpenAI-compatible chat server (``/v1/chat/completions``);
- ``llava_med``: listed only; creating it raises a ``ConfigError`` (needs the LLaVA-Med code).

The model zoo registers these backends and the generator cards: ``create_generator`` is
``medfm.models.create_model`` (the one factory) for generator cards, never downloading, with
the generator-only options (dtype, device_map, 8/4-bit quantization, server URL).

>>> from medfm.models.generators import create_generator
>>> gen = create_generator("biomistral/7b")          # doctest: +SKIP
>>> gen.generate(gen.render("vqa", question="Is aspirin an NSAID?"), max_new_tokens=8)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medfm.errors import ConfigError
from medfm.models.card import ModelCard
from medfm.models.generators._base import (
    GenerationOptions,
    GeneratorAdapter,
    render_prompt,
)
from medfm.models.generators.cards import generator_cards

# backend -> module implementing ``medfm.models.base.Backend`` (the zoo's backend contract)
GENERATOR_BACKENDS: dict[str, str] = {
    "hf_causal_lm": "medfm.models.generators.hf_causal",
    "hf_image_text_to_text": "medfm.models.generators.hf_vlm",
    "openai_http": "medfm.models.generators.http",
    "llava_med": "medfm.models.generators.unsupported",
}


def http_card(base_url: str, model: str, accepts_images: bool = False, **config: Any) -> ModelCard:
    """A card for a model served by an OpenAI-compatible server (id ``http/<model>``)."""
    cfg = {"base_url": base_url, "model": model, "accepts_images": accepts_images, **config}
    return ModelCard(
        id=f"http/{model.replace('/', '--')}",
        backend="openai_http",
        source=None,
        license="as served (see the server's model)",
        capabilities=frozenset({"generator"}),
        config=cfg,
        description=f"model '{model}' on the OpenAI-compatible server at {base_url}",
    )


def create_generator(
    model: str | ModelCard,
    device: str | None = None,
    path: str | Path | None = None,
    **options: Any,
) -> GeneratorAdapter:
    """Build a generator from a card id, a card, or a local transformers folder (``path``).

    ``options`` go to the backend: ``dtype``, ``device_map``, ``quantization`` ("8bit" /
    "4bit", needs bitsandbytes) for transformers; ``base_url``, ``model``, ``timeout_s``,
    ``max_retries``, ``backoff_s`` for ``openai_http``. Missing weights raise
    ``MissingWeightsError`` before any network access.
    """
    from medfm.models.zoo import create_model, get_model_card

    card = model if isinstance(model, ModelCard) else get_model_card(model)
    if "generator" not in card.capabilities:
        raise ConfigError(f"model '{card.id}' is not a generator (capabilities: {', '.join(sorted(card.capabilities))})")
    if card.backend not in GENERATOR_BACKENDS:
        raise ConfigError(f"model '{card.id}': backend {card.backend!r} is not a generator backend; one of {sorted(GENERATOR_BACKENDS)}")
    return create_model(card, device=device, weights=path, fetch=False, **options)  # type: ignore[return-value]


__all__ = [
    "GENERATOR_BACKENDS",
    "GenerationOptions",
    "GeneratorAdapter",
    "create_generator",
    "generator_cards",
    "http_card",
    "render_prompt",
]
