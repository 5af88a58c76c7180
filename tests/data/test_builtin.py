"""Built-in folder datasets on the real data: HC18, MSD hippocampus, CHASE_DB1, VQA-RAD."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from scipy.ndimage import binary_erosion

from medfm.data import load_dataset
from medfm.data.dataset import group_split, stratified_split


def _groups(ds, key: str) -> dict[str, set[str]]:  # noqa: ANN001
    return {name: {r.meta[key] for r in ds.split(name).records} for name in ds.splits}


def test_hc18_split_is_examination_disjoint(shared_data: Path) -> None:
    ds = load_dataset("hc18", data_dir=shared_data)
    assert sum(ds.counts().values()) == 111
    exams = _groups(ds, "examination")
    assert sum(len(v) for v in exams.values()) == 89
    assert not (exams["train"] & exams["val"]) and not (exams["train"] & exams["test"]) and not (exams["val"] & exams["test"])
    # 023_HC.png and 023_2HC.png are one examination and land in the same split
    where = {r.id: name for name in ds.splits for r in ds.split(name).records}
    assert where["023_HC"] == where["023_2HC"]
    assert ds.card.options["split"]["seed"] == 0
    # fixed seed: the same split every time
    again = load_dataset("hc18", data_dir=shared_data)
    assert again.split("test").ids == ds.split("test").ids


def test_hc18_sample_geometry_and_meta(shared_data: Path) -> None:
    ds = load_dataset("hc18", data_dir=shared_data)
    s = ds.split("train")[0]
    rows = {r[0]: r for r in csv.reader(open(shared_data / "hc18_fetal_head" / "pixel_size_and_HC.csv"))}
    row = rows[s.meta["file"]]
    assert s.meta["pixel_mm"] == float(row[1]) and s.meta["hc_mm"] == float(row[2])
    assert s.image is not None and s.mask is not None
    assert s.image.spacing == (float(row[1]), float(row[1])) and s.mask.spacing == s.image.spacing
    assert s.image.modality == "US"
    assert s.mask.array.shape == (1, *s.image.spatial_shape) and s.mask.array.dtype == np.uint8
    assert set(np.unique(s.mask.array).tolist()) == {0, 1}
    # the ellipse perimeter in mm is close to the CSV value (Ramanujan's approximation)
    area_mm2 = s.mask.array.sum() * s.meta["pixel_mm"] ** 2
    assert 0.8 < (2 * np.sqrt(np.pi * area_mm2)) / s.meta["hc_mm"] < 1.1


def test_hc18_outline_annotations_are_filled(shared_data: Path, tmp_path: Path) -> None:
    """The official release has 1-pixel ellipse outlines: reading fills them to the shared masks."""
    src = shared_data / "hc18_fetal_head"
    dst = tmp_path / "hc18_fetal_head"
    (dst / "training_set").mkdir(parents=True)
    names = ["000_HC.png", "023_2HC.png"]
    rows = [r for r in csv.reader(open(src / "pixel_size_and_HC.csv")) if r[0] in names]
    with open(dst / "training_set_pixel_size_and_HC.csv", "w", newline="") as f:  # official file name
        csv.writer(f).writerows([["filename", "pixel size(mm)", "head circumference (mm)"], *rows])
    filled = {}
    for name in names:
        shutil.copy(src / "training_set" / name, dst / "training_set" / name)
        ann = name.replace("HC.png", "HC_Annotation.png")
        full = np.asarray(PILImage.open(src / "training_set" / ann).convert("L")) > 0
        outline = full & ~binary_erosion(full)
        assert outline.sum() < 0.1 * full.sum()
        PILImage.fromarray((outline * 255).astype(np.uint8)).save(dst / "training_set" / ann)
        filled[name.removesuffix(".png")] = full
    ds = load_dataset("hc18", data_dir=tmp_path)
    seen = 0
    for split in ds.splits:
        for s in ds.split(split):
            np.testing.assert_array_equal(s.mask.array[0].astype(bool), filled[s.id])
            seen += 1
    assert seen == 2


def test_msd_hippocampus_patient_level_split(shared_data: Path) -> None:
    ds = load_dataset("msd_hippocampus", data_dir=shared_data)
    assert sum(ds.counts().values()) == 130
    cases = _groups(ds, "case")
    assert sum(len(v) for v in cases.values()) == 130
    assert not (cases["train"] & cases["test"]) and not (cases["val"] & cases["test"]) and not (cases["train"] & cases["val"])
    s = ds.split("val")[0]
    assert s.image is not None and s.mask is not None
    assert s.image.ndim == 3 and s.mask.spatial_shape == s.image.spatial_shape
    assert set(np.unique(s.mask.array).tolist()) <= {0, 1, 2}
    np.testing.assert_allclose(s.image.spacing, (1.0, 1.0, 1.0), atol=1e-3)
    assert ds.split("train").labels.tolist() == [-1] * len(ds.split("train"))


def test_chase_db1_second_observer_in_meta(shared_data: Path) -> None:
    ds = load_dataset("chase_db1", data_dir=shared_data)
    assert sum(ds.counts().values()) == 16 and all(n > 0 for n in ds.counts().values())
    children = _groups(ds, "child")
    assert not (children["train"] & children["test"])
    s = ds.split("test")[0]
    assert s.mask is not None and s.image is not None
    second = s.meta["mask_2nd_observer"]
    assert second.spatial_shape == s.mask.spatial_shape == s.image.spatial_shape
    assert set(np.unique(s.mask.array).tolist()) == {0, 1}
    assert 0.02 < s.mask.array.mean() < 0.2  # vessels are a small fraction of the image


def test_chase_db1_official_flat_layout(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "chase_db1"
    flat = tmp_path / "chase_db1"
    flat.mkdir()
    for stem in ("Image_01L", "Image_02R", "Image_03L"):
        shutil.copy(src / "images" / f"{stem}.jpg", flat)
        shutil.copy(src / "1st_manual" / f"{stem}_1stHO.png", flat)
        shutil.copy(src / "2nd_manual" / f"{stem}_2ndHO.png", flat)
    ds = load_dataset("chase_db1", data_dir=tmp_path)
    assert ds.counts() == {"train": 1, "val": 1, "test": 1}
    s = ds.split("val")[0]
    assert s.mask is not None and "mask_2nd_observer" in s.meta


def test_vqa_rad_official_split(shared_data: Path) -> None:
    ds = load_dataset("vqa_rad", data_dir=shared_data)
    assert ds.counts() == {"train": 2022, "test": 310}
    s = ds.split("test")[0]
    assert s.text and s.meta["answer"] and s.meta["answer_type"] in ("OPEN", "CLOSED")
    assert s.image is not None and s.image.ndim == 2


def test_split_helpers_are_seeded_and_cover_everything() -> None:
    groups = [f"p{i // 2}" for i in range(40)]
    a = group_split(groups, seed=3)
    assert a == group_split(groups, seed=3) and a != group_split(groups, seed=4)
    assert sorted(i for v in a.values() for i in v) == list(range(40))
    labels = [0] * 30 + [1] * 10
    b = stratified_split(labels, seed=0)
    assert [sum(labels[i] for i in b[s]) for s in ("train", "val", "test")] == [7, 1, 2]
    assert sorted(i for v in b.values() for i in v) == list(range(40))
