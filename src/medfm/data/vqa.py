"""VQA-RAD-style folders: ``images/`` + ``qa.json`` (one record per question).

Record fields read (VQA-RAD / MEVF layout): ``qid``, ``image_name``, ``question``, ``answer``,
``answer_type`` (``CLOSED`` / ``OPEN``; stray spaces stripped), ``question_type``,
``phrase_type``, ``image_organ`` and an optional ``official_split``. Answers may be numbers
in the raw file; they are read as strings. Splits for evaluation are image-disjoint: a test
folder, or :func:`image_disjoint_split` of a training folder (fixed seed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import InputError, MissingDataError


@dataclass(frozen=True)
class VQAItem:
    """One question about one image. ``image`` is the image file's path."""

    qid: str
    image: Path
    question: str
    answer: str
    answer_type: str  # "CLOSED" | "OPEN"
    question_type: str = ""
    phrase_type: str = ""
    organ: str = ""
    split: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def image_name(self) -> str:
        return self.image.name


def _text(record: dict[str, Any], key: str, qa: Path, i: int) -> str:
    """A field as stripped text; numbers are text (VQA-RAD has a few numeric answers), while
    null, lists and empty text are refused naming the file and the entry (never the text 'None')."""
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or not str(value).strip():
        raise InputError(
            f"{qa}: record {i} (qid {record.get('qid')}) has {key} {json.dumps(value)}; expected non-empty text"
        )
    return str(value).strip()


def load_vqa_folder(folder: str | Path, split: str | None = None) -> list[VQAItem]:
    """Read ``folder/qa.json`` and check every referenced image exists under ``folder/images``.

    ``split`` keeps only records whose ``official_split`` equals it (None: all records).
    """
    folder = Path(folder).expanduser()
    qa = folder / "qa.json"
    if not folder.is_dir():
        raise MissingDataError(f"{folder}: VQA folder not found")
    if not qa.is_file():
        raise InputError(f"{folder}: no qa.json (expected images/ + qa.json, VQA-RAD layout)")
    try:
        records = json.loads(qa.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{qa}: cannot parse JSON ({exc})") from exc
    if not isinstance(records, list):
        raise InputError(f"{qa}: expected a list of question records")
    items: list[VQAItem] = []
    seen: set[str] = set()
    for i, r in enumerate(records):
        try:
            qid = str(r["qid"])
            name = _text(r, "image_name", qa, i)
            question = _text(r, "question", qa, i)
            answer = _text(r, "answer", qa, i)
            atype = _text(r, "answer_type", qa, i).upper()
        except (KeyError, TypeError) as exc:
            raise InputError(f"{qa}: record {i} lacks field {exc}") from exc
        if atype not in ("CLOSED", "OPEN"):
            raise InputError(f"{qa}: record {i} (qid {qid}) has answer_type {atype!r}; expected CLOSED or OPEN")
        if qid in seen:
            raise InputError(f"{qa}: qid {qid} appears twice")
        seen.add(qid)
        rec_split = str(r.get("official_split", "")).strip()
        if split is not None and rec_split != split:
            continue
        image = folder / "images" / name
        if not image.is_file():
            raise InputError(f"{qa}: record {i} (qid {qid}) names image {name}, which is not in {folder / 'images'}")
        items.append(
            VQAItem(
                qid=qid, image=image, question=question, answer=answer, answer_type=atype,
                question_type=str(r.get("question_type", "")).strip(), phrase_type=str(r.get("phrase_type", "")).strip(),
                organ=str(r.get("image_organ", "")).strip(), split=rec_split,
            )
        )
    if not items:
        raise InputError(f"{qa}: no question records" + (f" with official_split={split!r}" if split else ""))
    return items


def image_disjoint_split(items: list[VQAItem], fraction: float, seed: int) -> tuple[list[VQAItem], list[VQAItem]]:
    """Split by image: ``fraction`` of the images (at least one) and all their questions go to
    the second list. Images are sorted by name, then permuted with ``numpy.random.default_rng(seed)``.
    """
    if not 0.0 < fraction < 1.0:
        raise InputError(f"split fraction must be in (0, 1), got {fraction}")
    names = sorted({it.image_name for it in items})
    if len(names) < 2:
        raise InputError(f"an image-disjoint split needs at least 2 images, got {len(names)}")
    perm = np.random.default_rng(seed).permutation(len(names))
    n_held = min(len(names) - 1, max(1, int(round(fraction * len(names)))))
    held = {names[i] for i in perm[:n_held]}
    return [it for it in items if it.image_name not in held], [it for it in items if it.image_name in held]


def load_image_gray(path: Path, size: int) -> np.ndarray:
    """Image file -> float32 (size, size) grayscale in [0, 1] (bilinear resize, aspect not kept)."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as im:
            im = im.convert("L").resize((size, size), PILImage.BILINEAR)
            return np.asarray(im, dtype=np.float32) / 255.0
    except OSError as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from exc
