"""The viewer's PACS routes against a real Orthanc: find the CT study, open its series, propagate,
store the masks back as DICOM-SEG and read that SEG back from Orthanc, aligned slice by slice."""

from __future__ import annotations

import base64
import io
import urllib.request
import zipfile

import numpy as np
import pydicom
import pytest

from medfm.errors import InputError
from medfm.io import read_image
from medfm.serve import SegmentationService, create_app
from medfm.serve.pacs_routes import add_pacs_routes, read_mask_zip
from tests.serve.conftest import decode_png

TOKEN = "pacs-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OCTETS = {**AUTH, "Content-Type": "application/octet-stream"}


def _mask_zip(masks: dict[int, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, png in masks.items():
            zf.writestr(f"mask_slice_{k:03d}.png", png)
    return buf.getvalue()


@pytest.fixture()
def ct(shared_data):
    files = sorted((shared_data / "dicom_ct3slice_seg" / "ct").glob("*.dcm"))
    assert len(files) == 3
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    return files, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


@pytest.fixture()
def client(orthanc, tiny_sam, ct):
    from fastapi.testclient import TestClient

    orthanc.upload(ct[0])
    service = SegmentationService(tiny_sam, max_images=4)
    app = create_app(service, token=TOKEN, pacs=orthanc.dicomweb_url)  # medfm serve --pacs URL
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c
    app.state.pacs.close()


def _seg_frames(orthanc, sop_uid: str) -> tuple[pydicom.Dataset, str]:
    """The SEG instance with ``sop_uid`` as read back from Orthanc, and its Orthanc id."""
    found = orthanc.rest("POST", "/tools/find", {"Level": "Instance", "Query": {"SOPInstanceUID": sop_uid}})
    assert len(found) == 1, found
    with urllib.request.urlopen(f"{orthanc.url}/instances/{found[0]}/file", timeout=10) as r:
        return pydicom.dcmread(io.BytesIO(r.read())), found[0]


def test_open_from_orthanc_propagate_and_store_the_seg_back(client, orthanc, ct) -> None:
    files, study, series = ct
    assert client.get("/pacs/studies", params={"StudyInstanceUID": study}).status_code == 401  # the token guards it
    assert client.get("/pacs", headers=AUTH).json()["url"] == orthanc.dicomweb_url
    studies = client.get("/pacs/studies", params={"StudyInstanceUID": study}, headers=AUTH).json()
    assert [s["StudyInstanceUID"] for s in studies] == [study] and "CT" in studies[0]["ModalitiesInStudy"]
    assert studies[0]["PatientID"] == "99000"  # shown to pick a study (a service with --deid leaves it out)
    listed = client.get(f"/pacs/studies/{study}/series", headers=AUTH).json()
    assert series in [s["SeriesInstanceUID"] for s in listed]

    info = client.post("/pacs/open", json={"study": study, "series": series}, headers=AUTH).json()
    assert (info["width"], info["height"], info["depth"], info["study"], info["series"]) == (512, 512, 3, study, series)
    # the same pixels as the files uploaded by hand
    by_hand = io.BytesIO()
    with zipfile.ZipFile(by_hand, "w") as zf:
        for f in files:
            zf.write(f, f.name)
    hand = client.post("/images", params={"name": "ct.zip"}, content=by_hand.getvalue(), headers=OCTETS).json()
    for z in range(3):
        a = client.get(f"/images/{hand['id']}/display.png", params={"slice": z}, headers=AUTH).content
        assert a == client.get(f"/images/{info['id']}/display.png", params={"slice": z}, headers=AUTH).content

    prop = client.post(f"/images/{info['id']}/propagate", json={"box": [80, 146, 350, 366], "slice": 1}, headers=AUTH).json()
    pngs = {int(k): base64.b64decode(v) for k, v in prop["masks"].items()}
    want = np.zeros((3, 512, 512), bool)
    for k, png in pngs.items():
        want[k] = decode_png(png) > 0
    assert want.any()
    stored = client.post(f"/pacs/store/{info['id']}", params={"segment": "liver"}, content=_mask_zip(pngs), headers=OCTETS)
    assert stored.status_code == 200, stored.text
    res = stored.json()
    assert res["voxels"] == int(want.sum()) and res["slices"] == sorted(pngs) and res["study"] == study

    # read back from Orthanc: each frame names the CT slice it lies on and holds that slice's mask
    seg, orthanc_id = _seg_frames(orthanc, res["seg_sop_instance_uid"])
    try:
        assert seg.Modality == "SEG" and seg.StudyInstanceUID == study and seg.SeriesInstanceUID == res["seg_series_instance_uid"]
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series
        assert seg.SegmentSequence[0].SegmentLabel == "liver"
        slice_uids = read_image(files[0].parent).meta["sop_instance_uids"]  # the service's slice k is this CT instance
        frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), 512, 512).astype(bool)
        got = {}
        for group, frame in zip(seg.PerFrameFunctionalGroupsSequence, frames, strict=True):
            uid = str(group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
            got[slice_uids.index(uid)] = frame
        for k in range(3):
            np.testing.assert_array_equal(got.get(k, np.zeros((512, 512), bool)), want[k])
    finally:
        orthanc.rest("DELETE", f"/instances/{orthanc_id}")


def test_pacs_refusals_are_one_line(client, orthanc, ct, tiny_sam) -> None:
    from fastapi.testclient import TestClient

    files, study, series = ct
    up = client.post("/images", params={"name": "ct.dcm"}, content=files[0].read_bytes(), headers=OCTETS).json()
    info = client.post("/pacs/open", json={"study": study, "series": series}, headers=AUTH).json()
    good = {1: base64.b64decode(client.post(f"/images/{info['id']}/segment", json={"box": [80, 146, 350, 366]}, headers=AUTH).json()["mask_png"])}
    cases = [
        (client.get("/pacs/studies", params={"PatientName": "X", "Nope": "1"}, headers=AUTH), 400, "unknown search filter"),
        (client.get("/pacs/studies/1.2.3.999/series", headers=AUTH), 404, "not on the PACS"),
        (client.get("/pacs/studies/1.2..3/series", headers=AUTH), 400, "not a DICOM UID"),
        (client.post("/pacs/open", json={"study": study, "series": "1.2/../../../instances"}, headers=AUTH), 400, "not a DICOM UID"),
        (client.post("/pacs/open", json={"study": study, "series": "1.2.3.999"}, headers=AUTH), 404, "not found"),
        (client.post(f"/pacs/store/{up['id']}", content=_mask_zip(good), headers=OCTETS), 404, "not opened from the PACS"),
        (client.post("/pacs/store/nope", content=_mask_zip(good), headers=OCTETS), 404, "not opened from the PACS"),
        (client.post(f"/pacs/store/{info['id']}", content=b"not a zip", headers=OCTETS), 400, "not a readable zip"),
        (client.post(f"/pacs/store/{info['id']}", content=_mask_zip({7: good[1]}), headers=OCTETS), 400, "mask_slice_NNN.png with NNN in 0..2"),
        (client.post(f"/pacs/store/{info['id']}", content=_mask_zip({0: b"\x89PNG broken"}), headers=OCTETS), 400, "not a readable PNG"),
        (client.post(f"/pacs/store/{info['id']}", content=_mask_zip({0: _png(np.zeros((10, 10), np.uint8))}), headers=OCTETS), 400, "not a 512x512 PNG"),
        (client.post(f"/pacs/store/{info['id']}", content=_mask_zip({0: _png(np.zeros((512, 512), np.uint8))}), headers=OCTETS), 400, "empty"),
        (client.post(f"/pacs/store/{info['id']}", params={"segment": " "}, content=_mask_zip(good), headers=OCTETS), 400, "segment"),
    ]
    for res, status, text in cases:
        assert res.status_code == status, (res.status_code, res.text)
        detail = res.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and text in detail, detail
    before = orthanc.rest("POST", "/tools/find", {"Level": "Series", "Query": {"StudyInstanceUID": study, "Modality": "SEG"}})
    assert before == []  # nothing half-stored

    # a PACS that is down: 502 with one line, no hang
    from tests.orthanc import free_port

    service = SegmentationService(tiny_sam, max_images=2)
    app = create_app(service, token=TOKEN)
    bridge = add_pacs_routes(app, service, f"dicomweb://127.0.0.1:{free_port()}/dicom-web", timeout=5)
    with TestClient(app, base_url="http://127.0.0.1") as down:
        for res in (down.get("/pacs/studies", headers=AUTH), down.post("/pacs/open", json={"study": study, "series": series}, headers=AUTH)):
            assert res.status_code == 502 and "cannot connect" in res.json()["detail"], res.text
    bridge.close()


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_read_mask_zip_checks_names_and_sizes() -> None:
    on = np.zeros((4, 6), np.uint8)
    on[1:3, 2:5] = 255
    got = read_mask_zip(_mask_zip({2: _png(on)}), (3, 4, 6))
    assert got.shape == (3, 4, 6) and got[2].sum() == 6 and not got[[0, 1]].any()
    with pytest.raises(InputError, match="3 masks for a volume of 2 slices"):
        read_mask_zip(_mask_zip({0: _png(on), 1: _png(on), 2: _png(on)}), (2, 4, 6))
    big = io.BytesIO()
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mask_slice_000.png", b"\0" * 10**6)  # a small zip that unpacks large: refused unread
    with pytest.raises(InputError, match="too large for a 6x4 mask"):
        read_mask_zip(big.getvalue(), (3, 4, 6))
    # the same member with its header claiming 100 bytes: the read stops at the limit, never unpacks it all
    liar = bytearray(big.getvalue())
    for sig, at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # uncompressed size in the local and central headers
        i = liar.index(sig)
        liar[i + at : i + at + 4] = (100).to_bytes(4, "little")
    with pytest.raises(InputError):
        read_mask_zip(bytes(liar), (3, 4, 6))


def test_read_mask_zip_refuses_what_the_upload_reader_refuses() -> None:
    """Mask zips go through the service's one upload-zip reader: an unsupported compression
    method, a corrupt stream or an empty zip is one InputError naming the upload, never a 500."""
    on = np.zeros((4, 6), np.uint8)
    good = bytearray(_mask_zip({0: _png(on)}))
    odd = bytearray(good)
    for sig, at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # compression method 99 (AES): not implemented
        i = odd.index(sig)
        odd[i + at : i + at + 2] = (99).to_bytes(2, "little")
    with pytest.raises(InputError, match="upload.zip: not a readable zip"):
        read_mask_zip(bytes(odd), (3, 4, 6), name="upload.zip")
    crushed = io.BytesIO()
    with zipfile.ZipFile(crushed, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mask_slice_000.png", _png(on) * 3)
    raw = bytearray(crushed.getvalue())
    start = raw.index(b"PK\x03\x04") + 30 + len("mask_slice_000.png")
    raw[start : start + 8] = b"\xff" * 8  # the deflate stream itself is corrupt
    with pytest.raises(InputError, match="upload.zip: not a readable zip"):
        read_mask_zip(bytes(raw), (3, 4, 6), name="upload.zip")
    empty = io.BytesIO()
    zipfile.ZipFile(empty, "w").close()
    with pytest.raises(InputError, match="upload.zip: the zip holds no mask"):
        read_mask_zip(empty.getvalue(), (3, 4, 6), name="upload.zip")
