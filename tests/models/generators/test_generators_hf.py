"""transformers generators: tiny Llama and tiny LLaVA saved to disk and reloaded through medfm."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from medfm.errors import ConfigError, InputError, MissingWeightsError
from medfm.models.card import ModelCard
from medfm.models.generators import create_generator, generator_cards

GEN = frozenset({"generator"})


def _card(folder, backend: str = "hf_causal_lm", **config) -> ModelCard:
    return ModelCard(id="test/tiny-gen", backend=backend, source=str(folder), license="n/a", capabilities=GEN,
                     config={"dtype": "float32", **config})


def test_causal_lm_greedy_matches_transformers(tiny_llama_dir) -> None:
    import torch
    import transformers

    gen = create_generator(_card(tiny_llama_dir), device="cpu")
    a = gen.generate("is there a pneumothorax?", max_new_tokens=6)
    b = gen.generate("is there a pneumothorax?", max_new_tokens=6)
    assert a == b and isinstance(a, str)
    tok = transformers.AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    ids = tok("is there a pneumothorax?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert a == tok.decode(out[0, ids.shape[-1]:], skip_special_tokens=True).strip()
    assert gen.context_length == 64 and gen.weights_hash and len(gen.weights_hash) == 64


def test_causal_lm_errors(tiny_llama_dir) -> None:
    gen = create_generator(_card(tiny_llama_dir), device="cpu")
    with pytest.raises(InputError, match="context of 64"):
        gen.generate("the heart size is normal " * 20, max_new_tokens=4)
    with pytest.raises(InputError, match="text-only"):
        gen.generate("is there an effusion?", images=[np.zeros((8, 8), np.uint8)])
    with pytest.raises(ConfigError, match="unknown generation option"):
        gen.generate("is there an effusion?", beams=3)


def test_sampling_is_seeded(tiny_llama_dir) -> None:
    gen = create_generator(_card(tiny_llama_dir), device="cpu")
    a = gen.generate("the chest", max_new_tokens=8, temperature=1.5, seed=3)
    assert a == gen.generate("the chest", max_new_tokens=8, temperature=1.5, seed=3)


def test_quantization_without_bitsandbytes_is_a_config_error(tiny_llama_dir) -> None:
    from medfm._optional import is_available

    if is_available("bitsandbytes"):
        pytest.skip("bitsandbytes is installed here")
    with pytest.raises(ConfigError, match="bitsandbytes"):
        create_generator(_card(tiny_llama_dir), device="cpu", quantization="4bit")


def test_image_text_model_uses_the_image(tiny_llava_dir) -> None:
    gen = create_generator(_card(tiny_llava_dir, backend="hf_image_text_to_text"), device="cpu")
    rng = np.random.default_rng(0)
    img = (rng.random((3, 20, 20)) * 255).astype(np.uint8)
    a = gen.generate("is there a pneumothorax?", images=[img], max_new_tokens=5)
    assert a == gen.generate("is there a pneumothorax?", images=[img], max_new_tokens=5)
    # the logits depend on the pixels: another image changes the first step's scores
    import torch

    def first_logits(image):
        inputs = gen._inputs("is there a pneumothorax?", [image])
        with torch.no_grad():
            return gen.model(**inputs).logits[0, -1]

    other = (rng.random((3, 20, 20)) * 255).astype(np.uint8)
    assert not torch.allclose(first_logits(img), first_logits(other))
    text_only = gen.generate("is there a pneumothorax?", max_new_tokens=3)
    assert isinstance(text_only, str)
    with pytest.raises(InputError, match="context"):
        gen.generate("the heart size is normal " * 20, images=[img], max_new_tokens=4)


def test_missing_weights_fail_fast(tmp_path) -> None:
    from medfm.models import create_model

    t = time.perf_counter()
    with pytest.raises(MissingWeightsError):
        create_generator("biomistral/7b")
    with pytest.raises(MissingWeightsError):
        create_model("meditron/7b", device="cpu")
    with pytest.raises(MissingWeightsError, match="config.json"):
        create_generator(_card(tmp_path / "nowhere"))
    assert time.perf_counter() - t < 2.0


def test_llava_med_explains_why() -> None:
    with pytest.raises(ConfigError, match="LLaVA-Med code"):
        create_generator("llava-med/v1.5-mistral-7b")


def test_cards_are_data_and_registered() -> None:
    from medfm.models import get_model_card

    ids = {c.id for c in generator_cards()}
    assert ids == {"medgemma/4b-it", "llava-med/v1.5-mistral-7b", "chexagent/2-3b", "biomistral/7b", "meditron/7b"}
    assert get_model_card("medgemma/4b-it").source == "google/medgemma-4b-it"
    assert get_model_card("medgemma/4b-it").gated
    assert get_model_card("chexagent/2-3b").config["trust_remote_code"] is True
    assert "CC-BY-NC-4.0" in get_model_card("chexagent/2-3b").license
    for c in generator_cards():
        assert dataclasses.asdict(c)  # plain data
        assert "{question}" in c.config["prompt_templates"]["vqa"]
