"""The viewer driven in a real browser (Playwright + Debian's chromium) against a real uvicorn:
open the 3-slice CT series, scroll, drag a box, see the mask, propagate, download; screenshots kept.

Screenshots and downloads go to ``$MEDFM_ARTEFACTS/browser`` when that is set, else to pytest's
tmp dir; the folder is printed (``pytest -s`` shows it).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import socket
import threading
import time
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from tests.serve.conftest import decode_png

CHROMIUM = os.environ.get("MEDFM_CHROMIUM", "/usr/bin/chromium")  # Debian's; Playwright's own download is not used
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]
TOKEN = "browser-test-token"  # the server asks for it on every route but / and /health
LIVER_BOX = (80, 146, 350, 366)  # the liver's extent on the middle slice (nrrd/liver_seg.nrrd), image pixels

pytestmark = pytest.mark.slow


def _need_browser() -> None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")


@pytest.fixture()
def artefacts(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    root = os.environ.get("MEDFM_ARTEFACTS")
    out = (Path(root) / "browser" / request.node.name) if root else tmp_path / "artefacts"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    print(f"\nbrowser artefacts (screenshots, downloads): {out}")
    return out


@contextlib.contextmanager
def _serve(app):
    """``app`` on a real uvicorn at 127.0.0.1:<free port>, in a thread; yields its URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    """Headless chromium with a fresh profile in a temp dir, shared by this module's tests (skips without it)."""
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1100, "height": 800}, accept_downloads=True,
        )
        yield context
        context.close()


@pytest.fixture(scope="module")
def sam(browser):
    """The tiny SAM of ``tests/serve/conftest.py``, loaded once for this module (after the browser check)."""
    from medfm.models import create_model
    from tests._sam import redraw_decoder

    return redraw_decoder(create_model("test/sam-tiny", device="cpu", precision="fp32"))


@pytest.fixture()
def server(sam):
    """``medfm serve``'s app (tiny SAM, token ``TOKEN``, no PACS) on a real uvicorn."""
    from medfm.serve import SegmentationService, create_app

    with _serve(create_app(SegmentationService(sam, max_images=4), token=TOKEN)) as url:
        yield url


@pytest.fixture()
def pacs_server(sam, orthanc):
    """The same, with the viewer's PACS routes on the test Orthanc."""
    from medfm.serve import SegmentationService, create_app

    app = create_app(SegmentationService(sam, max_images=4), token=TOKEN, pacs=orthanc.dicomweb_url)
    with _serve(app) as url:
        yield url
    app.state.pacs.close()


@pytest.fixture()
def page(browser):
    """A new tab; fails the test on any error in the page."""
    errors: list[str] = []
    pg = browser.new_page()
    pg.set_default_timeout(20_000)
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    # a refused request is also logged as "Failed to load resource": those are checked through pg.failed
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and "Failed to load resource" not in msg.text else None)
    pg.failed = []  # HTTP answers >= 400 (a test that expects none checks this)
    pg.sent = []  # (method, path, Authorization, X-Medfm-Client) of every request
    pg.on("request", lambda r: pg.sent.append((r.method, urlsplit(r.url).path, r.headers.get("authorization"), r.headers.get("x-medfm-client"))))
    pg.on("response", lambda res: pg.failed.append(f"{res.status} {res.url}") if res.status >= 400 else None)
    try:
        yield pg
    finally:
        pg.close()
    assert not errors, f"errors in the page: {errors}"


def _get(url: str) -> bytes:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as res:
        return res.read()


def _canvas(pg) -> np.ndarray:
    """The viewer's canvas as (H, W, 4) uint8 RGBA."""
    data = pg.evaluate(
        """() => { const c = document.getElementById('view');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let s = ''; for (let i = 0; i < d.length; i += 8192) s += String.fromCharCode.apply(null, d.subarray(i, i + 8192));
        return [c.width, c.height, btoa(s)]; }"""
    )
    w, h, b64 = data
    return np.frombuffer(base64.b64decode(b64), np.uint8).reshape(h, w, 4)


def _wait_ready(pg, text: str) -> str:
    """Wait until the status line is done (not busy), fail on an error, and check it says ``text``."""
    pg.wait_for_function("() => document.getElementById('status').dataset.state !== 'busy'")
    status = pg.locator("#status")
    msg = status.inner_text()
    assert status.get_attribute("data-state") == "ok", msg
    assert text in msg, msg
    return msg


def _wait_slice(pg, z: int) -> None:
    pg.wait_for_function(f"() => document.getElementById('view').dataset.shown === '{z}'")


