"""``medfm listen``: the Storage SCP + queue + journal, with real DICOM traffic (pynetdicom SCU) and Orthanc as destination."""

from __future__ import annotations

import copy
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

pynetdicom = pytest.importorskip("pynetdicom")

from pydicom.uid import generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import CTImageStorage

from medfm.errors import ConfigError
from medfm.serve.listen import (
    ListenConfig,
    Listener,
    PipelineConfig,
    load_pipeline_config,
    series_key,
)
from tests.orthanc import free_port


@pytest.fixture
def ct(shared_data: Path) -> Path:
    """The shared 3-slice CT series (skips without the data folder)."""
    return shared_data / "dicom_ct3slice_seg" / "ct"


PIPE = PipelineConfig(model="test/sam-tiny", box_fraction=(0.3, 0.3, 0.7, 0.7))
ROOT = Path(__file__).resolve().parents[2]


def _series(ct: Path, n: int, size: int = 128) -> list[list[pydicom.Dataset]]:
    """n distinct copies of the shared 3-slice CT (new study / series / instance UIDs), cropped to size x size."""
    src = [pydicom.dcmread(p) for p in sorted(ct.glob("*.dcm"))]
    out = []
    for i in range(n):
        study, series, frame = generate_uid(), generate_uid(), generate_uid()
        items = []
        for ds in src:
            d = copy.deepcopy(ds)
            arr = ds.pixel_array[:size, :size].copy()
            d.PixelData, d.Rows, d.Columns = arr.tobytes(), size, size
            d.StudyInstanceUID, d.SeriesInstanceUID, d.FrameOfReferenceUID = study, series, frame
            d.SOPInstanceUID = generate_uid()
            d.file_meta.MediaStorageSOPInstanceUID = d.SOPInstanceUID
            d.PatientName, d.PatientID = f"DOE^JANE{i}", f"PID-SECRET-{i}"
            items.append(d)
        out.append(items)
    return out


def _send(port: int, datasets: list, release: bool = True) -> list[int]:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDFM")
    assert assoc.is_established
    statuses = [int(assoc.send_c_store(ds).Status) for ds in datasets]
    if release:
        assoc.release()
    else:
        assoc.abort()
    return statuses


class _Sink:
    """A pynetdicom Storage SCP collecting what the listener sends (destination when Orthanc is not needed)."""

    def __init__(self) -> None:
        self.received: list[pydicom.Dataset] = []
        ae = AE(ae_title="SINK")
        ae.supported_contexts = AllStoragePresentationContexts
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)])
        self.port = self.server.server_address[1]

    def _store(self, event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        self.received.append(ds)
        return 0

    def stop(self) -> None:
        self.server.shutdown()


def _listener(tmp_path: Path, **kw) -> Listener:
    cfg = ListenConfig(ae_title="MEDFM", port=0, store_dir=tmp_path / "store", pipeline=PIPE, **kw)
    return Listener(cfg).start()


@pytest.mark.slow
def test_five_series_at_once_results_in_orthanc(ct: Path, tmp_path: Path, orthanc) -> None:
    """5 series sent concurrently (5 SCU threads): each processed once, SEG + SR of each arrive in Orthanc."""
    listener = _listener(tmp_path, destination=f"{orthanc.aet}@{orthanc.host}:{orthanc.dicom_port}", quiet_seconds=30)
    try:
        series = _series(ct, 5)
        results: dict[int, list[int]] = {}
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, _send(listener.port, series[i])))
                   for i in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(s == [0, 0, 0] for s in results.values()), results
        assert listener.wait_idle(240)
    finally:
        listener.stop()
    done = [e for e in listener.journal.events if e["event"] == "done"]
    assert sorted(e["series"] for e in done) == sorted(series_key(s[0].SeriesInstanceUID) for s in series)
    for s in series:
        study = s[0].SeriesInstanceUID and s[0].StudyInstanceUID
        found = orthanc.rest("POST", "/tools/find", {"Level": "Instance", "Query": {"StudyInstanceUID": study},
                                                      "Expand": True})
        mods = sorted(i["MainDicomTags"].get("SOPClassUID", "") or "" for i in found)
        tags = [orthanc.rest("GET", f"/instances/{i['ID']}/simplified-tags") for i in found]
        kinds = sorted(t["Modality"] for t in tags if t["Modality"] in ("SEG", "SR"))
        assert kinds == ["SEG", "SR"], (study, mods)
        seg = next(t for t in tags if t["Modality"] == "SEG")
        refs = {r["ReferencedSOPInstanceUID"] for r in seg["ReferencedSeriesSequence"][0]["ReferencedInstanceSequence"]}
        assert refs == {d.SOPInstanceUID for d in s}


