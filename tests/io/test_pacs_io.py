"""medfm.io.pacs against a real Orthanc (tests/orthanc.py): DICOMweb and DIMSE round trips, and refusals."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medfm.errors import InputError
from medfm.io import pacs
from tests.orthanc import free_port, orthanc_missing_reason, start_orthanc


@pytest.fixture()
def ct_folder(shared_data: Path) -> Path:
    return shared_data / "dicom_ct3slice_seg" / "ct"


@pytest.fixture()
def pacs_with_ct(orthanc, ct_folder):
    """Orthanc holding only the 3-slice CT series; returns (orthanc, study uid, series uid, {sop uid: pixels})."""
    orthanc.clear()
    orthanc.upload(ct_folder)
    dss = [pydicom.dcmread(p) for p in sorted(ct_folder.iterdir())]
    return orthanc, str(dss[0].StudyInstanceUID), str(dss[0].SeriesInstanceUID), {str(d.SOPInstanceUID): d.pixel_array for d in dss}


def _same_series(files: list[Path], pixels: dict) -> None:
    assert len(files) == len(pixels)
    for f in files:
        ds = pydicom.dcmread(f)
        assert f.name == f"{ds.SOPInstanceUID}.dcm"
        assert np.array_equal(ds.pixel_array, pixels[str(ds.SOPInstanceUID)])


def test_parse_addresses() -> None:
    loc = pacs.parse_dicomweb_url("dicomweb://127.0.0.1:8042/dicom-web/studies/1.2.3/series/4.5")
    assert (loc.base, loc.study, loc.series) == ("http://127.0.0.1:8042/dicom-web", "1.2.3", "4.5")
    assert pacs.parse_dicomweb_url("dicomwebs://pacs.example:443/wado/rs").base == "https://pacs.example:443/wado/rs"
    assert pacs.parse_dicomweb_url("http://h/dicom-web/studies/1.2").url == "http://h/dicom-web/studies/1.2"
    node = pacs.parse_dimse_address("ORTHANC@localhost:4242")
    assert (node.aet, node.host, node.port) == ("ORTHANC", "localhost", 4242)
    for bad in ("ftp://h/x", "dicomweb://h/dicom-web/studies/abc", "dicomweb://h/x/studies/1.2/series", "dicomweb://h:99999/x"):
        with pytest.raises(InputError):
            pacs.parse_dicomweb_url(bad)
    for bad in ("host", "AET@host:port", "A" * 17 + "@h:1"):
        with pytest.raises(InputError):
            pacs.parse_dimse_address(bad)


def test_dicomweb_store_search_retrieve(orthanc, ct_folder, tmp_path) -> None:
    orthanc.clear()
    web = pacs.DicomWeb(orthanc.dicomweb_url, timeout=20)
    dss = pacs.read_dicom_files([ct_folder])
    res = web.store(dss)
    assert res["stored"] == 3 and res["studies"] == [str(dss[0].StudyInstanceUID)]
    studies = web.search_studies({"PatientID": str(dss[0].PatientID)})
    assert [s["StudyInstanceUID"] for s in studies] == [str(dss[0].StudyInstanceUID)]
    assert studies[0]["ModalitiesInStudy"] == "CT" and studies[0]["NumberOfStudyRelatedInstances"] == "3"
    assert web.search_studies({"PatientID": "no-such-patient"}) == []
    series = web.search_series(str(dss[0].StudyInstanceUID), {"Modality": "CT"})
    assert [s["SeriesInstanceUID"] for s in series] == [str(dss[0].SeriesInstanceUID)]
    files = web.retrieve_series(str(dss[0].StudyInstanceUID), str(dss[0].SeriesInstanceUID), tmp_path / "got")
    _same_series(files, {str(d.SOPInstanceUID): d.pixel_array for d in dss})
    assert not [p for p in (tmp_path / "got").iterdir() if p.name.startswith(".")]  # staging folder gone


def test_dimse_echo_find_get_move_store(pacs_with_ct, tmp_path) -> None:
    o, study, series, pixels = pacs_with_ct
    node = pacs.DimseNode(o.host, o.dicom_port, o.aet)
    assert pacs.echo(node, timeout=10)["status"] == "success"
    assert [r["StudyInstanceUID"] for r in pacs.find(node, "STUDY", {"ModalitiesInStudy": "CT"})] == [study]
    assert [r["SeriesInstanceUID"] for r in pacs.find(node, "SERIES", study=study)] == [series]
    _same_series(pacs.get_series(node, study, series, tmp_path / "get", timeout=20), pixels)
    port = free_port()
    o.add_modality("MEDFMTEST", "MEDFMTEST", port)
    try:
        _same_series(pacs.move_series(node, study, series, tmp_path / "move", "MEDFMTEST", port, timeout=20), pixels)
    finally:
        o.remove_modality("MEDFMTEST")
    # C-MOVE to an AE title the PACS does not know: refused, nothing written
    with pytest.raises(pacs.PacsError, match="C-MOVE"):
        pacs.move_series(node, study, series, tmp_path / "nomove", "UNKNOWNAE", free_port(), timeout=20)
    assert not (tmp_path / "nomove").exists()
    o.clear()
    res = pacs.c_store(node, pacs.read_dicom_files([tmp_path / "get"]), timeout=20)
    assert res["stored"] == 3
    assert len(o.rest("GET", "/instances")) == 3


def test_pacs_down_is_one_clear_error_fast(tmp_path) -> None:
    port = free_port()  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(pacs.PacsError, match="Connection refused"):
        pacs.DicomWeb(f"dicomweb://127.0.0.1:{port}/dicom-web", timeout=5).search_studies()
    with pytest.raises(pacs.PacsError, match="cannot associate"):
        pacs.echo(pacs.DimseNode("127.0.0.1", port, "X"), timeout=5)
    with pytest.raises(pacs.PacsError):
        pacs.get_series(pacs.DimseNode("127.0.0.1", port, "X"), "1.2.3", "1.2.4", tmp_path / "none", timeout=5)
    assert time.monotonic() - t0 < 15
    assert not (tmp_path / "none").exists()


def test_unknown_series_stores_nothing(pacs_with_ct, tmp_path) -> None:
    o, study, _series, _ = pacs_with_ct
    web = pacs.DicomWeb(o.dicomweb_url, timeout=20)
    with pytest.raises(pacs.PacsError, match="not found"):
        web.retrieve_series(study, "1.2.826.0.1.999", tmp_path / "a")
    with pytest.raises(pacs.PacsError, match="not found"):
        web.retrieve_study("1.2.826.0.1.999", tmp_path / "b")
    node = pacs.DimseNode(o.host, o.dicom_port, o.aet)
    with pytest.raises(pacs.PacsError):
        pacs.get_series(node, "1.2.826.0.1.999", "1.2.826.0.1.998", tmp_path / "c", timeout=20)
    assert not any((tmp_path / n).exists() for n in "abc")


class _Always500(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(500)
        self.end_headers()
        self.wfile.write(b"boom")

    do_POST = do_GET

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server_500():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Always500)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"dicomweb://127.0.0.1:{srv.server_address[1]}/dicom-web"
    srv.shutdown()
    srv.server_close()


def test_http_500_is_one_clear_error(server_500, ct_folder, tmp_path) -> None:
    web = pacs.DicomWeb(server_500, timeout=5)
    with pytest.raises(pacs.PacsError, match="HTTP 500"):
        web.search_studies()
    with pytest.raises(pacs.PacsError, match="HTTP 500"):
        web.retrieve_series("1.2.3", "1.2.4", tmp_path / "x")
    with pytest.raises(pacs.PacsError, match="HTTP 500"):
        web.store(pacs.read_dicom_files([ct_folder]))
    assert not (tmp_path / "x").exists()


@pytest.fixture()
def silent_server():
    """A TCP port that accepts connections and never answers (a hung PACS)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(5)
    for c in conns:
        c.close()
    srv.close()