def _overlay(canvas: np.ndarray) -> np.ndarray:
    """Where the viewer paints its mask: red over grey (R - G ~ 97 with the 0.45 red tint; grey has R = G)."""
    rgb = canvas[..., :3].astype(int)
    return (rgb[..., 0] - rgb[..., 1]) > 48


def _drag(pg, box: tuple[int, int, int, int]) -> None:
    """Drag the mouse over the canvas from image pixel (x0, y0) to (x1, y1)."""
    r = pg.locator("#view").bounding_box()
    s = r["width"] / 512
    pg.mouse.move(r["x"] + box[0] * s, r["y"] + box[1] * s)
    pg.mouse.down()
    pg.mouse.move(r["x"] + (box[0] + box[2]) / 2 * s, r["y"] + (box[1] + box[3]) / 2 * s, steps=4)
    pg.mouse.move(r["x"] + box[2] * s, r["y"] + box[3] * s, steps=4)
    pg.mouse.up()


def _outline(shape: tuple[int, int], box: tuple[int, int, int, int], pad: int = 3) -> np.ndarray:
    """Pixels near the drawn box outline (the blue stroke hides the overlay there)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    x0, y0, x1, y1 = box
    inside = (xx >= x0 - pad) & (xx <= x1 + pad) & (yy >= y0 - pad) & (yy <= y1 + pad)
    core = (xx > x0 + pad) & (xx < x1 - pad) & (yy > y0 + pad) & (yy < y1 - pad)
    return inside & ~core


def test_viewer_in_chromium_open_scroll_box_mask_propagate_download(server, page, artefacts, shared_data) -> None:
    ct = sorted((shared_data / "dicom_ct3slice_seg" / "ct").glob("*.dcm"))
    assert len(ct) == 3
    pg = page
    pg.goto(f"{server}/#token={TOKEN}")
    assert "test/sam-tiny" in pg.locator("h1").inner_text()
    assert "token" not in pg.url  # taken out of the address bar (and so out of history and bookmarks)

    # open: the three files of the series picked at once (the page zips them into one upload)
    with pg.expect_response(lambda r: "/images?name=" in r.url and r.request.method == "POST") as up:
        pg.set_input_files("#file", [str(p) for p in ct])
    info = up.value.json()
    assert up.value.status == 200 and (info["width"], info["height"], info["depth"], info["slice"]) == (512, 512, 3, 1)
    assert info["name"] == "series.zip"
    _wait_ready(pg, "512 x 512 x 3 slices")
    _wait_slice(pg, 1)
    assert pg.locator("#sliceno").inner_text() == "2 / 3"
    shown = {1: _canvas(pg)}
    want = {z: decode_png(_get(f"{server}/images/{info['id']}/display.png?slice={z}")) for z in range(3)}
    np.testing.assert_array_equal(shown[1][..., 0], want[1])  # the slice is drawn pixel for pixel
    pg.screenshot(path=str(artefacts / "01_opened.png"))

    # scroll: the mouse wheel over the image, then the slider with the keyboard
    r = pg.locator("#view").bounding_box()
    pg.mouse.move(r["x"] + r["width"] / 2, r["y"] + r["height"] / 2)
    pg.mouse.wheel(0, 120)
    _wait_slice(pg, 2)
    shown[2] = _canvas(pg)
    assert pg.locator("#sliceno").inner_text() == "3 / 3" and pg.locator("#slice").input_value() == "2"
    np.testing.assert_array_equal(shown[2][..., 0], want[2])
    assert not np.array_equal(want[1], want[2])
    pg.mouse.wheel(0, 120)  # past the last slice: stays
    pg.locator("#slice").focus()
    pg.keyboard.press("ArrowLeft")
    _wait_slice(pg, 1)
    np.testing.assert_array_equal(_canvas(pg)[..., 0], want[1])
    pg.screenshot(path=str(artefacts / "02_scrolled.png"))

    # drag a box around the liver: the segment request carries it, the mask is painted where it says
    with pg.expect_response(lambda r: r.url.endswith("/segment")) as seg:
        _drag(pg, LIVER_BOX)
    req = json.loads(seg.value.request.post_data)
    box = tuple(req["box"])  # the mouse lands on whole CSS pixels: within a pixel of the drag's ends
    assert req["slice"] == 1 and np.abs(np.subtract(box, LIVER_BOX)).max() <= 1, box
    assert seg.value.request.headers.get("x-medfm-client") == "viewer"
    res = seg.value.json()
    mask = decode_png(base64.b64decode(res["mask_png"])) > 0
    assert mask.shape == (512, 512) and res["area_px"] == int(mask.sum()) > 0
    _wait_ready(pg, f"mask: {res['area_px']} px")
    assert "mm\u00b2" in pg.locator("#status").inner_text()
    canvas = _canvas(pg)
    keep = ~_outline(mask.shape, box)
    np.testing.assert_array_equal(_overlay(canvas)[keep], mask[keep])
    # the image under the overlay is still the slice: grey pixels outside the mask are untouched
    off = keep & ~mask
    np.testing.assert_array_equal(canvas[..., 0][off], want[1][off])
    pg.screenshot(path=str(artefacts / "03_box_mask.png"))

    # download the slice's mask: the PNG the server returned
    assert pg.locator("#save").is_visible()
    with pg.expect_download() as dl:
        pg.click("#save")
    path = artefacts / dl.value.suggested_filename
    dl.value.save_as(path)
    assert path.name == "mask_slice_001.png"
    np.testing.assert_array_equal(decode_png(path.read_bytes()) > 0, mask)

    # propagate through the volume from the box on this slice; every slice shows its own mask
    with pg.expect_response(lambda r: r.url.endswith("/propagate")) as prop:
        pg.click("#propagate")
    assert json.loads(prop.value.request.post_data)["box"] == list(box)
    vol = prop.value.json()
    masks = {int(k): decode_png(base64.b64decode(v)) > 0 for k, v in vol["masks"].items()}
    assert masks and vol["voxels"] == sum(int(m.sum()) for m in masks.values()) > 0
    _wait_ready(pg, f"propagated: {len(masks)} slices, {vol['voxels']} voxels")
    pg.screenshot(path=str(artefacts / "04_propagated.png"))
    for z in (0, 2):
        pg.locator("#slice").fill(str(z))  # the slider's input event
        _wait_slice(pg, z)
        got = _overlay(_canvas(pg))
        np.testing.assert_array_equal(got, masks.get(z, np.zeros_like(mask)))
        pg.screenshot(path=str(artefacts / f"05_propagated_slice{z}.png"))

    # download the volume's masks: a zip of one PNG per slice, equal to what the server sent
    with pg.expect_download() as dl:
        pg.click("#savevol")
    path = artefacts / dl.value.suggested_filename
    dl.value.save_as(path)
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        got = {int(n[len("mask_slice_") : -4]): decode_png(zf.read(n)) > 0 for n in zf.namelist()}
    assert sorted(got) == sorted(masks)
    for z, want_mask in masks.items():
        np.testing.assert_array_equal(got[z], want_mask)
    # points: a click inside, a shift-click outside; each sends the whole list
    pg.check("input[name=mode][value=points]")
    r = pg.locator("#view").bounding_box()
    with pg.expect_response(lambda r: r.url.endswith("/segment")) as seg:
        pg.mouse.click(r["x"] + 200.5, r["y"] + 250.5)
    first = json.loads(seg.value.request.post_data)
    with pg.expect_response(lambda r: r.url.endswith("/segment")) as seg:
        pg.keyboard.down("Shift")
        pg.mouse.click(r["x"] + 40.5, r["y"] + 40.5)
        pg.keyboard.up("Shift")
    second = json.loads(seg.value.request.post_data)
    assert first["labels"] == [1] and second["labels"] == [1, 0] and second["slice"] == 2 and "box" not in second
    assert np.abs(np.subtract(second["points"], [[200.5, 250.5], [40.5, 40.5]])).max() <= 1, second["points"]
    _wait_ready(pg, "mask:")
    want_pts = decode_png(base64.b64decode(seg.value.json()["mask_png"])) > 0
    yy, xx = np.mgrid[:512, :512]
    dots = np.zeros_like(want_pts)
    for x, y in second["points"]:
        dots |= (xx - x) ** 2 + (yy - y) ** 2 <= 36  # the drawn dots (radius 4, antialiased)
    for _ in range(50):  # the mask PNG decodes asynchronously after the status line says done
        got = _overlay(_canvas(pg))
        if np.array_equal(got[~dots], want_pts[~dots]):
            break
        pg.wait_for_timeout(100)
    np.testing.assert_array_equal(got[~dots], want_pts[~dots])
    pg.screenshot(path=str(artefacts / "06_points.png"))

    assert [f for f in pg.failed if not f.endswith("/pacs")] == [], pg.failed  # GET /pacs: 404, no PACS here
    assert pg.locator("#pacsbar").is_hidden()
    # the token went with every request but the page itself; every state change said it is the viewer
    api = [r for r in pg.sent if r[1] != "/"]
    assert {r[1].split("/")[-1] for r in api} >= {"images", "display.png", "segment", "propagate"}
    assert all(r[2] == f"Bearer {TOKEN}" for r in api), api
    assert all(r[3] == "viewer" for r in api if r[0] != "GET"), api
    print(f"mask {res['area_px']} px, propagated {vol['voxels']} voxels on {len(masks)} slices; artefacts in {artefacts}")


def test_viewer_without_the_token_or_with_a_bad_file_says_why_in_one_line(server, page, tmp_path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is no image")
    page.goto(server + "/")  # no token: the page loads, the upload is refused
    with page.expect_response(lambda r: "/images?name=" in r.url) as up:
        page.set_input_files("#file", str(bad))
    assert up.value.status == 401 and up.value.request.headers.get("authorization") is None
    page.wait_for_function("() => document.getElementById('status').dataset.state === 'error'")
    msg = page.locator("#status").inner_text()
    assert msg.startswith("401: ") and "#token=" in msg and "\n" not in msg, msg

    page.goto(f"{server}/#token={TOKEN}")  # the token pasted into the same tab (a hash change, no reload)
    with page.expect_response(lambda r: "/images?name=" in r.url) as up:
        page.set_input_files("#file", str(bad))
    assert up.value.status == 400
    assert up.value.request.headers.get("content-type") == "application/octet-stream"
    page.wait_for_function("() => document.getElementById('status').dataset.state === 'error'")
    msg = page.locator("#status").inner_text()
    assert msg.startswith("400: ") and "notes.png" in msg and "\n" not in msg, msg
    assert page.locator("#propagate").is_hidden() and page.locator("#save").is_hidden()


def test_viewer_opens_a_series_from_the_pacs_and_stores_the_masks_back(pacs_server, page, artefacts, orthanc, shared_data) -> None:
    import pydicom

    from medfm.io import read_image

    folder = shared_data / "dicom_ct3slice_seg" / "ct"
    orthanc.upload(folder)
    ds = pydicom.dcmread(min(folder.glob("*.dcm")), stop_before_pixels=True)
    study, series = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
    pg = page
    pg.goto(f"{pacs_server}/#token={TOKEN}")
    pg.locator("#pacsbar").wait_for(state="visible")
    pg.fill("#pacsq", str(ds.PatientID))
    pg.click("#pacssearch")
    _wait_ready(pg, "found")
    pg.select_option("#studies", study)
    pg.wait_for_function(f"() => [...document.getElementById('series').options].some(o => o.value === '{series}')")
    pg.select_option("#series", series)
    with pg.expect_response(lambda r: r.url.endswith("/pacs/open")) as op:
        pg.click("#pacsopen")
    info = op.value.json()
    assert op.value.status == 200 and (info["depth"], info["study"], info["series"]) == (3, study, series)
    _wait_ready(pg, "512 x 512 x 3 slices")
    _wait_slice(pg, 1)
    assert pg.locator("#storebox").is_hidden()  # nothing to store yet
    pg.screenshot(path=str(artefacts / "11_opened_from_pacs.png"))

    with pg.expect_response(lambda r: r.url.endswith("/segment")):
        _drag(pg, LIVER_BOX)
    _wait_ready(pg, "mask:")
    with pg.expect_response(lambda r: r.url.endswith("/propagate")) as prop:
        pg.click("#propagate")
    masks = {int(k): decode_png(base64.b64decode(v)) > 0 for k, v in prop.value.json()["masks"].items()}
    _wait_ready(pg, "propagated:")
    pg.fill("#segname", "liver")
    with pg.expect_response(lambda r: "/pacs/store/" in r.url) as st:
        pg.click("#pacsstore")
    res = st.value.json()
    assert st.value.status == 200, res
    _wait_ready(pg, f'stored on the PACS: DICOM-SEG "liver", {res["frames"]} frames on {len(masks)} slices')
    pg.screenshot(path=str(artefacts / "12_stored_to_pacs.png"))

    # the SEG as Orthanc holds it: one frame per slice with a mask, on the CT instance of that slice
    found = orthanc.rest("POST", "/tools/find", {"Level": "Instance", "Query": {"SOPInstanceUID": res["seg_sop_instance_uid"]}})
    assert len(found) == 1
    try:
        with urllib.request.urlopen(f"{orthanc.url}/instances/{found[0]}/file", timeout=10) as r:
            seg = pydicom.dcmread(io.BytesIO(r.read()))
        uids = read_image(folder).meta["sop_instance_uids"]
        frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), 512, 512).astype(bool)
        got = {}
        for group, frame in zip(seg.PerFrameFunctionalGroupsSequence, frames, strict=True):
            got[uids.index(str(group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID))] = frame
        assert seg.SegmentSequence[0].SegmentLabel == "liver" and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series
        assert sorted(got) == sorted(k for k, m in masks.items() if m.any())
        for k, frame in got.items():
            np.testing.assert_array_equal(frame, masks[k])
    finally:
        orthanc.rest("DELETE", f"/instances/{found[0]}")
    assert not pg.failed, pg.failed