def test_bad_input_refused_and_no_pixel_study_fails_cleanly(ct: Path, tmp_path: Path, caplog, monkeypatch) -> None:
    """Truncated pixel data / missing UIDs -> DICOM failure status, nothing stored; no pixel data -> failed job, listener goes on."""
    caplog.set_level(logging.INFO, logger="medfm.listen")
    sink = _Sink()
    listener = _listener(tmp_path, destination=f"SINK@127.0.0.1:{sink.port}", quiet_seconds=30)
    try:
        (good,) = _series(ct, 1, size=64)
        trunc = copy.deepcopy(good[0])
        trunc.SOPInstanceUID = generate_uid()
        trunc.PixelData = good[0].PixelData[:100]
        no_uid = copy.deepcopy(good[1])
        del no_uid.SeriesInstanceUID
        assert _send(listener.port, [trunc, no_uid]) == [0xA900, 0xA900]
        # a non-DICOM payload: valid file meta, then text; pynetdicom sends the file's bytes as they are
        junk = tmp_path / "junk.dcm"
        with junk.open("wb") as f:
            f.write(b"\0" * 128 + b"DICM")
            pydicom.filewriter.write_file_meta_info(f, good[2].file_meta, enforce_standard=True)
            f.write(b"this is a text file, not a DICOM data set\n" * 40)
        monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", True)
        (status,) = _send(listener.port, [junk])
        assert status in (0xC210, 0xA900)
        monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", False)
        assert not any(listener.store.joinpath("incoming").rglob("*.dcm"))
        # a study without pixel data (headers only): stored, then the job fails with a reason
        empty = _series(ct, 1, size=64)[0]
        for d in empty:
            del d.PixelData
        assert _send(listener.port, empty) == [0, 0, 0]
        assert listener.wait_idle(60)
        # the listener is still up: a good series is processed afterwards
        assert _send(listener.port, good) == [0, 0, 0]
        assert listener.wait_idle(120)
    finally:
        listener.stop()
        sink.stop()
    states = {e["series"]: e for e in listener.journal.events if e["event"] in ("done", "failed")}
    bad = states[series_key(empty[0].SeriesInstanceUID)]
    assert bad["event"] == "failed" and "pixel" in bad["reason"].lower()
    assert states[series_key(good[0].SeriesInstanceUID)]["event"] == "done"
    assert sorted(d.Modality for d in sink.received) == ["SEG", "SR"]
    text = caplog.text + (tmp_path / "store" / "journal.jsonl").read_text()
    for d in good + empty:
        assert str(d.PatientName) not in text and str(d.PatientID) not in text
        assert str(d.SeriesInstanceUID) not in text and str(d.StudyInstanceUID) not in text


def test_deid_option_stores_only_deidentified_data(ct: Path, tmp_path: Path) -> None:
    sink = _Sink()
    listener = _listener(tmp_path, destination=f"SINK@127.0.0.1:{sink.port}", deid=True, quiet_seconds=30)
    try:
        (s,) = _series(ct, 1, size=64)
        assert _send(listener.port, s) == [0, 0, 0]
        assert listener.wait_idle(120)
    finally:
        listener.stop()
        sink.stop()
    stored = [pydicom.dcmread(p) for p in (tmp_path / "store" / "incoming").rglob("*.dcm")]
    audit = [json.loads(x) for x in (tmp_path / "store" / "deid_audit.jsonl").read_text().splitlines()]
    assert len(audit) == 3 and all("PatientName" in a["replaced"] for a in audit)
    assert "SECRET" not in (tmp_path / "store" / "deid_audit.jsonl").read_text()
    assert len(stored) == 3 and len({d.SeriesInstanceUID for d in stored}) == 1
    for d in stored:
        assert d.PatientIdentityRemoved == "YES" and "SECRET" not in str(d.PatientID)
        assert d.StudyInstanceUID != s[0].StudyInstanceUID
    by_pos = {tuple(d.ImagePositionPatient): d.PixelData for d in s}
    assert all(by_pos[tuple(d.ImagePositionPatient)] == d.PixelData for d in stored)
    seg = next(d for d in sink.received if d.Modality == "SEG")
    assert seg.StudyInstanceUID == stored[0].StudyInstanceUID and "SECRET" not in str(seg.PatientID)
    # restarted on the same store, the same series maps to the same pseudonymous UIDs (the seed is kept)
    again = _listener(tmp_path, deid=True, quiet_seconds=30)
    try:
        assert _send(again.port, s[:1]) == [0]
    finally:
        again.stop()
    assert len(list((tmp_path / "store" / "incoming").iterdir())) == 1
    assert len(list((tmp_path / "store" / "incoming").rglob("*.dcm"))) == 3


