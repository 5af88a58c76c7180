"""``medfm serve``: checks its options, loads the model, and hands uvicorn a working app."""

from __future__ import annotations

import pytest

from medfm.cli.main import main
from tests.serve.conftest import png_bytes


def test_serve_builds_the_app_and_checks_options(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import uvicorn
    from fastapi.testclient import TestClient

    started: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, log_level: started.update(app=app, host=host, port=port))
    assert main(["serve", "--model", "test/sam-tiny", "--port", "8123"]) == 0
    assert (started["host"], started["port"]) == ("127.0.0.1", 8123)
    assert "http://127.0.0.1:8123/" in capsys.readouterr().err
    client = TestClient(started["app"], base_url="http://127.0.0.1:8123")  # Host must be an allowed name
    up = client.post("/images", params={"name": "a.png"}, content=png_bytes(0)).json()
    assert client.post(f"/images/{up['id']}/segment", json={"points": [[30, 20]]}).status_code == 200
    for args, message in (
        (["--model", "test/sam-tiny", "--port", "0"], "--port must be 1..65535"),
        (["--model", "test/sam-tiny", "--precision", "fp16"], "--precision must be auto, bf16 or fp32"),
        (["--model", "test/sam-tiny", "--max-images", "0"], "--max-images, --max-embeddings and --max-upload-mb must be >= 1"),
        (["--model", "test/vit-tiny-timm"], "segmenter"),
        (["--model", "test/sam-tiyn"], "Did you mean"),
    ):
        assert main(["serve", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_serve_takes_a_saved_sam_folder_and_refuses_a_train_seg_model(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import uvicorn

    from medfm.models import create_model, get_model_card
    from medfm.models.zoo import save_model
    from medfm.tasks.segmentation.model import is_trained_model_dir

    started: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, log_level: started.update(app=app))
    saved = save_model(create_model("test/sam-tiny", device="cpu"), get_model_card("test/sam-tiny"), tmp_path / "sam")
    assert not is_trained_model_dir(saved)  # same file names as a train-seg folder, but a zoo model
    assert main(["serve", "--model", str(saved)]) == 0 and "app" in started
    trained = tmp_path / "unet"
    trained.mkdir()
    (trained / "model_card.json").write_text(json.dumps({"id": "trained/x", "config": {"segmentation": {}}}))
    (trained / "model.safetensors").write_bytes(b"")
    capsys.readouterr()
    assert main(["serve", "--model", str(trained)]) == 2
    assert "takes no prompts" in capsys.readouterr().err
