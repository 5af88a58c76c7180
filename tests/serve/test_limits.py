"""Limits of ``medfm serve`` on a network (issue 17, item 5): zip bombs and ``..`` members,
decoded voxels checked from headers before decoding, kept-image memory, streamed (chunked) upload
size, prompt size. Each case here was answered 200 (or held memory) by the service before."""

from __future__ import annotations

import io
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from medfm.errors import InputError
from medfm.serve import SegmentationService, create_app
from medfm.serve.service import TooLarge, _unzip, decoded_voxels
from tests.serve.conftest import png_bytes

BASE = "http://127.0.0.1:8000"


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)  # ZipInfo keeps '..' as given
    return buf.getvalue()


def _no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any pixel decoding by the service fail the test: refusals must come from headers."""

    def decode(*args: object, **kw: object) -> None:
        raise AssertionError("the image was decoded before its size was checked")

    monkeypatch.setattr("medfm.serve.service.read_image", decode)


def test_a_zip_bomb_is_refused_before_it_is_expanded(tiny_sam) -> None:
    bomb = _zip({"ct.dcm": bytes(64 * 2**20)})  # 64 MiB of zeros in ~64 KiB
    assert len(bomb) < 2**20
    svc = SegmentationService(tiny_sam, max_unzipped_bytes=8 * 2**20)
    t0 = time.perf_counter()
    with pytest.raises(TooLarge, match=r"bomb.zip: the zip expands to more than 8388608 bytes"):
        svc.add_image(bomb, "bomb.zip")
    assert time.perf_counter() - t0 < 5
    many_small = _zip({f"{k}.dcm": bytes(3 * 2**20) for k in range(4)})  # 12 MiB in members of 3 MiB
    with pytest.raises(TooLarge, match="expands to more than"):
        svc.add_image(many_small, "many.zip")
    too_many = _zip({f"{k}.dcm": b"x" for k in range(6)})
    with pytest.raises(TooLarge, match="the zip holds 6 files, more than 5"):
        SegmentationService(tiny_sam, max_zip_files=5).add_image(too_many, "many.zip")
    # with the default limits: more than 100 bytes out per zipped byte (and over 64 MiB) is a bomb
    with pytest.raises(TooLarge, match="expands to more than 67108864 bytes"):
        SegmentationService(tiny_sam).add_image(_zip({"ct.dcm": bytes(96 * 2**20)}), "bomb.zip")
    assert svc.images() == []


def test_files_without_an_image_header_are_not_parsed(tiny_sam) -> None:
    """pydicom's forced parse walks a file of zeros as millions of empty elements: such files are refused unread."""
    svc = SegmentationService(tiny_sam)
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="zeros.dcm: not an image medfm reads"):
        svc.add_image(bytes(32 * 2**20), "zeros.dcm")
    with pytest.raises(InputError, match="zeros.zip: no DICOM image file"):
        svc.add_image(_zip({"a.dcm": bytes(32 * 2**20)}), "zeros.zip")
    assert time.perf_counter() - t0 < 5


