"""VQA folders (``images/`` + ``qa.json``): bad entries are refused naming the file and the entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medfm.data.vqa import load_vqa_folder
from medfm.errors import InputError


def _folder(tmp_path: Path, **changes: object) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    entry = {"qid": 7, "image_name": "a.png", "question": "Is there a mass?", "answer": "yes", "answer_type": "CLOSED"}
    good = {**entry, "qid": 8, "answer": 2, "answer_type": "OPEN"}  # a numeric answer is text "2"
    (tmp_path / "qa.json").write_text(json.dumps([good, {**entry, **changes}]))
    return tmp_path


def test_numeric_answers_are_text(tmp_path: Path) -> None:
    items = load_vqa_folder(_folder(tmp_path))
    assert [(i.qid, i.answer) for i in items] == [("8", "2"), ("7", "yes")]


@pytest.mark.parametrize(("key", "value"), [("question", None), ("answer", None), ("question", "  "), ("answer", ["yes"])])
def test_null_or_empty_fields_are_refused(tmp_path: Path, key: str, value: object) -> None:
    folder = _folder(tmp_path, **{key: value})
    with pytest.raises(InputError, match=rf"qa.json: record 1 \(qid 7\) has {key} .*expected non-empty text"):
        load_vqa_folder(folder)
