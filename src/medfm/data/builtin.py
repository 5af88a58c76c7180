"""Built-in folder datasets: HC18 fetal head, MSD Task04 hippocampus, CHASE_DB1 vessels, VQA-RAD.

None of these has a checksummed single-file download: their folders are found under the
data location (``<data>/<card.folder>``) and read with ``medfm.io``. Splits are fixed-seed and
never divide a patient / examination / child (recorded in ``card.options['split']``).
"""

from __future__ import annotations

import csv
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from medfm.data.card import DatasetCard, Sample, SplitData
from medfm.data.dataset import (
    DEFAULT_FRACTIONS,
    DEFAULT_SPLIT_SEED,
    FileSplit,
    SampleRef,
    group_split,
)
from medfm.data.fetch import Located
from medfm.errors import ConfigError, InputError
from medfm.io.geometry import geometry_differences
from medfm.io.image import Image

SPLITS = ("train", "val", "test")


def _split_option(by: str) -> dict[str, Any]:
    return {"method": f"fixed-seed, {by}-level", "seed": DEFAULT_SPLIT_SEED, "fractions": list(DEFAULT_FRACTIONS)}


# --------------------------------------------------------------------------- mask helpers

def to_label_mask(mask: Image, path: Path, fill: bool = False) -> Image:
    """Bring a mask to (1, *spatial) uint8 labels.

    RGB / multi-channel masks collapse to their channel maximum; a {0, 255} mask becomes
    {0, 1}; with ``fill`` a closed outline is filled (holes = background components that do
    not touch the border, as ``scipy.ndimage.binary_fill_holes`` defines them), which leaves
    an already filled mask unchanged.
    """
    arr = np.asarray(mask.array)
    if arr.shape[0] > 1:
        arr = arr.max(axis=0, keepdims=True)
    if arr.dtype == np.uint8:
        values = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
    else:
        values = np.unique(arr)
        if values.size and (values.min() < 0 or values.max() > 255 or not np.array_equal(values, np.round(values))):
            raise InputError(f"{path}: mask values must be integer labels 0..255, got range [{values.min()}, {values.max()}]")
    if values.size and values.max() == 255 and set(values.tolist()) <= {0, 255}:
        arr = arr // 255
    arr = arr.astype(np.uint8)
    if fill:
        arr = _fill_holes(arr[0] > 0)[None].astype(np.uint8)
    return mask.with_array(arr)


def _fill_holes(fg: np.ndarray) -> np.ndarray:
    """Foreground plus every background region not connected to the image border."""
    from scipy.ndimage import label

    background, _ = label(~fg)
    edges = np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])
    outside = np.zeros(background.max() + 1, dtype=bool)
    outside[np.unique(edges)] = True
    outside[0] = False  # label 0 is the foreground itself
    return fg | ~outside[background] & (background > 0)


def check_geometry(image: Image, mask: Image, image_path: Path, mask_path: Path) -> None:
    """InputError naming both files when the mask's grid differs from the image's."""
    problems = geometry_differences(mask, image)
    if problems:
        raise InputError(f"mask {mask_path} does not match image {image_path}: {'; '.join(problems)}")


def _split_records(records: list[SampleRef], seed: int = DEFAULT_SPLIT_SEED) -> dict[str, list[SampleRef]]:
    parts = group_split([r.group or r.id for r in records], SPLITS, DEFAULT_FRACTIONS, seed)
    return {name: [records[i] for i in idx] for name, idx in parts.items()}


def _no_options(card: DatasetCard, options: dict[str, Any]) -> None:
    if options:
        raise ConfigError(f"dataset {card.name}: unknown option(s) {sorted(options)}")


# --------------------------------------------------------------------------- HC18

