"""``medfm train-cls`` / ``medfm classify`` on real BreastMNIST with the tiny test encoder, and a PACS round trip (Orthanc)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medfm.cli.main import main

ENCODER = "test/vit-tiny-timm"


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _one_error_line(rc: int, err: str) -> str:
    assert rc == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("medfm: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def trained(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 20-shot head on BreastMNIST, plus the cached embeddings `medfm embed` writes for every split."""
    import io
    from contextlib import redirect_stdout

    root = tmp_path_factory.mktemp("cls")
    args = ["train-cls", "--model", ENCODER, "--dataset", "breastmnist", "--data-dir", str(shared_data), "--shots", "20",
            "--seed", "1", "--out", str(root / "head"), "--json"]
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(args) == 0
    doc = json.loads(buf.getvalue())
    with redirect_stdout(io.StringIO()):
        assert main(["embed", "--dataset", "breastmnist", "--model", ENCODER, "--data-dir", str(shared_data),
                     "--out", str(root / "emb")]) == 0
    return {"dir": root / "head", "doc": doc, "emb": root / "emb", "args": args, "data": shared_data}


def _write_pngs(shared_data: Path, split: str, idx: list[int], folder: Path) -> None:
    from PIL import Image

    from medfm.data import load_dataset

    folder.mkdir(parents=True, exist_ok=True)
    images = load_dataset("breastmnist", shared_data).split(split).images()
    for i in idx:
        Image.fromarray(images[i][0]).save(folder / f"{split}_{i:03d}.png")


def test_train_cls_saves_head_with_metrics_and_provenance(trained, capsys) -> None:
    from medfm.tasks.classification.head import LinearHead
    from medfm.tasks.classification.linear_probe import LinearProbeConfig

    doc = trained["doc"]
    assert (trained["dir"] / "classifier.json").is_file() and (trained["dir"] / "head.safetensors").is_file()
    assert doc["encoder"]["id"] == ENCODER and len(doc["encoder"]["weights_hash"]) == 64
    assert doc["class_names"] == ["malignant", "normal, benign"] and doc["kind"] == "binary"
    assert doc["hyperparameters"]["C"] in LinearProbeConfig().c_grid and doc["hyperparameters"]["selected_on"] == "val"
    auc = doc["metrics"]["test"]["auroc"]
    assert auc["ci_low"] <= auc["value"] <= auc["ci_high"]
    prov = doc["provenance"]
    assert prov["seed"] == 1 and prov["n"]["train"] == 40 and prov["config"]["shots"] == 20
    assert set(prov["data_checksums"]) == {"train", "val", "test"} and "numpy" in prov["versions"]
    # the same provenance block as every bench Record: the weights' hash and source, the commit
    assert prov["weights_hash"] == doc["encoder"]["weights_hash"] and prov["weights_source"]
    assert {"git_commit", "git_dirty", "data_checksum"} <= set(prov)
    # the saved head reproduces the recorded test AUROC on the cached test embeddings
    from medfm.metrics.classification import point_metric

    head = LinearHead.load(trained["dir"])
    p = head.predict_proba(np.load(trained["emb"] / "test.npy"))
    assert point_metric("auroc", np.load(trained["emb"] / "test_labels.npy").ravel(), p, "binary") == pytest.approx(auc["value"])
    # an existing head is not overwritten without --force
    rc, _, err = _run(capsys, *[a for a in trained["args"] if a != "--json"])
    assert "not empty" in _one_error_line(rc, err)