def test_a_pacs_that_never_answers_times_out(silent_server, tmp_path) -> None:
    t0 = time.monotonic()
    with pytest.raises(pacs.PacsError, match="no answer within the timeout"):
        pacs.DicomWeb(f"dicomweb://127.0.0.1:{silent_server}/dicom-web", timeout=1).search_studies()
    with pytest.raises(pacs.PacsError):
        pacs.echo(pacs.DimseNode("127.0.0.1", silent_server, "X"), timeout=1)
    with pytest.raises(pacs.PacsError):
        pacs.get_series(pacs.DimseNode("127.0.0.1", silent_server, "X"), "1.2.3", "1.2.4", tmp_path / "g", timeout=1)
    assert time.monotonic() - t0 < 20
    assert not (tmp_path / "g").exists()


def test_credentials_in_the_url_are_used_and_never_shown(ct_folder, tmp_path) -> None:
    if orthanc_missing_reason():
        pytest.skip(orthanc_missing_reason())
    o = start_orthanc(tmp_path / "orthanc_auth", extra_config={"AuthenticationEnabled": True,
                                                                "RegisteredUsers": {"alice": "s3cr3t-pw"}})
    try:
        host = f"127.0.0.1:{o.http_port}/dicom-web"
        with pytest.raises(pacs.PacsError, match="HTTP 401") as info:
            pacs.DicomWeb(f"dicomweb://alice:wrong-pw@{host}", timeout=10).search_studies()
        assert "wrong-pw" not in str(info.value) and "alice" not in str(info.value)
        web = pacs.DicomWeb(f"dicomweb://alice:s3cr3t-pw@{host}", timeout=10)
        assert web.store(pacs.read_dicom_files([ct_folder]))["stored"] == 3
        assert len(web.search_studies()) == 1 and "s3cr3t" not in web.base
    finally:
        o.stop()