HC18 = DatasetCard(
    name="hc18",
    task="segmentation",
    modality="US",
    labels=("background", "fetal head"),
    splits=SPLITS,
    license="CC BY 4.0",
    citation=(
        "van den Heuvel TLA, de Bruijn D, de Korte CL, van Ginneken B. Automated measurement of fetal head "
        "circumference using 2D ultrasound images. PLoS ONE 13(8): e0200412 (2018). doi:10.5281/zenodo.1327317"
    ),
    description=(
        "HC18 fetal head 2D ultrasound (training set): head masks (official 1-pixel ellipse outlines are "
        "filled) plus manual head circumference (mm) and pixel size (mm) in Sample.meta."
    ),
    ndim=2,
    folder="hc18_fetal_head",
    options={
        "homepage": "https://hc18.grand-challenge.org/ (Zenodo doi:10.5281/zenodo.1327317)",
        "probe": ["training_set"],
        "split": _split_option("examination"),
    },
)

_HC18_IMAGE = re.compile(r"^(\d+)_(\d*)HC\.png$")


def _hc18_csv(root: Path) -> Path:
    for name in ("pixel_size_and_HC.csv", "training_set_pixel_size_and_HC.csv",
                 "training_set/training_set_pixel_size_and_HC.csv"):
        if (root / name).is_file():
            return root / name
    raise InputError(f"{root}: no pixel-size CSV (training_set_pixel_size_and_HC.csv or pixel_size_and_HC.csv)")


def hc18_records(root: Path) -> list[SampleRef]:
    """One record per training image; group = examination number (``023_2HC.png`` -> ``023``)."""
    table: dict[str, tuple[float, float]] = {}
    csv_path = _hc18_csv(root)
    with open(csv_path, newline="") as f:
        for row in csv.reader(f):
            if not row or row[0].strip().lower() == "filename":
                continue
            try:
                table[row[0].strip()] = (float(row[1]), float(row[2]))
            except (IndexError, ValueError) as exc:
                raise InputError(f"{csv_path}: bad row {row!r} ({exc})") from exc
    records = []
    for path in sorted((root / "training_set").glob("*HC.png")):
        m = _HC18_IMAGE.match(path.name)
        if not m:
            continue
        mask = path.with_name(path.name.replace("HC.png", "HC_Annotation.png"))
        if not mask.is_file():
            raise InputError(f"{path}: annotation {mask.name} is missing")
        if path.name not in table:
            raise InputError(f"{path}: no row for {path.name} in {csv_path}")
        pixel_mm, hc_mm = table[path.name]
        records.append(SampleRef(
            id=path.stem, image=path, mask=mask, group=m.group(1),
            meta={"examination": m.group(1), "pixel_mm": pixel_mm, "hc_mm": hc_mm, "file": path.name},
        ))
    if not records:
        raise InputError(f"{root / 'training_set'}: no HC18 images (NNN_HC.png)")
    return records


def _read_hc18(rec: SampleRef) -> Sample:
    from medfm.io import read_raster

    assert rec.image is not None and rec.mask is not None
    px = float(rec.meta["pixel_mm"])
    image = read_raster(rec.image)
    image = replace(image, spacing=(px, px), modality="US", meta={**image.meta, "spacing_known": True})
    mask = read_raster(rec.mask)
    mask = to_label_mask(replace(mask, spacing=(px, px), meta={**mask.meta, "spacing_known": True}), rec.mask, fill=True)
    check_geometry(image, mask, rec.image, rec.mask)
    return Sample(id=rec.id, image=image, mask=mask, meta=dict(rec.meta))


def load_hc18(card: DatasetCard, located: Located, **options: Any) -> dict[str, SplitData]:
    _no_options(card, options)
    parts = _split_records(hc18_records(located.root))
    return {name: FileSplit(card, name, recs, _read_hc18) for name, recs in parts.items()}


# --------------------------------------------------------------------------- MSD hippocampus

