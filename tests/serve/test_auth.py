"""``medfm serve`` on a network (issue 17, item 5): token authentication, Host allow-list (DNS
rebinding), CSRF defence, no patient identifiers in logs, de-identified uploads, and the CLI's
refusal to listen on a network without a token."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from medfm.serve import SegmentationService, create_app
from tests.serve.conftest import png_bytes

BASE = "http://127.0.0.1:8000"
TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def svc(tiny_sam) -> SegmentationService:
    return SegmentationService(tiny_sam, max_images=4, max_bytes=2**20)


def _client(svc: SegmentationService, **kw):
    from fastapi.testclient import TestClient

    return TestClient(create_app(svc, **kw), base_url=BASE)


def test_every_route_but_the_page_and_health_needs_the_token(svc) -> None:
    client = _client(svc, token=TOKEN)
    i = client.post("/images", params={"name": "a.png"}, content=png_bytes(0), headers=AUTH).json()["id"]
    routes = [
        ("GET", "/images", {}),
        ("GET", f"/images/{i}/display.png", {}),
        ("POST", "/images?name=b.png", {"content": png_bytes(1)}),
        ("POST", f"/images/{i}/segment", {"json": {"box": [1, 1, 20, 20]}}),
        ("POST", f"/images/{i}/propagate", {"json": {"box": [1, 1, 20, 20]}}),
        ("GET", "/docs", {}),
        ("GET", "/openapi.json", {}),
        ("DELETE", f"/images/{i}", {}),
    ]
    wrong = [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": TOKEN},
             {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer "}]
    for method, url, kw in routes:
        for headers in wrong:
            r = client.request(method, url, headers=headers, **kw)
            assert r.status_code == 401, (method, url, headers, r.text)
            assert "Authorization: Bearer" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
    assert [x["id"] for x in client.get("/images", headers=AUTH).json()] == [i]  # nothing changed
    for path in ("/", "/health"):
        assert client.get(path).status_code == 200
    assert "images" in client.get("/health").json()
    assert client.post(f"/images/{i}/segment", json={"box": [1, 1, 20, 20]}, headers=AUTH).status_code == 200
    assert client.delete(f"/images/{i}", headers=AUTH).status_code == 200
    # without a token the service is open (loopback use, as before)
    assert _client(svc).get("/images").status_code == 200


def test_the_token_is_compared_in_constant_time(svc, monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    seen = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: seen.append((a, b)) or real(a, b))
    client = _client(svc, token=TOKEN)
    assert client.get("/images", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert seen == [(b"nope", TOKEN.encode())]


def test_a_foreign_host_header_is_refused(svc) -> None:
    client = _client(svc)
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil.example:8000", ""):
        r = client.get("/health", headers={"host": host})
        assert r.status_code == 403 and "is not served here" in r.json()["detail"], host
        assert client.post("/images", params={"name": "a.png"}, content=png_bytes(0), headers={"host": host}).status_code == 403
    for host in ("127.0.0.1:8000", "localhost", "LOCALHOST:1234", "[::1]:8000"):
        assert client.get("/images", headers={"host": host}).status_code == 200, host
    named = _client(svc, allowed_hosts=["127.0.0.1", "medfm.hospital.lan"])
    assert named.get("/images", headers={"host": "medfm.hospital.lan:8000"}).status_code == 200
    assert named.get("/images", headers={"host": "localhost"}).status_code == 403
    assert _client(svc, allowed_hosts=["*"]).get("/images", headers={"host": "anything"}).status_code == 200


def test_cross_site_requests_that_change_state_are_refused(svc) -> None:
    client = _client(svc)
    png = png_bytes(0)
    up = "/images?name=a.png"
    refused = [
        ({"content-type": "text/plain"}, 415, "content type text/plain"),  # a cross-site fetch without preflight
        ({"content-type": "application/x-www-form-urlencoded"}, 415, "content type"),
        ({"content-type": "multipart/form-data; boundary=x"}, 415, "content type"),
        ({"origin": "http://evil.example", "x-medfm-client": "viewer"}, 403, "cross-origin"),
        ({"origin": "http://127.0.0.1:9999", "x-medfm-client": "viewer"}, 403, "cross-origin"),  # another local port
        ({"origin": "null", "x-medfm-client": "viewer"}, 403, "cross-origin"),
        ({"origin": BASE, "content-type": "application/octet-stream"}, 403, "X-Medfm-Client"),  # a browser without the header
    ]
    for headers, status, text in refused:
        r = client.post(up, content=png, headers=headers)
        assert r.status_code == status and text in r.json()["detail"], (headers, r.text)
    assert client.get("/images").json() == []
    # what the viewer sends, and what curl / Python clients send (no Origin)
    viewer = {"origin": BASE, "x-medfm-client": "viewer", "content-type": "application/octet-stream"}
    i = client.post(up, content=png, headers=viewer).json()["id"]
    assert client.post(up, content=png_bytes(1)).status_code == 200
    seg = f"/images/{i}/segment"
    assert client.post(seg, content=b'{"box": [1, 1, 20, 20]}', headers={"content-type": "text/plain"}).status_code == 415
    assert client.post(seg, json={"box": [1, 1, 20, 20]}, headers={"origin": "http://evil.example"}).status_code == 403
    assert client.post(seg, json={"box": [1, 1, 20, 20]}, headers={k: v for k, v in viewer.items() if k != "content-type"}).status_code == 200
    assert client.delete(f"/images/{i}", headers={"origin": "http://evil.example", "x-medfm-client": "viewer"}).status_code == 403
    assert client.delete(f"/images/{i}", headers={"origin": BASE, "x-medfm-client": "viewer"}).status_code == 200
    # reads are not state-changing: a cross-origin GET cannot read the answer (no CORS headers are sent)
    r = client.get("/images", headers={"origin": "http://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_logs_hold_image_ids_not_patient_names_or_file_names(svc, caplog: pytest.LogCaptureFixture) -> None:
    from pydicom.data import get_testdata_file

    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    assert b"CompressedSamples^CT1" in data  # the patient name in the file
    client = _client(svc)
    with caplog.at_level(logging.INFO, logger="medfm.serve"):
        r = client.post("/images", params={"name": "Doe^John_1957-03-02.dcm"}, content=data)
        i = r.json()["id"]
        client.post(f"/images/{i}/segment", json={"box": [30, 30, 90, 90]})
        client.post("/images", params={"name": "Roe^Jane.png"}, content=b"garbage")
        client.post("/images", params={"name": "Roe^Jane.png"}, content=png_bytes(0), headers={"host": "evil.example"})
    text = caplog.text
    assert i in text and f"POST /images/{i}/segment 200" in text and "POST /images 400" in text
    for secret in ("Doe", "John", "1957", "Roe", "Jane", "CompressedSamples", "name="):
        assert secret not in text, secret


def test_deid_uploads_keep_no_identifiers(tiny_sam, tmp_path: Path) -> None:
    pytest.importorskip("dicognito")
    import io
    import zipfile

    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file

    src = Path(get_testdata_file("CT_small.dcm"))
    plain = SegmentationService(tiny_sam)
    svc = SegmentationService(tiny_sam, deid=True)
    seen = []
    real = svc._read

    def spy(data, name):  # what read_image sees: the de-identified file, not the upload
        from medfm.serve import service

        orig = service.read_image

        def read(path):
            files = sorted(Path(path).iterdir()) if Path(path).is_dir() else [Path(path)]
            seen.extend(pydicom.dcmread(f, stop_before_pixels=True) for f in files)
            return orig(path)

        service.read_image = read
        try:
            return real(data, name)
        finally:
            service.read_image = orig

    svc._read = spy
    d = svc.add_image(src.read_bytes(), "Doe^John.dcm")
    assert d["name"] == f"image-{d['id']}.dcm" and "Doe" not in str(svc.images())
    ds = seen[0]
    orig = pydicom.dcmread(src, stop_before_pixels=True)
    assert ds.PatientName != orig.PatientName and ds.PatientID != orig.PatientID
    assert ds.StudyInstanceUID != orig.StudyInstanceUID
    ref = plain.add_image(src.read_bytes(), "ct.dcm")
    np.testing.assert_array_equal(svc.session(d["id"]).volume, plain.session(ref["id"]).volume)  # pixels unchanged
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k in range(2):  # two slices of one series: CT_small moved along z
            one = pydicom.dcmread(src)
            one.ImagePositionPatient = [*one.ImagePositionPatient[:2], float(one.ImagePositionPatient[2]) + 5 * k]
            one.SOPInstanceUID = f"{one.SOPInstanceUID}.{k + 1}"
            one.InstanceNumber = k + 1
            raw = io.BytesIO()
            one.save_as(raw)
            zf.writestr(f"s/{k}.dcm", raw.getvalue())
    seen.clear()
    svc.add_image(buf.getvalue(), "Doe^John_series.zip")
    assert len(seen) == 2 and len({x.StudyInstanceUID for x in seen}) == 1  # one mapping per upload
    assert all(x.PatientName != orig.PatientName for x in seen)


def test_the_cli_refuses_a_network_host_without_a_token(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import uvicorn
    from fastapi.testclient import TestClient

    from medfm.cli.main import main

    started: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, log_level: started.update(app=app, host=host))
    monkeypatch.delenv("MEDFM_SERVE_TOKEN", raising=False)
    assert main(["serve", "--model", "test/sam-tiny", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "reachable from the network: give a token" in err and len(err.strip().splitlines()) == 1 and not started
    assert main(["serve", "--model", "test/sam-tiny", "--host", "0.0.0.0", "--insecure"]) == 0 and started["host"] == "0.0.0.0"
    monkeypatch.setenv("MEDFM_SERVE_TOKEN", TOKEN)
    assert main(["serve", "--model", "test/sam-tiny", "--host", "10.1.2.3", "--allowed-host", "medfm.lan"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert TOKEN not in err and "token required" in err
    client = TestClient(started["app"], base_url="http://medfm.lan:8000")
    assert client.get("/images").status_code == 401 and client.get("/images", headers=AUTH).status_code == 200
    assert client.get("/images", headers={**AUTH, "host": "10.1.2.3:8000"}).status_code == 200  # the bound address
    assert client.get("/images", headers={**AUTH, "host": "evil.example"}).status_code == 403
