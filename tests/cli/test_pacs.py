"""``medfm pacs`` and ``medfm segment --input dicomweb://... --store-to`` against a real Orthanc (tests/orthanc.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medfm.cli.main import main
from tests.orthanc import free_port


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture()
def ct(shared_data: Path) -> dict:
    folder = shared_data / "dicom_ct3slice_seg" / "ct"
    dss = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    return {"folder": folder, "study": str(dss[0].StudyInstanceUID), "series": str(dss[0].SeriesInstanceUID),
            "datasets": {str(d.SOPInstanceUID): d for d in dss}}


def _one_error_line(rc: int, err: str) -> str:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medfm: error:") and "Traceback" not in err, err
    return lines[0]


def test_pacs_store_search_retrieve_cli(orthanc, ct, tmp_path, capsys) -> None:
    orthanc.clear()
    web = orthanc.dicomweb_url.replace("http://", "dicomweb://")
    dimse = f"{orthanc.aet}@{orthanc.host}:{orthanc.dicom_port}"
    rc, out, err = _run(capsys, "pacs", "echo", dimse, "--json")
    assert rc == 0 and json.loads(out)["status"] == "success", err
    rc, out, err = _run(capsys, "pacs", "store", web, str(ct["folder"]), "--json")
    assert rc == 0 and json.loads(out)["stored"] == 3, err
    rc, out, err = _run(capsys, "pacs", "search", web, "--modality", "CT", "--json")
    assert rc == 0 and [r["StudyInstanceUID"] for r in json.loads(out)] == [ct["study"]], err
    for date, n in (("20030101-20031231", 1), ("20040101-", 0)):  # StudyDate 20030417: range matching on the PACS
        for addr in (web, dimse):
            rc, out, err = _run(capsys, "pacs", "search", addr, "--date", date, "--json")
            assert rc == 0 and len(json.loads(out)) == n, (addr, date, out, err)
    rc, out, err = _run(capsys, "pacs", "search", dimse, "--study", ct["study"])  # C-FIND, table
    assert rc == 0 and ct["series"] in out and "1 series" in out, err
    rc, out, err = _run(capsys, "pacs", "retrieve", f"{web}/studies/{ct['study']}/series/{ct['series']}",
                        "--out", str(tmp_path / "wado"), "--json")
    assert rc == 0 and json.loads(out)["files"] == 3, err
    rc, out, err = _run(capsys, "pacs", "retrieve", dimse, "--study", ct["study"], "--out", str(tmp_path / "cget"))
    assert rc == 0, err
    got = sorted((tmp_path / "cget" / ct["series"]).glob("*.dcm"))  # a whole study: one folder per series
    assert {p.stem for p in got} == set(ct["datasets"])
    for p in got:
        assert np.array_equal(pydicom.dcmread(p).pixel_array, ct["datasets"][p.stem].pixel_array)
    # --deid: only de-identified copies land in --out (PS3.15 basic profile, medfm.io.deid); pixels unchanged
    rc, out, err = _run(capsys, "pacs", "retrieve", f"{web}/studies/{ct['study']}/series/{ct['series']}",
                        "--out", str(tmp_path / "deid"), "--deid", "--json")
    assert rc == 0 and json.loads(out)["files"] == 3 and json.loads(out)["deid"]["n_files"] == 3, err
    src = next(iter(ct["datasets"].values()))
    anon = [pydicom.dcmread(p) for p in sorted((tmp_path / "deid").rglob("*.dcm"))]
    assert len(anon) == 3
    for ds in anon:
        assert str(ds.get("PatientName", "")) != str(src.PatientName) and str(ds.get("PatientID", "")) != str(src.PatientID)
        assert str(ds.SOPInstanceUID) not in ct["datasets"] and str(ds.StudyInstanceUID) != ct["study"]
    assert sorted(d.pixel_array.tobytes() for d in anon) == sorted(d.pixel_array.tobytes() for d in ct["datasets"].values())
    port = free_port()  # C-MOVE: the PACS sends the series to a storage SCP the command starts here
    orthanc.add_modality("MEDFMCLI", "MEDFMCLI", port)
    try:
        rc, out, err = _run(capsys, "pacs", "retrieve", dimse, "--study", ct["study"], "--series", ct["series"], "--via", "move",
                            "--move-aet", "MEDFMCLI", "--move-port", str(port), "--out", str(tmp_path / "cmove"), "--json")
    finally:
        orthanc.remove_modality("MEDFMCLI")
    assert rc == 0 and json.loads(out)["files"] == 3, err
    assert {p.stem for p in (tmp_path / "cmove").glob("*.dcm")} == set(ct["datasets"])
    # C-STORE from the CLI: the retrieved copies go back into an emptied PACS
    orthanc.clear()
    rc, out, err = _run(capsys, "pacs", "store", dimse, str(tmp_path / "cget"), "--json")
    assert rc == 0 and json.loads(out)["stored"] == 3 and len(orthanc.rest("GET", "/instances")) == 3, err
    # the same files again without --force: refused, nothing replaced
    rc, _, err = _run(capsys, "pacs", "retrieve", f"{web}/studies/{ct['study']}/series/{ct['series']}", "--out", str(tmp_path / "wado"))
    assert "exists" in _one_error_line(rc, err)


def test_pacs_cli_bad_inputs_exit_2(orthanc, ct, tmp_path, capsys) -> None:
    down = free_port()
    cases = [
        (["pacs", "search", f"dicomweb://127.0.0.1:{down}/dicom-web", "--timeout", "5"], "Connection refused"),
        (["pacs", "echo", f"ORTHANC@127.0.0.1:{down}", "--timeout", "5"], "cannot associate"),
        (["pacs", "search", "ftp://x/y"], "not a DIMSE address"),
        (["pacs", "retrieve", f"{orthanc.dicomweb_url}/studies/1.2.826.0.1.999", "--out", str(tmp_path / "u")], "not found"),
        (["pacs", "store", orthanc.dicomweb_url, str(tmp_path / "missing")], "no such file"),
        (["pacs", "store", orthanc.dicomweb_url, str(Path(__file__))], "not a DICOM file"),
    ]
    for argv, expect in cases:
        rc, _, err = _run(capsys, *argv)
        assert expect in _one_error_line(rc, err), (argv, err)
    assert not (tmp_path / "u").exists()


@pytest.mark.slow
def test_segment_from_dicomweb_stores_aligned_seg_and_sr(orthanc, ct, tmp_path, capsys) -> None:
    import highdicom as hd

    from medfm.io.dicom_sr import read_segment_volumes

    orthanc.clear()
    orthanc.upload(ct["folder"])
    web = orthanc.dicomweb_url.replace("http://", "dicomweb://")
    src = f"{web}/studies/{ct['study']}/series/{ct['series']}"
    rc, out, err = _run(capsys, "segment", "--model", "test/sam-tiny", "--input", src, "--box", "150", "150", "350", "350",
                        "--slice", "1", "--out", str(tmp_path / "out"), "--store-to", web, "--json")
    assert rc == 0, err
    row = json.loads(out)[0]
    assert row["input"] == src and row["stored_to"] == orthanc.dicomweb_url
    mask = np.asarray(__import__("medfm.io", fromlist=["read_nifti"]).read_nifti(row["mask"]).array[0]) > 0
    # read back from Orthanc: the study now holds CT + SEG + SR
    series = {s["Modality"]: s["SeriesInstanceUID"] for s in
              json.loads(_run(capsys, "pacs", "search", web, "--study", ct["study"], "--json")[1])}
    assert set(series) == {"CT", "SEG", "SR"}
    back = tmp_path / "back"
    for mod in ("SEG", "SR"):
        rc, _, err = _run(capsys, "pacs", "retrieve", f"{web}/studies/{ct['study']}/series/{series[mod]}", "--out", str(back / mod))
        assert rc == 0, err
    seg = hd.seg.segread(next((back / "SEG").glob("*.dcm")))
    ct_ds = ct["datasets"]
    assert {uid for _, _, uid in seg.get_source_image_uids()} == set(ct_ds)
    assert seg.FrameOfReferenceUID == next(iter(ct_ds.values())).FrameOfReferenceUID
    # slice by slice: each frame names its CT instance, sits at that instance's position, and equals the mask there
    z_sorted = sorted(ct_ds, key=lambda u: float(ct_ds[u].ImagePositionPatient[2]))
    frames = {str(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID): f
              for f in seg.PerFrameFunctionalGroupsSequence}
    for k, uid in enumerate(z_sorted):
        if uid not in frames:  # an empty slice may be omitted from the SEG; then the mask is empty there too
            assert not mask[k].any()
            continue
        pos = [float(v) for v in frames[uid].PlanePositionSequence[0].ImagePositionPatient]
        assert np.allclose(pos, [float(v) for v in ct_ds[uid].ImagePositionPatient], atol=1e-3)
        assert (seg.Rows, seg.Columns) == (ct_ds[uid].Rows, ct_ds[uid].Columns)
        px = seg.get_pixels_by_source_instance(source_sop_instance_uids=[uid], segment_numbers=[1])
        assert np.array_equal(px[0, :, :, 0] > 0, mask[k])
    assert mask.any()
    # the SR references the SEG and reports the mask's volume
    sr = pydicom.dcmread(next((back / "SR").glob("*.dcm")))
    refs = {str(s.ReferencedSOPInstanceUID) for e in sr.CurrentRequestedProcedureEvidenceSequence
            for se in e.ReferencedSeriesSequence for s in se.ReferencedSOPSequence}
    assert str(seg.SOPInstanceUID) in refs and set(ct_ds) <= refs
    sp = ct_ds[z_sorted[0]].PixelSpacing
    thick = abs(float(ct_ds[z_sorted[1]].ImagePositionPatient[2]) - float(ct_ds[z_sorted[0]].ImagePositionPatient[2]))
    (vol,) = read_segment_volumes(next((back / "SR").glob("*.dcm"))).values()
    assert vol == pytest.approx(mask.sum() * float(sp[0]) * float(sp[1]) * thick, rel=1e-3)


def test_segment_from_dicomweb_bad_inputs_store_nothing(orthanc, ct, tmp_path, capsys) -> None:
    from pydicom.data import get_testdata_file

    orthanc.clear()
    sr = pydicom.dcmread(get_testdata_file("test-SR.dcm"))  # a study without pixel data
    orthanc.upload(get_testdata_file("test-SR.dcm"))
    web = orthanc.dicomweb_url.replace("http://", "dicomweb://")
    base = ["segment", "--model", "test/sam-tiny", "--box", "1", "1", "5", "5", "--store-to", web]
    cases = [
        (f"{web}/studies/{sr.StudyInstanceUID}/series/{sr.SeriesInstanceUID}", "dicomweb://"),
        (f"{web}/studies/1.2.826.0.1.999/series/1.2.826.0.1.998", "not found"),
        (f"dicomweb://127.0.0.1:{free_port()}/dicom-web/studies/1.2/series/1.3", "Connection refused"),
        (f"{web}/studies/1.2.826.0.1.999", "give one series"),
    ]
    for i, (src, expect) in enumerate(cases):
        rc, _, err = _run(capsys, *base, "--input", src, "--out", str(tmp_path / f"o{i}"))
        line = _one_error_line(rc, err)
        assert expect in line and "medfm_pacs_" not in line, (src, line)
    assert len(orthanc.rest("GET", "/instances")) == 1  # only the SR we put there: nothing half-stored


@pytest.mark.slow
def test_embed_a_study_from_dicomweb(orthanc, ct, tmp_path, capsys) -> None:
    from pydicom.data import get_testdata_file

    orthanc.clear()
    orthanc.upload(ct["folder"])
    orthanc.upload(get_testdata_file("test-SR.dcm"))  # another study: not part of the one embedded
    web = orthanc.dicomweb_url.replace("http://", "dicomweb://")
    src = f"{web}/studies/{ct['study']}"
    rc, out, err = _run(capsys, "embed", "--dataset", src, "--model", "random/i3resnet152-ct", "--no-cache",
                        "--out", str(tmp_path / "emb"), "--json")
    assert rc == 0, err
    manifest = json.loads(out)
    assert manifest["dataset"] == src and "medfm_pacs_" not in out
    assert json.loads((tmp_path / "emb" / "manifest.json").read_text())["dataset"] == src
    (split,) = manifest["splits"]  # the study's one CT series is the one sample
    emb = np.load(tmp_path / "emb" / manifest["splits"][split]["file"])
    assert emb.shape == (1, 2048) and np.isfinite(emb).all() and emb.std() > 0