MSD_HIPPOCAMPUS = DatasetCard(
    name="msd_hippocampus",
    task="segmentation",
    modality="MR",
    labels=("background", "anterior", "posterior"),
    splits=SPLITS,
    license="CC BY-SA 4.0",
    citation=(
        "Antonelli M, et al. The Medical Segmentation Decathlon. Nature Communications 13, 4128 (2022); "
        "Simpson AL, et al. arXiv:1902.09063 (2019)."
    ),
    description="Medical Segmentation Decathlon Task04: hippocampus head/body crops of T1 MRI (imagesTr/labelsTr).",
    ndim=3,
    folder="msd_hippocampus",
    options={
        "homepage": "http://medicaldecathlon.com/ (Task04_Hippocampus)",
        "probe": ["imagesTr"],
        "split": _split_option("patient"),
    },
)


def _nifti_stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def msd_records(root: Path) -> list[SampleRef]:
    """Pairs imagesTr/<case>.nii.gz with labelsTr/<case>.nii.gz; group = case (one per patient)."""
    records = []
    for path in sorted((root / "imagesTr").glob("*.nii*")):
        if path.name.startswith("."):  # macOS resource forks in the official tarball
            continue
        mask = root / "labelsTr" / path.name
        if not mask.is_file():
            raise InputError(f"{path}: label {mask} is missing")
        case = _nifti_stem(path)
        records.append(SampleRef(id=case, image=path, mask=mask, group=case, meta={"case": case}))
    if not records:
        raise InputError(f"{root / 'imagesTr'}: no NIfTI images")
    return records


def _read_nifti_pair(rec: SampleRef) -> Sample:
    from medfm.io import read_nifti

    assert rec.image is not None and rec.mask is not None
    image = read_nifti(rec.image)
    mask = to_label_mask(read_nifti(rec.mask), rec.mask)
    check_geometry(image, mask, rec.image, rec.mask)
    return Sample(id=rec.id, image=image, mask=mask, meta=dict(rec.meta))


def load_msd_hippocampus(card: DatasetCard, located: Located, **options: Any) -> dict[str, SplitData]:
    _no_options(card, options)
    parts = _split_records(msd_records(located.root))
    return {name: FileSplit(card, name, recs, _read_nifti_pair) for name, recs in parts.items()}


# --------------------------------------------------------------------------- CHASE_DB1

CHASE_DB1 = DatasetCard(
    name="chase_db1",
    task="segmentation",
    modality="OP",
    labels=("background", "vessel"),
    splits=SPLITS,
    license="CC BY 4.0",
    citation=(
        "Fraz MM, Remagnino P, Hoppe A, Uyyanonvara B, Rudnicka AR, Owen CG, Barman SA. An ensemble "
        "classification-based approach applied to retinal blood vessel segmentation. IEEE Trans Biomed Eng "
        "59(9):2538-2548 (2012)."
    ),
    description=(
        "CHASE_DB1 children's fundus photographs with vessel masks; target = first observer, the second "
        "observer's mask is in Sample.meta['mask_2nd_observer']."
    ),
    ndim=2,
    folder="chase_db1",
    options={
        "homepage": "https://researchdata.kingston.ac.uk/96/",
        "probe": ["images", "Image_01L.jpg"],
        "split": _split_option("child"),
    },
)

_CHASE = re.compile(r"^Image_(\d+)([LR])\.(jpg|jpeg|png|tif)$", re.IGNORECASE)


def chase_records(root: Path) -> list[SampleRef]:
    """Images in ``images/`` with masks in ``1st_manual/`` / ``2nd_manual/``, or the official
    flat folder (``Image_01L.jpg`` beside ``Image_01L_1stHO.png``); group = child number."""
    image_dir = root / "images" if (root / "images").is_dir() else root
    records = []
    for path in sorted(image_dir.iterdir()):
        m = _CHASE.match(path.name)
        if not m:
            continue
        stem = path.name.rsplit(".", 1)[0]
        first = next((p for p in (root / "1st_manual" / f"{stem}_1stHO.png", root / f"{stem}_1stHO.png") if p.is_file()), None)
        second = next((p for p in (root / "2nd_manual" / f"{stem}_2ndHO.png", root / f"{stem}_2ndHO.png") if p.is_file()), None)
        if first is None:
            raise InputError(f"{path}: first-observer mask {stem}_1stHO.png is missing (looked in {root / '1st_manual'} and {root})")
        meta = {"child": m.group(1), "eye": m.group(2).upper()}
        if second is not None:
            meta["second_observer_file"] = str(second)
        records.append(SampleRef(id=stem, image=path, mask=first, group=m.group(1), meta=meta))
    if not records:
        raise InputError(f"{image_dir}: no CHASE_DB1 images (Image_NN[LR].jpg)")
    return records


