"""The REST API and viewer over HTTP (FastAPI's test client): upload, render, segment, errors."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from medfm.serve import SegmentationService, create_app
from tests.serve.conftest import decode_png, png_bytes

MAX_BYTES = 50_000


@pytest.fixture()
def client(tiny_sam):
    from fastapi.testclient import TestClient

    return TestClient(create_app(SegmentationService(tiny_sam, max_images=4, max_bytes=MAX_BYTES)), base_url="http://127.0.0.1:8000")


def test_upload_render_and_segment_over_http(client, tiny_sam) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "test/sam-tiny" in page.text and all(f'send("{a}")' in page.text for a in ("segment", "propagate"))
    assert client.get("/health").json()["model"] == "test/sam-tiny"
    up = client.post("/images", params={"name": "a.png"}, content=png_bytes(0))
    assert up.status_code == 200, up.text
    info = up.json()
    assert (info["width"], info["height"]) == (64, 48)
    shown = client.get(f"/images/{info['id']}/display.png", params={"slice": 0})
    assert shown.headers["content-type"] == "image/png" and decode_png(shown.content).shape == (48, 64)
    r = client.post(f"/images/{info['id']}/segment", json={"box": [14, 9, 46, 31]})
    assert r.status_code == 200, r.text
    mask = decode_png(base64.b64decode(r.json()["mask_png"])) > 0
    tiny_sam.set_image(decode_png(png_bytes(0)))
    np.testing.assert_array_equal(mask, tiny_sam.predict(boxes=np.array([[14, 9, 46, 31]], float))[0])
    assert [i["id"] for i in client.get("/images").json()] == [info["id"]]
    assert client.delete(f"/images/{info['id']}").status_code == 200


def test_bad_requests_get_one_line_and_the_right_status(client) -> None:
    i = client.post("/images", params={"name": "a.png"}, content=png_bytes(0)).json()["id"]
    too_big = b"\0" * (MAX_BYTES + 1)  # refused from its Content-Length, before the body is read
    cases = [
        (client.post("/images", params={"name": "big.dcm"}, content=too_big), 413, "more than the service accepts"),
        (client.post("/images", params={"name": "x.png"}, content=b"garbage"), 400, "x.png"),
        (client.post("/images", params={"name": "e.png"}, content=b""), 400, "empty"),
        (client.post(f"/images/{i}/segment", json={"box": [0, 0, 999, 10]}), 400, "outside the 64x48 image"),
        (client.post(f"/images/{i}/segment", json={}), 400, "give a box"),
        (client.post(f"/images/{i}/segment", json={"box": "wide"}), 400, "box"),
        (client.post("/images/nope/segment", json={"box": [0, 0, 5, 5]}), 404, "upload it again"),
        (client.get("/images/nope/display.png"), 404, "no image 'nope'"),
        (client.get(f"/images/{i}/display.png", params={"slice": 3}), 400, "a 2D image has no slice 3"),
        (client.post(f"/images/{i}/segment", json={"box": [0, 0, 5, 5], "slice": 1}), 400, "no slice 1"),
        (client.delete("/images/nope"), 404, "no image"),
        (client.post(f"/images/{i}/propagate", json={"box": [0, 0, 5, 5]}), 400, "no slices to propagate"),
        (client.post("/images/nope/propagate", json={"box": [0, 0, 5, 5]}), 404, "no image"),
    ]
    for res, status, text in cases:
        assert res.status_code == status, res.text
        detail = res.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and text in detail, detail
