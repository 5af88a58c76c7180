"""Generator model cards: data only (hub ids, licences, prompt templates, decoding defaults).

Ids and licences come from the project's model reference (shared/MODELS.md, checked
2026-11); anything marked unverified there says so in ``description``. No card pins a
``revision`` yet: record the snapshot you pulled.
"""

from __future__ import annotations

from medfm.models.card import ModelCard

GEN = frozenset({"generator"})

# One short-answer VQA prompt and one report prompt, shared by the chat models.
_VQA = "{question}\nAnswer with a single word or a short phrase."
_REPORT = "Describe the findings of this medical image as the Findings section of a radiology report."
# Base (non-chat) language models continue text: prompts end where the answer begins.
_BASE_TEMPLATES = {
    "vqa": "Question: {question}\nAnswer:",
    "report": "Findings:",
    "qa": "Question: {question}\nAnswer:",
}


def generator_cards() -> list[ModelCard]:
    """The built-in generator cards (registered into ``medfm.models.MODELS`` on import)."""
    return _image_text_cards() + _text_cards()


def _image_text_cards() -> list[ModelCard]:
    """Generators that read images: MedGemma, LLaVA-Med (listed, unavailable), CheXagent."""
    return [
        ModelCard(
            id="medgemma/4b-it",
            backend="hf_image_text_to_text",
            source="google/medgemma-4b-it",
            license="Health AI Developer Foundations (HAI-DEF) terms of use",
            capabilities=GEN,
            modalities=("xray", "ct", "mri", "dermatology", "pathology", "fundus"),
            gated=True,
            context_length=131072,
            config={
                "dtype": "bfloat16",
                "system_prompt": "You are an expert radiologist.",
                "prompt_templates": {"vqa": _VQA, "report": _REPORT},
                "generation": {"max_new_tokens": 128},
            },
            description=(
                "MedGemma 4B instruction-tuned medical vision-language model (Gemma 3); "
                "AutoModelForImageTextToText + AutoProcessor with the processor's chat template; "
                "896x896 input -> 256 image tokens (processor); needs transformers >= 4.50. Gated: "
                "accept the HAI-DEF terms on the hub first."
            ),
        ),
        ModelCard(
            id="llava-med/v1.5-mistral-7b",
            backend="llava_med",
            source="microsoft/llava-med-v1.5-mistral-7b",
            license="Apache-2.0 tag; Mistral-7B-Instruct-v0.2 licence in card text; research use only, not clinical",
            capabilities=GEN,
            modalities=("xray", "ct", "mri", "pathology"),
            config={"needs": "the LLaVA-Med code (github microsoft/LLaVA-Med)", "prompt_templates": {"vqa": _VQA}},
            description=(
                "LLaVA-Med v1.5 (Mistral 7B): its model_type 'llava_mistral' is unknown to transformers "
                "(transformers#37087, LLaVA-Med#133), so plain transformers cannot build it; it needs the "
                "LLaVA-Med code, which medfm does not ship. Listed so that users see why it is unavailable."
            ),
        ),
        ModelCard(
            id="chexagent/2-3b",
            backend="hf_causal_lm",
            source="StanfordAIMI/CheXagent-2-3b",
            license="CC-BY-NC-4.0 (non-commercial)",
            capabilities=GEN,
            modalities=("xray",),
            config={
                "trust_remote_code": True,
                "image_input": "list_format",
                "dtype": "bfloat16",
                "prompt_templates": {
                    "vqa": "{question}",
                    "report": "Write an example findings section for the CXR",
                },
                "generation": {"max_new_tokens": 256},
            },
            description=(
                "CheXagent-2 3B chest X-ray model; runs the repository's own code (trust_remote_code); "
                "images go to the tokenizer as file paths (from_list_format; 3rd-party description). "
                "Unverified: gating, and whether it still attends to the image under transformers 5: "
                "pin a revision and check that answers change with the image."
            ),
        ),
    ]


def _text_cards() -> list[ModelCard]:
    """Text-only medical language models."""
    return [
        ModelCard(
            id="biomistral/7b",
            backend="hf_causal_lm",
            source="BioMistral/BioMistral-7B",
            license="Apache-2.0",
            capabilities=GEN,
            modalities=("text",),
            context_length=32768,
            config={"dtype": "bfloat16", "prompt_templates": dict(_BASE_TEMPLATES), "generation": {"max_new_tokens": 64}},
            description=(
                "BioMistral-7B medical text model (Mistral; base model, not chat): 32K positions, sliding "
                "window 4096. Weights are a 14.5 GB pickle (pytorch_model.bin) at the snapshot seen."
            ),
        ),
        ModelCard(
            id="meditron/7b",
            backend="hf_causal_lm",
            source="epfl-llm/meditron-7b",
            license="Llama 2 Community Licence (seen on derived repos; unverified)",
            capabilities=GEN,
            modalities=("text",),
            config={"dtype": "bfloat16", "prompt_templates": dict(_BASE_TEMPLATES), "generation": {"max_new_tokens": 64}},
            description=(
                "Meditron-7B medical text model (Llama 2 base model, not chat). Gating and width unverified; "
                "the context length is read from the downloaded config."
            ),
        ),
    ]