def _read_chase(rec: SampleRef) -> Sample:
    from medfm.io import read_raster

    assert rec.image is not None and rec.mask is not None
    image = replace(read_raster(rec.image), modality="OP")
    mask = to_label_mask(read_raster(rec.mask), rec.mask)
    check_geometry(image, mask, rec.image, rec.mask)
    meta = dict(rec.meta)
    second = meta.get("second_observer_file")
    if second:
        mask2 = to_label_mask(read_raster(second), Path(second))
        check_geometry(image, mask2, rec.image, Path(second))
        meta["mask_2nd_observer"] = mask2
    return Sample(id=rec.id, image=image, mask=mask, meta=meta)


def load_chase_db1(card: DatasetCard, located: Located, **options: Any) -> dict[str, SplitData]:
    _no_options(card, options)
    parts = _split_records(chase_records(located.root))
    return {name: FileSplit(card, name, recs, _read_chase) for name, recs in parts.items()}


# --------------------------------------------------------------------------- VQA-RAD

VQA_RAD = DatasetCard(
    name="vqa_rad",
    task="vqa",
    modality="CT/MR/X-ray",
    labels=(),
    splits=("train", "test"),
    license="CC0 1.0",
    citation=(
        "Lau JJ, Gayen S, Ben Abacha A, Demner-Fushman D. A dataset of clinically generated visual questions and "
        "answers about radiology images. Scientific Data 5, 180251 (2018)."
    ),
    description=(
        "VQA-RAD radiology visual question answering: one sample per question (Sample.text), answer and "
        "answer_type / question_type / organ in Sample.meta; splits follow the official_split flag of qa.json."
    ),
    ndim=2,
    folder="vqa_rad",
    options={"homepage": "https://osf.io/89kps/", "probe": ["qa.json"], "split": {"method": "official"}},
)


def vqa_records(root: Path) -> list[SampleRef]:
    """One SampleRef per question, read by :func:`medfm.data.vqa.load_vqa_folder` (the one VQA-RAD reader)."""
    from medfm.data.vqa import load_vqa_folder

    return [
        SampleRef(
            id=f"q{it.qid}", image=it.image, text=it.question, group=it.image_name,
            meta={
                "answer": it.answer, "answer_type": it.answer_type, "question_type": it.question_type, "organ": it.organ,
                "phrase_type": it.phrase_type, "split": it.split or "train", "image_name": it.image_name,
            },
        )
        for it in load_vqa_folder(root)
    ]


def _read_vqa(rec: SampleRef) -> Sample:
    from medfm.io import read_raster

    assert rec.image is not None
    return Sample(id=rec.id, image=read_raster(rec.image), text=rec.text, meta=dict(rec.meta))


def load_vqa_rad(card: DatasetCard, located: Located, **options: Any) -> dict[str, SplitData]:
    _no_options(card, options)
    records = vqa_records(located.root)
    return {
        name: FileSplit(card, name, [r for r in records if r.meta["split"] == name], _read_vqa)
        for name in card.splits
    }


CARDS_AND_LOADERS = (
    (HC18, load_hc18),
    (MSD_HIPPOCAMPUS, load_msd_hippocampus),
    (CHASE_DB1, load_chase_db1),
    (VQA_RAD, load_vqa_rad),
)
