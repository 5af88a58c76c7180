"""User folder datasets made in tmp_path: labels.csv, image/mask pairs, DICOM series, bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image as PILImage

from medfm.data import load_dataset, verify
from medfm.errors import ConfigError, InputError


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(array.astype(np.uint8)).save(path)


def _labels_csv(root: Path, rows: list[list[str]], header: list[str]) -> None:
    with open(root / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def test_labels_csv_stratified_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        label = "tumour" if i % 3 == 0 else "normal"
        _png(tmp_path / "img" / f"{i:02d}.png", rng.integers(0, 255, (8, 10)))
        rows.append([f"img/{i:02d}.png", label])
    _labels_csv(tmp_path, rows, ["file", "label"])
    ds = load_dataset(tmp_path)
    assert ds.card.task == "classification" and ds.card.labels == ("normal", "tumour")
    assert ds.card.options["split"] == {"method": "fixed-seed, stratified by label", "seed": 0, "fractions": [0.7, 0.1, 0.2]}
    assert ds.counts() == {"train": 21, "val": 3, "test": 6}
    assert np.bincount(ds.split("test").labels).tolist() == [4, 2]  # class ratio kept
    s = ds.split("train")[0]
    assert s.image is not None and s.image.spatial_shape == (8, 10)
    assert s.label in (0, 1) and s.meta["label_value"] == ds.card.labels[s.label]
    assert load_dataset(tmp_path).split("test").ids == ds.split("test").ids
    assert load_dataset(str(tmp_path), seed=1).split("test").ids != ds.split("test").ids


def test_labels_csv_official_split(tmp_path: Path) -> None:
    for i in range(4):
        _png(tmp_path / f"{i}.png", np.full((4, 4), i * 20))
    _labels_csv(tmp_path, [["0.png", "1", "train"], ["1.png", "0", "train"], ["2.png", "0", "val"],
                           ["3.png", "1", "test"]], ["path", "label", "split"])
    ds = load_dataset(tmp_path)
    assert ds.counts() == {"train": 2, "val": 1, "test": 1}
    assert ds.split("train").labels.tolist() == [1, 0]
    assert ds.card.options["split"]["method"].startswith("official")


def test_png_image_mask_pairs(tmp_path: Path) -> None:
    for i in range(5):
        img = np.zeros((12, 16), np.uint8)
        img[2:6, 3:9] = 200
        _png(tmp_path / "images" / f"case{i}.png", img)
        _png(tmp_path / "masks" / f"case{i}_mask.png", (img > 0) * 255)
    ds = load_dataset(tmp_path)
    assert ds.card.task == "segmentation" and sum(ds.counts().values()) == 5
    s = ds.split("train")[0]
    assert s.mask is not None and s.mask.array.shape == (1, 12, 16)
    assert set(np.unique(s.mask.array).tolist()) == {0, 1}  # 0/255 masks become 0/1
    assert r"fixed-seed" in ds.card.options["split"]["method"]


def _nifti(path: Path, array: np.ndarray, zooms: tuple[float, float, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([*zooms, 1.0])), str(path))


def test_nifti_pairs_with_dataset_json(tmp_path: Path) -> None:
    for i in range(3):
        vol = np.zeros((6, 7, 8), np.float32)
        vol[1:4, 2:5, 3:6] = 100.0
        lab = (vol > 0).astype(np.uint8)
        lab[1, 2, 3] = 2
        _nifti(tmp_path / "imagesTr" / f"c{i}.nii.gz", vol, (1.0, 1.0, 2.0))
        _nifti(tmp_path / "labelsTr" / f"c{i}.nii.gz", lab, (1.0, 1.0, 2.0))
    (tmp_path / "dataset.json").write_text('{"labels": {"0": "background", "1": "organ", "2": "lesion"}}')
    ds = load_dataset(tmp_path)
    assert ds.card.labels == ("background", "organ", "lesion") and ds.card.ndim == 3
    s = ds.split("train")[0]
    assert s.image is not None and s.mask is not None
    assert s.image.ndim == 3 and s.mask.spatial_shape == s.image.spatial_shape
    assert sorted(s.image.spacing) == [1.0, 1.0, 2.0]
    assert set(np.unique(s.mask.array).tolist()) == {0, 1, 2}


def test_mask_geometry_mismatch_names_both_files(tmp_path: Path) -> None:
    _nifti(tmp_path / "imagesTr" / "a.nii.gz", np.zeros((6, 7, 8), np.float32), (1.0, 1.0, 1.0))
    _nifti(tmp_path / "labelsTr" / "a.nii.gz", np.zeros((6, 7, 8), np.uint8), (1.0, 1.0, 3.0))
    _nifti(tmp_path / "imagesTr" / "b.nii.gz", np.zeros((6, 7, 8), np.float32), (1.0, 1.0, 1.0))
    _nifti(tmp_path / "labelsTr" / "b.nii.gz", np.zeros((6, 7, 9), np.uint8), (1.0, 1.0, 1.0))
    ds = load_dataset(tmp_path)
    samples = {r.id: (split, i) for split in ds.splits for i, r in enumerate(ds.split(split).records)}
    for case, problem in (("a", "spacing"), ("b", "shape")):
        split, i = samples[case]
        with pytest.raises(InputError) as err:
            ds.split(split)[i]
        msg = str(err.value)
        assert str(tmp_path / "imagesTr" / f"{case}.nii.gz") in msg
        assert str(tmp_path / "labelsTr" / f"{case}.nii.gz") in msg and problem in msg
    assert verify(tmp_path)["status"] == "failed"


def test_missing_mask_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no images found"):
        load_dataset(tmp_path)
    _png(tmp_path / "images" / "x.png", np.zeros((4, 4)))
    (tmp_path / "masks").mkdir()
    with pytest.raises(InputError, match="has no mask"):
        load_dataset(tmp_path)
    with pytest.raises(InputError, match="not found"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(ConfigError, match="unknown option"):
        load_dataset(tmp_path, bogus=1)


def test_labels_csv_naming_a_missing_file(tmp_path: Path) -> None:
    _labels_csv(tmp_path, [["gone.png", "0"]], ["file", "label"])
    with pytest.raises(InputError, match="gone.png"):
        load_dataset(tmp_path)


def _dicom_series(folder: Path, n: int = 3) -> None:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True)
    series_uid = generate_uid()
    for k in range(n):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        pos = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + 2.0 * k]
        ds.SliceLocation = pos[2] + 2.0 * k
        ds.save_as(folder / f"slice{k}.dcm")


def test_folder_of_dicom_series(tmp_path: Path) -> None:
    for name in ("s1", "s2", "s3"):
        _dicom_series(tmp_path / "patients" / name)
    ds = load_dataset(tmp_path)
    assert sum(ds.counts().values()) == 3 and ds.card.ndim == 3
    s = ds.split("train")[0]
    assert s.image is not None and s.image.ndim == 3 and s.image.spatial_shape[0] == 3
    assert s.label is None and s.id.startswith("patients/")
    # a labels.csv may name series folders
    _labels_csv(tmp_path, [["patients/s1", "a"], ["patients/s2", "b"], ["patients/s3", "a"]], ["file", "label"])
    ds = load_dataset(tmp_path)
    assert ds.card.labels == ("a", "b") and sum(ds.counts().values()) == 3


def test_sample_reference_is_not_called_record() -> None:
    # results.Record is a row of results; a sample on disk before it is read is a SampleRef
    from medfm.data import dataset

    assert not hasattr(dataset, "Record")
    ref = dataset.SampleRef(id="a", image=Path("a.png"), mask=Path("a_mask.png"))
    assert ref.paths() == [Path("a.png"), Path("a_mask.png")]