def test_a_lying_zip_member_is_stopped_while_it_streams(tmp_path: Path) -> None:
    """Declared sizes can lie: the bytes written are counted as they come out of the decompressor."""
    data = bytearray(_zip({"a.dcm": bytes(4 * 2**20)}))
    # patch the declared uncompressed size (local header and central directory) to 1 KiB
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(sig)
        data[at + off : at + off + 4] = (1024).to_bytes(4, "little")
    with pytest.raises(InputError):  # zipfile stops at the declared size (CRC error) or the count stops it
        _unzip(bytes(data), tmp_path / "out", "liar.zip", max_bytes=2**20)
    written = sum(f.stat().st_size for f in (tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else 0
    assert written <= 2**20


def test_zip_members_are_streamed_not_read_whole(tmp_path: Path) -> None:
    data = _zip({"a.dcm": bytes(24 * 2**20)})
    tracemalloc.start()
    try:
        _unzip(data, tmp_path / "out", "ok.zip")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "out" / "00000_a.dcm").stat().st_size == 24 * 2**20
    assert peak < 6 * 2**20, peak  # zf.read(member) held all 24 MiB


@pytest.mark.parametrize("member", ["../evil.dcm", "study/../../evil.dcm", "/etc/evil.dcm", "C:/evil.dcm", "a\\..\\..\\evil.dcm"])
def test_zip_members_that_climb_out_are_refused(tiny_sam, tmp_path: Path, member: str) -> None:
    data = _zip({"ok/1.dcm": b"x", member: b"y"})
    with pytest.raises(InputError, match=r"evil.zip: the zip has 1 member\(s\) with '\.\.' or absolute paths"):
        SegmentationService(tiny_sam).add_image(data, "evil.zip")


def _nifti_bytes(shape: tuple[int, ...], data: bytes | None = None) -> bytes:
    """A .nii.gz whose header declares ``shape`` (float32); ``data``: the voxel bytes written (default all)."""
    import gzip

    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\0" * 4
    raw += bytes(4 * int(np.prod(shape))) if data is None else data
    return gzip.compress(raw, compresslevel=1)


def test_decoded_voxels_are_capped_from_the_header_before_decoding(tiny_sam, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tifffile
    from pydicom.data import get_testdata_file

    # the case: a small .nii.gz whose header declares 1024 x 1024 x 192 float32 (769 MB)
    big = _nifti_bytes((1024, 1024, 192), data=bytes(2**20))
    assert len(big) < 1_000_000
    tif = tmp_path / "stack.tif"
    tifffile.imwrite(tif, np.zeros((4, 64, 64), np.uint16), photometric="minisblack")  # 16384 voxels
    cases = {
        "big.nii.gz": (big, 1024 * 1024 * 192),
        "vol.nii.gz": (_nifti_bytes((40, 30, 9)), 40 * 30 * 9),
        "stack.tif": (tif.read_bytes(), 4 * 64 * 64),
        "ct.dcm": (Path(get_testdata_file("CT_small.dcm")).read_bytes(), 128 * 128),
        "a.png": (png_bytes(0, (120, 100)), 120 * 100),
        "series.zip": (_zip({f"{k}.dcm": Path(get_testdata_file("CT_small.dcm")).read_bytes() for k in range(3)}), 3 * 128 * 128),
    }
    for name, (data, voxels) in cases.items():
        path = tmp_path / "v" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        if name.endswith(".zip"):
            _unzip(data, tmp_path / "z", name)
            path = tmp_path / "z"
        assert decoded_voxels(path) == voxels, name
    _no_decoding(monkeypatch)
    svc = SegmentationService(tiny_sam, max_voxels=10_000)
    for name, (data, voxels) in cases.items():
        with pytest.raises(TooLarge, match=f"{name}: its header declares {voxels} voxels, more than the service decodes \\(10000\\)"):
            svc.add_image(data, name)
    assert svc.images() == []
    # under a large voxel cap, the same file is refused for its expansion (~200 voxels per byte)
    with pytest.raises(TooLarge, match=r"big.nii.gz: \d+ bytes that declare 201326592 voxels \(\d+ per byte, more than 100\): refused as a decompression bomb"):
        SegmentationService(tiny_sam, max_voxels=2**28).add_image(big, "big.nii.gz")


def test_kept_images_are_bounded_in_bytes_least_recently_used_out(tiny_sam) -> None:
    one = 48 * 64  # a uint8 PNG of the test size
    svc = SegmentationService(tiny_sam, max_images=16, max_held_bytes=2 * one + 100)
    a = svc.add_image(png_bytes(0), "a.png")["id"]
    svc.add_image(png_bytes(1), "b.png")
    svc.segment(a, box=[1, 1, 20, 20])  # a used last: b goes first
    c = svc.add_image(png_bytes(2), "c.png")["id"]
    assert [i["id"] for i in svc.images()] == [a, c] and svc.held_bytes() == 2 * one
    with pytest.raises(TooLarge, match=r"big.png: 12000 bytes of pixels is more than the service keeps"):
        svc.add_image(png_bytes(3, (120, 100)), "big.png")
    assert [i["id"] for i in svc.images()] == [a, c]


def test_prompt_points_are_capped_before_the_model_runs(tiny_sam, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = SegmentationService(tiny_sam, max_points=64)
    i = svc.add_image(png_bytes(0), "a.png")["id"]
    calls = []
    monkeypatch.setattr(tiny_sam, "predict", lambda *a, **k: calls.append(1))
    many = [[5.0, 5.0]] * 20_000  # held the model lock for 2.4 s before
    with pytest.raises(InputError, match=r"20000 points in one prompt, more than the service takes \(64\)"):
        svc.segment(i, points=many)
    with pytest.raises(InputError, match="20000 labels"):
        svc.segment(i, points=[[5, 5]], labels=[1] * 20_000)
    with pytest.raises(InputError, match="one box"):
        svc.segment(i, box=[1.0] * 8)
    assert calls == []


@pytest.fixture()
def client(tiny_sam):
    from fastapi.testclient import TestClient

    return TestClient(create_app(SegmentationService(tiny_sam, max_images=4, max_bytes=50_000)), base_url=BASE)


def _asgi_post(app, path: str, query: bytes, chunks, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict, int]:
    """POST to an ASGI ``app`` the way a server streams a body without Content-Length (chunked):
    (status, JSON body, how many chunks the app pulled)."""
    import asyncio
    import json

    pulled, out = 0, {"status": 0, "body": b""}
    it = iter(chunks)

    async def receive() -> dict:
        nonlocal pulled
        chunk = next(it, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": query,
        "headers": [(b"host", b"127.0.0.1:8000"), *headers], "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000),
    }
    asyncio.run(app(scope, receive, send))
    return out["status"], json.loads(out["body"] or b"{}"), pulled


def test_a_chunked_upload_is_counted_while_it_streams_and_refused_at_the_limit(tiny_sam) -> None:
    app = create_app(SegmentationService(tiny_sam, max_images=4, max_bytes=50_000))
    octet = [(b"content-type", b"application/octet-stream")]
    # 300 MiB offered in 64 KiB pieces against a 50 kB limit (buffered whole before the size check before)
    status, body, pulled = _asgi_post(app, "/images", b"name=big.dcm", (b"\0" * 65536 for _ in range(4800)), octet)
    assert status == 413 and "more than the service accepts" in body["detail"], body
    assert pulled == 1  # refused on the first piece past the limit; the rest never read
    png = png_bytes(0)
    status, body, pulled = _asgi_post(app, "/images", b"name=a.png", [png[:100], png[100:]], octet)
    assert status == 200 and body["width"] == 64 and pulled == 2
    prompt = [b'{"points": [', *([b"[1, 1],"] * 200_000), b"[1, 1]]}"]  # a 1.6 MB prompt, chunked
    status, body, pulled = _asgi_post(app, f"/images/{body['id']}/segment", b"", prompt, [(b"content-type", b"application/json")])
    assert status == 413 and "the request body is more than" in body["detail"] and pulled < 200_000


def test_http_answers_413_for_every_limit(tiny_sam) -> None:
    from fastapi.testclient import TestClient

    svc = SegmentationService(tiny_sam, max_bytes=200_000, max_voxels=10_000, max_unzipped_bytes=2**20, max_points=8)
    client = TestClient(create_app(svc), base_url=BASE)
    i = client.post("/images", params={"name": "a.png"}, content=png_bytes(0)).json()["id"]
    cases = [
        (client.post("/images", params={"name": "bomb.zip"}, content=_zip({"a.dcm": bytes(16 * 2**20)})), 413, "expands to more than"),
        (client.post("/images", params={"name": "v.nii.gz"}, content=_nifti_bytes((40, 30, 9))), 413, "voxels"),
        (client.post("/images", params={"name": "x.zip"}, content=_zip({"../x.dcm": b"1"})), 400, "absolute paths"),
        (client.post(f"/images/{i}/segment", json={"points": [[1, 1]] * 9}), 400, "9 points in one prompt"),
        (client.post(f"/images/{i}/segment", content=b"[" + b"1," * 600_000 + b"1]", headers={"content-type": "application/json"}), 413, "request body"),
    ]
    for res, status, text in cases:
        assert res.status_code == status, res.text
        assert text in res.json()["detail"], res.json()
