"""OpenAI-compatible HTTP client against servers started on 127.0.0.1 inside the test."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from medfm.errors import ConfigError, InputError, MedfmError
from medfm.models.generators import create_generator, http_card


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        server.requests.append((self.path, body))  # type: ignore[attr-defined]
        if server.fail_first > 0:  # type: ignore[attr-defined]
            server.fail_first -= 1  # type: ignore[attr-defined]
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"overloaded")
            return
        content = body["messages"][-1]["content"]
        n_images = sum(1 for p in content if p.get("type") == "image_url") if isinstance(content, list) else 0
        text = f"model={body['model']} images={n_images} max={body['max_tokens']}"
        doc = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
        data = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.requests = []  # type: ignore[attr-defined]
    srv.fail_first = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}"


def test_chat_request_and_images(server) -> None:
    gen = create_generator(http_card(_url(server), "med-llm", accepts_images=True))
    assert gen.generate("is there a fracture?", max_new_tokens=7) == "model=med-llm images=0 max=7"
    img = np.zeros((16, 16), np.uint8)
    assert gen.generate("is there a fracture?", images=[img, img]) == "model=med-llm images=2 max=128"
    path, body = server.requests[-1]
    assert path == "/v1/chat/completions"
    assert body["messages"][-1]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert body["temperature"] == 0.0


def test_text_only_server_refuses_images(server) -> None:
    gen = create_generator(http_card(_url(server) + "/v1", "text-llm"))
    with pytest.raises(InputError, match="text-only"):
        gen.generate("q", images=[np.zeros((4, 4))])


def test_retry_after_500(server) -> None:
    server.fail_first = 1
    gen = create_generator(http_card(_url(server), "m", backoff_s=0.01, max_retries=2))
    assert gen.generate("hello").startswith("model=m")
    assert gen.attempts == 2
    server.fail_first = 5
    with pytest.raises(MedfmError, match="HTTP 500"):
        gen.generate("hello")
    assert gen.attempts == 3


def test_silent_server_times_out() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)  # accepts connections into the backlog, never answers
    try:
        card = http_card(f"http://127.0.0.1:{sock.getsockname()[1]}", "m", timeout_s=0.3, max_retries=1, backoff_s=0.01)
        gen = create_generator(card)
        t = time.perf_counter()
        with pytest.raises(MedfmError, match="no answer within 0.3 s"):
            gen.generate("hello")
        assert time.perf_counter() - t < 2.0
    finally:
        sock.close()


def test_nobody_listening_is_a_medfm_error() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    gen = create_generator(http_card(f"http://127.0.0.1:{port}", "m", max_retries=0, timeout_s=1))
    with pytest.raises(MedfmError, match="connection failed"):
        gen.generate("hello")


def test_bad_config() -> None:
    with pytest.raises(ConfigError, match="base_url"):
        create_generator(http_card("ftp://x", "m"))
