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
    client = TestClient(started["app"])
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