def test_classify_pngs_equals_head_on_cached_embeddings(trained, tmp_path, capsys) -> None:
    from medfm.cli.classify import load_case_arrays
    from medfm.models import create_model
    from medfm.models.embed import embed_arrays
    from medfm.tasks.classification.head import LinearHead
    from medfm.tasks.segmentation.pipeline import list_inputs

    idx = [0, 3, 7, 42, 100, 155]
    _write_pngs(trained["data"], "test", idx, tmp_path / "png")
    rc, out, err = _run(capsys, "classify", "--model", str(trained["dir"]), "--input", str(tmp_path / "png"),
                        "--out", str(tmp_path / "o"), "--json")
    assert rc == 0, err
    rows = json.loads(out)
    head = LinearHead.load(trained["dir"])
    want = head.predict_proba(np.load(trained["emb"] / "test.npy")[idx])
    got = np.array([[r["probabilities"][n] for n in head.class_names] for r in rows])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert [r["predicted"] for r in rows] == [head.class_names[k] for k in want.argmax(1)]
    with open(tmp_path / "o" / "predictions.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [t["case"] for t in table] == [f"test_{i:03d}" for i in idx]
    np.testing.assert_allclose([float(t["p_malignant"]) for t in table], want[:, 0], rtol=1e-5)
    # a training image: the embedding at inference equals the cached training embedding (same preprocessing)
    _write_pngs(trained["data"], "train", [5, 11], tmp_path / "tr")
    adapter = create_model(ENCODER)
    emb = embed_arrays(adapter, load_case_arrays(list_inputs(tmp_path / "tr"), 2, ENCODER), progress=False)
    np.testing.assert_allclose(emb, np.load(trained["emb"] / "train.npy")[[5, 11]], rtol=1e-5, atol=1e-6)


def test_classify_bad_inputs_exit_2(trained, shared_data, tmp_path, capsys) -> None:
    import shutil

    _write_pngs(shared_data, "test", [0], tmp_path / "png")
    png = str(tmp_path / "png" / "test_000.png")
    # a folder that is not a trained classifier
    rc, _, err = _run(capsys, "classify", "--model", str(tmp_path / "png"), "--input", png)
    assert "not a trained classifier" in _one_error_line(rc, err)
    # a 3D CT series with a 2D encoder
    ct = shared_data / "dicom_ct3slice_seg" / "ct"
    rc, _, err = _run(capsys, "classify", "--model", str(trained["dir"]), "--input", str(ct))
    assert "3D image" in _one_error_line(rc, err)
    # the encoder the head names is missing
    bad = tmp_path / "bad"
    shutil.copytree(trained["dir"], bad)
    doc = json.loads((bad / "classifier.json").read_text())
    doc["encoder"]["model_arg"] = doc["encoder"]["id"] = "test/no-such-encoder"
    (bad / "classifier.json").write_text(json.dumps(doc))
    rc, _, err = _run(capsys, "classify", "--model", str(bad), "--input", png)
    assert "no-such-encoder" in _one_error_line(rc, err)
    # a changed head file is refused; a PNG cannot be stored as an SR and nothing is written
    (bad / "head.safetensors").write_bytes(b"x" + (trained["dir"] / "head.safetensors").read_bytes()[1:])
    rc, _, err = _run(capsys, "classify", "--model", str(bad), "--input", png)
    assert "checksum" in _one_error_line(rc, err)
    rc, _, err = _run(capsys, "classify", "--model", str(trained["dir"]), "--input", png, "--out", str(tmp_path / "o"),
                      "--store-to", "dicomweb://127.0.0.1:9/dicom-web")
    assert "not DICOM" in _one_error_line(rc, err) and not (tmp_path / "o").exists()
    rc, _, err = _run(capsys, "train-cls", "--model", ENCODER, "--dataset", "breastmnist", "--data-dir", str(shared_data),
                      "--shots", "0", "--out", str(tmp_path / "h"))
    assert "--shots" in _one_error_line(rc, err) and not (tmp_path / "h").exists()


def _dicom_from_png_array(image: np.ndarray, path: Path) -> pydicom.Dataset:
    """A one-frame secondary-capture DICOM of a BreastMNIST image (8-bit, no rescale)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        ExplicitVRLittleEndian,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MEDFM-CLS", "Test^Cls", "US", 1, 1
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "000000", "1", ""
    ds.ReferringPhysicianName, ds.PatientBirthDate, ds.PatientSex = "", "", ""
    ds.SamplesPerPixel, ds.PhotometricInterpretation, (ds.Rows, ds.Columns) = 1, "MONOCHROME2", image.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds


@pytest.mark.slow
def test_classify_from_dicomweb_stores_probability_sr(orthanc, trained, tmp_path, capsys) -> None:
    from medfm.data import load_dataset
    from medfm.io.dicom_sr import read_classification_sr
    from medfm.tasks.classification.head import LinearHead

    k = 42
    image = load_dataset("breastmnist", trained["data"]).split("test").images()[k][0]
    src = _dicom_from_png_array(image, tmp_path / "dcm" / "img.dcm")
    orthanc.upload(tmp_path / "dcm" / "img.dcm")
    web = orthanc.dicomweb_url.replace("http://", "dicomweb://")
    addr = f"{web}/studies/{src.StudyInstanceUID}/series/{src.SeriesInstanceUID}"
    rc, out, err = _run(capsys, "classify", "--model", str(trained["dir"]), "--input", addr, "--store-to", web, "--json")
    assert rc == 0, err
    (row,) = json.loads(out)  # no --out: the SR was written to a temp folder, sent, and removed
    assert "dicom_sr" not in row
    head = LinearHead.load(trained["dir"])
    want = head.predict_proba(np.load(trained["emb"] / "test.npy")[[k]])[0]
    assert row["input"] == addr and row["stored_to"] == orthanc.dicomweb_url
    np.testing.assert_allclose([row["probabilities"][n] for n in head.class_names], want, atol=1e-6)
    # read back from Orthanc: the study now holds the image series and an SR that references it
    series = {s["Modality"]: s["SeriesInstanceUID"] for s in
              json.loads(_run(capsys, "pacs", "search", web, "--study", str(src.StudyInstanceUID), "--json")[1])}
    assert set(series) == {"US", "SR"} and series["US"] == str(src.SeriesInstanceUID)
    rc, _, err = _run(capsys, "pacs", "retrieve", f"{web}/studies/{src.StudyInstanceUID}/series/{series['SR']}",
                      "--out", str(tmp_path / "back"))
    assert rc == 0, err
    back = read_classification_sr(next((tmp_path / "back").rglob("*.dcm")))
    assert back["source_series"] == [str(src.SeriesInstanceUID)] and back["source_instances"] == [str(src.SOPInstanceUID)]
    assert list(back["probabilities"]) == list(head.class_names)
    np.testing.assert_allclose(list(back["probabilities"].values()), want, atol=1e-6)
    # the same over DIMSE (C-STORE to the PACS's DICOM port): a second SR series in the study
    rc, out, err = _run(capsys, "classify", "--model", str(trained["dir"]), "--input", addr, "--json",
                        "--store-to", f"{orthanc.aet}@{orthanc.host}:{orthanc.dicom_port}")
    assert rc == 0, err
    again = json.loads(_run(capsys, "pacs", "search", web, "--study", str(src.StudyInstanceUID), "--json")[1])
    assert sorted(s["Modality"] for s in again) == ["SR", "SR", "US"]
