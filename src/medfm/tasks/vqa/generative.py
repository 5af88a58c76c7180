"""Generative VQA: ask any generator (``generate(prompt, images)``) each question about its image."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from medfm.data.vqa import VQAItem


def short_answer(text: str, closed: bool) -> str:
    """First line of a generated answer; for closed questions a leading yes/no is kept alone."""
    line = (text.strip().splitlines() or [""])[0].strip()
    if closed:
        m = re.match(r"^\W*(yes|no)\b", line.lower())
        if m:
            return m.group(1)
    return line.rstrip(".")


def generate_answers(generator: Any, items: Sequence[VQAItem], max_new_tokens: int = 16, progress: Any = None) -> list[str]:
    """Answers of ``generator`` (a ``GeneratorAdapter``) to ``items``, greedy decoding.

    The prompt is the card's ``vqa`` template; the image goes along when the model takes images.
    """
    out = []
    it = progress(items, total=len(items), desc="vqa generate") if progress else items
    for item in it:
        prompt = generator.render("vqa", question=item.question)
        images = [item.image] if getattr(generator, "accepts_images", False) else None
        text = generator.generate(prompt, images=images, max_new_tokens=max_new_tokens)
        out.append(short_answer(text, item.answer_type == "CLOSED"))
    return out