def test_quiet_period_completes_a_series(ct: Path, tmp_path: Path) -> None:
    listener = _listener(tmp_path, quiet_seconds=1.0, complete_on_release=False)
    try:
        (s,) = _series(ct, 1, size=64)
        assert _send(listener.port, s) == [0, 0, 0]
        time.sleep(0.3)
        assert listener.journal.state.get(series_key(s[0].SeriesInstanceUID)) is None  # not yet: still quiet
        assert listener.wait_idle(120)
    finally:
        listener.stop()
    assert listener.journal.state[series_key(s[0].SeriesInstanceUID)] == "done"
    assert (tmp_path / "store" / "results" / series_key(s[0].SeriesInstanceUID) / "seg.dcm").is_file()


def test_pipeline_config_checked(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("task: segment\nmodel: test/sam-tiny\nbox_fraction: [0.2, 0.2, 0.8, 0.8]\n")
    assert load_pipeline_config(p).box_fraction == (0.2, 0.2, 0.8, 0.8)
    p.write_text("task: segment\nmodel: test/sam-tiny\nthreshold: 3\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_pipeline_config(p)
    p.write_text("task: classify\nmodel: x\n")
    with pytest.raises(ConfigError, match="not supported"):
        load_pipeline_config(p)
    p.write_text("model: test/sam-tiny\nbox_fraction: [0.8, 0.2, 0.2, 0.9]\n")
    with pytest.raises(ConfigError, match="box_fraction"):
        load_pipeline_config(p)


def test_shipped_example_config_loads() -> None:
    cfg = load_pipeline_config(ROOT / "src" / "medfm" / "serve" / "listen_segment.yaml")
    assert cfg.task == "segment" and cfg.model


@pytest.mark.slow
def test_killed_mid_series_then_restarted_processes_each_series_once(ct: Path, tmp_path: Path) -> None:
    """A subprocess listener is killed (SIGKILL, by PID) in the middle of series B; after a restart and a
    re-send, A (finished before the kill) is not run again and B is run once, with all its instances."""
    sink = _Sink()
    port = free_port()
    cfg = tmp_path / "pipe.yaml"
    cfg.write_text("task: segment\nmodel: test/sam-tiny\nbox_fraction: [0.3, 0.3, 0.7, 0.7]\n")
    store = tmp_path / "store"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDFM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    argv = [sys.executable, "-c", "from medfm.cli.main import run; run()", "listen", "--aet", "MEDFM", "--port", str(port), "--config",
            str(cfg), "--store-dir", str(store), "--destination", f"SINK@127.0.0.1:{sink.port}", "--quiet", "300"]
    journal = store / "journal.jsonl"

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            try:
                ae = AE(ae_title="PROBE")
                ae.add_requested_context("1.2.840.10008.1.1")
                a = ae.associate("127.0.0.1", port, ae_title="MEDFM")
                if a.is_established:
                    a.release()
                    return proc
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.5)
        raise AssertionError("listener did not start")

    def events() -> list[dict]:
        return [json.loads(x) for x in journal.read_text().splitlines()] if journal.exists() else []

    def wait_done(key: str, timeout: float = 180) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(e["series"] == key and e["event"] in ("done", "failed") for e in events()):
                return
            time.sleep(0.3)
        raise AssertionError(f"series {key} not processed: {events()}")

    a, b = _series(ct, 2, size=64)
    ka, kb = series_key(a[0].SeriesInstanceUID), series_key(b[0].SeriesInstanceUID)
    proc = start()
    try:
        assert _send(port, a) == [0, 0, 0]
        wait_done(ka)
        # B: two of three instances acknowledged, then the listener dies before the series completes
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", port, ae_title="MEDFM")
        assert [int(assoc.send_c_store(d).Status) for d in b[:2]] == [0, 0]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        assoc.abort()
        assert len(list((store / "incoming" / kb).glob("*.dcm"))) == 2  # acknowledged = on disk
        proc = start()
        assert _send(port, b) == [0, 0, 0]  # the sender re-sends the whole series
        wait_done(kb)
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        sink.stop()
    done = [e["series"] for e in events() if e["event"] == "done"]
    assert sorted(done) == sorted([ka, kb])  # each exactly once
    segs = [d for d in sink.received if d.Modality == "SEG"]
    assert len(segs) == 2
    seg_b = next(d for d in segs if d.ReferencedSeriesSequence[0].SeriesInstanceUID == b[0].SeriesInstanceUID)
    refs = {i.ReferencedSOPInstanceUID for i in seg_b.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert refs == {d.SOPInstanceUID for d in b}  # B processed with all three instances
    assert np.array_equal(len(list((store / "incoming" / kb).glob("*.dcm"))), 3)


@pytest.mark.slow
def test_trained_model_pipeline(ct: Path, tmp_path: Path) -> None:
    """The pipeline with a `medfm train-seg` folder (a tiny 3D UNet, 2 steps): the series' mask is on its grid."""
    from medfm.cli.main import main
    from medfm.io import Image, write_nifti

    rng = np.random.default_rng(0)
    for sub in ("imagesTr", "labelsTr"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for i in range(6):
        lab = np.zeros((8, 16, 16), np.uint8)
        lab[2:6, 4:12, 4:12] = 1
        img = rng.normal(0, 0.3, lab.shape).astype(np.float32) + lab
        write_nifti(Image(img[None], (1.0, 1.0, 1.0)), tmp_path / "data" / "imagesTr" / f"c{i}.nii.gz")
        write_nifti(Image(lab[None], (1.0, 1.0, 1.0)), tmp_path / "data" / "labelsTr" / f"c{i}.nii.gz")
    model = tmp_path / "model"
    assert main(["train-seg", "--folder", str(tmp_path / "data"), "--arch", "unet3d", "--max-steps", "2", "--patch",
                 "8,8,8", "--channels", "4,8", "--batch-size", "1", "--samples", "1", "--n-boot", "20",
                 "--no-select-inference", "--out", str(model)]) == 0
    cfg = ListenConfig(ae_title="MEDFM", port=0, store_dir=tmp_path / "store", quiet_seconds=30,
                       pipeline=PipelineConfig(model=str(model)))
    listener = Listener(cfg).start()
    try:
        (s,) = _series(ct, 1, size=32)
        assert _send(listener.port, s) == [0, 0, 0]
        assert listener.wait_idle(120)
    finally:
        listener.stop()
    (ev,) = [e for e in listener.journal.events if e["event"] in ("done", "failed")]
    assert ev["event"] == "done" and ev["model"] == "trained:model", ev
    if ev.get("files"):  # a 2-step model may find nothing; when it finds something, the SEG is on the CT grid
        import highdicom as hd

        seg = hd.seg.segread(tmp_path / "store" / ev["files"][0])
        assert {u for _, _, u in seg.get_source_image_uids()} == {d.SOPInstanceUID for d in s}
    else:
        assert ev["note"].startswith("empty mask")


def test_results_computed_before_a_crash_are_sent_not_recomputed(ct: Path, tmp_path: Path) -> None:
    """Journal ends at 'processed' (killed before sending): the restarted listener sends the same SEG / SR."""
    listener = _listener(tmp_path, quiet_seconds=30)
    try:
        (s,) = _series(ct, 1, size=64)
        assert _send(listener.port, s) == [0, 0, 0]
        assert listener.wait_idle(120)
    finally:
        listener.stop()
    journal = tmp_path / "store" / "journal.jsonl"
    lines = journal.read_text().splitlines()
    assert json.loads(lines[-1])["event"] == "done" and json.loads(lines[-2])["event"] == "processed"
    journal.write_text("\n".join(lines[:-1]) + "\n")  # as if killed between computing and sending
    files = [tmp_path / "store" / f for f in json.loads(lines[-2])["files"]]
    uids = {pydicom.dcmread(f).SOPInstanceUID for f in files}

    class _NoRun:
        def run(self, *a):
            raise AssertionError("the pipeline ran again")

    sink = _Sink()
    cfg = ListenConfig(ae_title="MEDFM", port=0, store_dir=tmp_path / "store", pipeline=PIPE, quiet_seconds=30,
                       destination=f"SINK@127.0.0.1:{sink.port}")
    again = Listener(cfg, pipeline=_NoRun()).start()
    try:
        assert again.wait_idle(60)
    finally:
        again.stop()
        sink.stop()
    assert again.journal.state[series_key(s[0].SeriesInstanceUID)] == "done"
    assert {d.SOPInstanceUID for d in sink.received} == uids


def test_cli_refusals_are_one_line(tmp_path: Path, capsys) -> None:
    import socket

    from medfm.cli.main import main

    bad = tmp_path / "p.yaml"
    bad.write_text("model: test/sam-tiny\nthreshold: 0.5\n")
    assert main(["listen", "--config", str(bad), "--store-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown keys ['threshold']" in err[0]
    good = tmp_path / "g.yaml"
    good.write_text("model: test/sam-tiny\n")
    assert main(["listen", "--config", str(good), "--store-dir", str(tmp_path / "s"), "--destination", "nowhere"]) == 2
    assert "AET@HOST:PORT" in capsys.readouterr().err
    listener = _listener(tmp_path / "l")
    try:  # an association addressed to another AE title is rejected
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", listener.port, ae_title="OTHER")
        assert assoc.is_rejected
    finally:
        listener.stop()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["listen", "--config", str(good), "--store-dir", str(tmp_path / "s"), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "cannot listen on 127.0.0.1" in err[-1] and "Traceback" not in "".join(err)
