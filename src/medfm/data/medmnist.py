"""MedMNIST v2 / MedMNIST+ dataset cards and their array loader.

Every official subset at every official size is a card: ``breastmnist`` (28 px) and
``breastmnist_64`` / ``_128`` / ``_224`` (2D), ``adrenalmnist3d`` (28^3) and
``adrenalmnist3d_64`` (3D). Files are the official Zenodo ``.npz`` files (record 10519652);
checksums, label names, split sizes and licences are transcribed from the official
``medmnist`` package (v3.0.2, ``medmnist/info.py``).

Arrays: ``SplitData.images()`` is (N, C, H, W) or (N, C, D, H, W) uint8, channel first.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medfm.data.card import DatasetCard, FileEntry, Sample, SplitData
from medfm.data.fetch import Located
from medfm.errors import ConfigError, InputError
from medfm.io.image import Image

ZENODO_RECORD = "10519652"
HOMEPAGE = "https://medmnist.com/"
CITATION = (
    "Yang J, Shi R, Wei D, Liu Z, Zhao L, Ke B, Pfister H, Ni B. MedMNIST v2 - A large-scale "
    "lightweight benchmark for 2D and 3D biomedical image classification. Scientific Data 10, 41 (2023)."
)
SIZES_2D = (28, 64, 128, 224)
SIZES_3D = (28, 64)


@dataclass(frozen=True)
class _Subset:
    """One MedMNIST subset as listed in the official info.py (data only)."""

    key: str
    task: str  # classification | multilabel | ordinal
    modality: str
    description: str
    channels: int
    labels: tuple[str, ...]
    n_samples: tuple[int, int, int]  # train, val, test
    md5: dict[int, str]  # image size -> MD5 of the official file
    license: str = "CC BY 4.0"
    source: str = ""  # source data set the subset was derived from


_ORGANS_2D = (
    "bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right",
    "liver", "lung-left", "lung-right", "pancreas", "spleen",
)

SUBSETS: tuple[_Subset, ...] = (
    _Subset(
        "pathmnist", "classification", "pathology (H&E)",
        "Colorectal cancer histology patches (NCT-CRC-HE-100K; test from CRC-VAL-HE-7K), 9 tissue types.",
        3,
        ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
         "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium"),
        (89996, 10004, 7180),
        {28: "a8b06965200029087d5bd730944a56c1", 64: "55aa9c1e0525abe5a6b9d8343a507616",
         128: "ac42d08fb904d92c244187169d1fd1d9", 224: "2c51a510bcdc9cf8ddb2af93af1eadec"},
        source="Kather et al., PLoS Medicine 16(1): e1002730 (2019)",
    ),
    _Subset(
        "chestmnist", "multilabel", "chest X-ray",
        "NIH ChestX-ray14 frontal chest radiographs, 14 text-mined findings (multi-label), official split.",
        1,
        ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
         "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"),
        (78468, 11219, 22433),
        {28: "02c8a6516a18b556561a56cbdd36c4a8", 64: "9de6cd0b934ebb5b7426cfba5efbae16",
         128: "db107e5590b27930b62dbaf558aebee3", 224: "45bd33e6f06c3e8cdb481c74a89152aa"},
        source="Wang et al., ChestX-ray8, CVPR 2017",
    ),
    _Subset(
        "dermamnist", "classification", "dermatoscopy",
        "HAM10000 dermatoscopic images of pigmented skin lesions, 7 diagnoses, 7:1:2 split.",
        3,
        ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
         "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
         "vascular lesions"),
        (7007, 1003, 2005),
        {28: "0744692d530f8e62ec473284d019b0c7", 64: "b70a2f5635c6199aeaa28c31d7202e1f",
         128: "2defd784463fa5243564e855ed717de1", 224: "8974907d8e169bef5f5b96bc506ae45d"},
        license="CC BY-NC 4.0",
        source="Tschandl et al., Scientific Data 5, 180161 (2018)",
    ),
    _Subset(
        "octmnist", "classification", "retinal OCT",
        "Retinal optical coherence tomography B-scans, 4 diagnosis categories.",
        1,
        ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
        (97477, 10832, 1000),
        {28: "c68d92d5b585d8d81f7112f81e2d0842", 64: "e229e9440236b774d9f0dfef9d07bdaf",
         128: "0a97e76651ace45c5d943ee3f65b63ae", 224: "abc493b6d529d5de7569faaef2773ba3"},
        source="Kermany et al., Cell 172(5): 1122-1131 (2018)",
    ),
    _Subset(
        "pneumoniamnist", "classification", "chest X-ray",
        "Paediatric chest radiographs, pneumonia vs normal.",
        1,
        ("normal", "pneumonia"),
        (4708, 524, 624),
        {28: "28209eda62fecd6e6a2d98b1501bb15f", 64: "8f4eceb4ccffa70c672198ea285246c6",
         128: "05b46931834c231683c68f40c47b2971", 224: "d6a3c71de1b945ea11211b03746c1fe1"},
        source="Kermany et al., Cell 172(5): 1122-1131 (2018)",
    ),
    _Subset(
        "retinamnist", "ordinal", "fundus photograph",
        "DeepDRiD colour fundus photographs, diabetic-retinopathy grade 0-4 (ordinal).",
        3,
        ("0", "1", "2", "3", "4"),
        (1080, 120, 400),
        {28: "bd4c0672f1bba3e3a89f0e4e876791e4", 64: "afda852cc34dcda56f86ad2b2457dbcc",
         128: "e48e916a24454daf90583d4e6efb1a18", 224: "eae7e3b6f3fcbda4ae613ebdcbe35348"},
        source="Liu et al., DeepDRiD, Patterns 3(6) (2022)",
    ),
    _Subset(
        "breastmnist", "classification", "breast ultrasound",
        "Breast ultrasound (BUSI), malignant vs normal+benign, 7:1:2 split.",
        1,
        ("malignant", "normal, benign"),
        (546, 78, 156),
        {28: "750601b1f35ba3300ea97c75c52ff8f6", 64: "742edef2a1fd1524b2efff4bd7ba9364",
         128: "363e4b3f8d712e9b5de15470a2aaadf1", 224: "b56378a6eefa9fed602bb16d192d4c8b"},
        source="Al-Dhabyani et al., Data in Brief 28, 104863 (2020)",
    ),
    _Subset(
        "bloodmnist", "classification", "blood cell microscopy",
        "Peripheral blood cell microscopy, 8 cell types, 7:1:2 split.",
        3,
        ("basophil", "eosinophil", "erythroblast",
         "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte",
         "monocyte", "neutrophil", "platelet"),
        (11959, 1712, 3421),
        {28: "7053d0359d879ad8a5505303e11de1dc", 64: "2b94928a2ae4916078ca51e05b6b800b",
         128: "adace1e0ed228fccda1f39692059dd4c", 224: "b718ff6835fcbdb22ba9eacccd7b2601"},
        source="Acevedo et al., Data in Brief 30, 105474 (2020)",
    ),
    _Subset(
        "tissuemnist", "classification", "kidney cortex microscopy",
        "Kidney cortex cells (BBBC051), maximum projection of 7 slices, 8 cell types, 7:1:2 split.",
        1,
        ("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
         "Glomerular endothelial cells", "Interstitial endothelial cells", "Leukocytes",
         "Podocytes", "Proximal Tubule Segments", "Thick Ascending Limb"),
        (165466, 23640, 47280),
        {28: "ebe78ee8b05294063de985d821c1c34b", 64: "123ece2eba09d0aa5d698fda57103344",
         128: "61b955355d7425a89687b06cca3ce0c2", 224: "b077128c4a949f0a4eb01517f9037b9c"},
        source="Ljosa et al., Nature Methods 9, 637 (2012) (BBBC051)",
    ),
    _Subset(
        "organamnist", "classification", "abdominal CT",
        "Axial slices through 11 abdominal organs (LiTS CT, abdominal window).",
        1, _ORGANS_2D,
        (34561, 6491, 17778),
        {28: "68e3f8846a6bd62f0c9bf841c0d9eacc", 64: "2dcccc29b88e6da5a01161ef20cda288",
         128: "eeae80d0a227a8d099027e1b3cfd3b60", 224: "50747347e05c87dd3aaf92c49f9f3170"},
        source="Bilic et al., LiTS, Medical Image Analysis 84, 102680 (2023)",
    ),
    _Subset(
        "organcmnist", "classification", "abdominal CT",
        "Coronal slices through 11 abdominal organs (LiTS CT, abdominal window).",
        1, _ORGANS_2D,
        (12975, 2392, 8216),
        {28: "b9ceb9546e10131b32923c5bbeaea2b1", 64: "3ce34a8724ea6f548e6db4744d03b6a9",
         128: "773c1f009daa3fe5d9a2a201b2a7ed94", 224: "050f5e875dc056f6768abf94ec9995d1"},
        source="Bilic et al., LiTS, Medical Image Analysis 84, 102680 (2023)",
    ),
    _Subset(
        "organsmnist", "classification", "abdominal CT",
        "Sagittal slices through 11 abdominal organs (LiTS CT, abdominal window).",
        1, _ORGANS_2D,
        (13932, 2452, 8827),
        {28: "9ab87b696fb54e2a387ebe992d6ed5f1", 64: "53a6d115339d874c25e309a994ff46d3",
         128: "ded0c5fa01a95dc4978b956f613e9b8e", 224: "b354719e553fbbb2513d5533f52a4cb1"},
        source="Bilic et al., LiTS, Medical Image Analysis 84, 102680 (2023)",
    ),
    _Subset(
        "organmnist3d", "classification", "abdominal CT",
        "3D crops of 11 body organs from LiTS CT (same scans as Organ{A,C,S}MNIST).",
        1,
        ("liver", "kidney-right", "kidney-left", "femur-right", "femur-left", "bladder", "heart",
         "lung-right", "lung-left", "spleen", "pancreas"),
        (971, 161, 610),
        {28: "a0c5a1ff56af4f155c46d46fbb45a2fe", 64: "58a2205adf14a9d0a189cb06dc78bf10"},
        source="Bilic et al., LiTS, Medical Image Analysis 84, 102680 (2023)",
    ),
    _Subset(
        "nodulemnist3d", "classification", "chest CT",
        "LIDC-IDRI lung nodule crops (1 mm isotropic), benign (malignancy 1-2) vs malignant (4-5).",
        1,
        ("benign", "malignant"),
        (1158, 165, 310),
        {28: "8755a7e9e05a4d9ce80a24c3e7a256f3", 64: "c47c5b7d457bf6332200d2ea6d64ecd8"},
        source="Armato et al., LIDC-IDRI, Medical Physics 38(2): 915-931 (2011)",
    ),
    _Subset(
        "adrenalmnist3d", "classification", "abdominal CT (shape masks)",
        "Adrenal gland 3D shape masks (64 mm cube), normal vs adrenal mass, patient-level split.",
        1,
        ("normal", "hyperplasia"),
        (1188, 98, 298),
        {28: "bbd3c5a5576322bc4cdfea780653b1ce", 64: "17721accfe9fb005146a47d33bc54b2f"},
        source="Zhongshan Hospital, Fudan University (released with MedMNIST v2)",
    ),
    _Subset(
        "fracturemnist3d", "classification", "chest CT",
        "RibFrac rib fracture crops (64 mm cube), buckle / nondisplaced / displaced, official split.",
        1,
        ("buckle rib fracture", "nondisplaced rib fracture", "displaced rib fracture"),
        (1027, 103, 240),
        {28: "6aa7b0143a6b42da40027a9dda61302f", 64: "f01d7e6316aedf4210da0da5b7437b42"},
        source="Jin et al., RibFrac, EBioMedicine 62, 103106 (2020)",
    ),
    _Subset(
        "vesselmnist3d", "classification", "brain MRA (voxelised vessel meshes)",
        "IntrA intracranial vessel segments voxelised, healthy vessel vs aneurysm, 7:1:2 split.",
        1,
        ("vessel", "aneurysm"),
        (1335, 191, 382),
        {28: "b41fd4f7e7e2feedddb201585ecafa1b", 64: "6bb274a8846e1097066dcd64e2c4520f"},
        source="Yang et al., IntrA, CVPR 2020",
    ),
    _Subset(
        "synapsemnist3d", "classification", "electron microscopy",
        "Rat cortex synapse crops from multi-beam SEM, inhibitory vs excitatory, 7:1:2 split.",
        1,
        ("inhibitory synapse", "excitatory synapse"),
        (1230, 177, 352),
        {28: "1235b78a3cd6280881dd7850a78eadb6", 64: "43bd14ebf3af9d3dd072446fedc14d5e"},
        source="MitoEM-based synapse annotations (released with MedMNIST v2)",
    ),
)

SPLITS = ("train", "val", "test")


def zenodo_url(file_name: str) -> str:
    """Official download URL of one MedMNIST file on Zenodo."""
    return f"https://zenodo.org/records/{ZENODO_RECORD}/files/{file_name}?download=1"


def card_name(key: str, size: int) -> str:
    """``breastmnist`` for 28 px (the original size), ``breastmnist_224`` otherwise."""
    return key if size == 28 else f"{key}_{size}"


def make_cards() -> list[DatasetCard]:
    """One card per (subset, size)."""
    cards = []
    for sub in SUBSETS:
        ndim = 3 if sub.key.endswith("3d") else 2
        for size, md5 in sub.md5.items():
            name = card_name(sub.key, size)
            file_name = f"{name}.npz"
            shape = f"{size}x{size}x{size}" if ndim == 3 else f"{size}x{size}"
            cards.append(
                DatasetCard(
                    name=name,
                    task=sub.task,
                    modality=sub.modality,
                    labels=sub.labels,
                    splits=SPLITS,
                    files=(FileEntry(path=file_name, md5=md5, url=zenodo_url(file_name)),),
                    license=sub.license,
                    citation=f"{CITATION} Source data: {sub.source}." if sub.source else CITATION,
                    description=f"MedMNIST {sub.key} at {shape}: {sub.description}",
                    ndim=ndim,
                    folder=sub.key,
                    options={
                        "family": "medmnist",
                        "size": size,
                        "channels": sub.channels,
                        "n_samples": dict(zip(SPLITS, sub.n_samples)),
                        "homepage": HOMEPAGE,
                    },
                )
            )
    return cards


def npz_counts(path: Path) -> dict[str, int]:
    """Number of samples per split from the ``.npz`` array headers (no decompression).

    Raises InputError naming the file when it is not a readable MedMNIST archive.
    """
    counts: dict[str, int] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            for split in SPLITS:
                shapes = []
                for kind in ("images", "labels"):
                    member = f"{split}_{kind}.npy"
                    if member not in names:
                        raise InputError(f"{path}: not a MedMNIST file (no '{split}_{kind}' array)")
                    with zf.open(member) as f:
                        major, _ = np.lib.format.read_magic(f)
                        if major == 1:
                            shape, _, _ = np.lib.format.read_array_header_1_0(f)
                        else:
                            shape, _, _ = np.lib.format.read_array_header_2_0(f)
                    shapes.append(shape)
                if shapes[0][0] != shapes[1][0]:
                    raise InputError(f"{path}: {split} has {shapes[0][0]} images but {shapes[1][0]} labels")
                counts[split] = int(shapes[0][0])
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read as a MedMNIST .npz ({exc})") from exc
    return counts


def _channel_first(images: np.ndarray, ndim: int, channels: int, path: Path) -> np.ndarray:
    """Bring (N, *S), (N, *S, C) or (N, C, *S) to (N, C, *S) uint8, contiguous."""
    if images.ndim == ndim + 1:
        out = images[:, None]
    elif images.ndim == ndim + 2 and images.shape[1] == channels:
        out = images
    elif images.ndim == ndim + 2 and images.shape[-1] == channels:
        out = np.moveaxis(images, -1, 1)
    else:
        raise InputError(f"{path}: image array of shape {images.shape} does not fit {ndim}D with {channels} channel(s)")
    return np.ascontiguousarray(out)


class MedMNISTArrays:
    """The arrays of one ``.npz`` file, read once (via ``medfm.io``) on first use."""

    def __init__(self, card: DatasetCard, path: Path, md5: str) -> None:
        self.card = card
        self.path = path
        self.md5 = md5
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        self._counts: dict[str, int] | None = None

    def counts(self) -> dict[str, int]:
        if self._counts is None:
            self._counts = npz_counts(self.path)
        return self._counts

    def get(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            from medfm.io import read_medmnist_npz

            raw = read_medmnist_npz(self.path)
            chans = int(self.card.options.get("channels", 1))
            arrays = {}
            for name, (images, labels) in raw.items():
                imgs = _channel_first(np.asarray(images), self.card.ndim, chans, self.path)
                labs = np.asarray(labels).astype(np.int64)
                if self.card.task == "multilabel":
                    labs = labs.reshape(len(labs), -1)
                else:
                    labs = labs.reshape(len(labs))
                arrays[name] = (imgs, labs)
            self._arrays = arrays
        if split not in self._arrays:
            raise InputError(f"{self.path}: no '{split}' split in the file")
        return self._arrays[split]


class MedMNISTSplit:
    """One split of a MedMNIST file: indexable samples plus the whole image array.

    ``images()`` -> (N, C, H, W) or (N, C, D, H, W) uint8; ``labels`` -> (N,) int64, or
    (N, 14) for ChestMNIST (multi-label). Sample ids are ``<split>/<index>``.
    """

    def __init__(self, arrays: MedMNISTArrays, split: str) -> None:
        self.card = arrays.card
        self.split = split
        self._arrays = arrays

    def __len__(self) -> int:
        return self._arrays.counts()[self.split]

    def images(self) -> np.ndarray:
        """All images of the split, channel first, uint8 (no copy after the first call)."""
        return self._arrays.get(self.split)[0]

    @property
    def labels(self) -> np.ndarray:
        return self._arrays.get(self.split)[1]

    @property
    def ids(self) -> Sequence[str]:
        return [f"{self.split}/{i}" for i in range(len(self))]

    def __getitem__(self, i: int) -> Sample:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{self.card.name}/{self.split}: index {i} out of range for {n} samples")
        i = i % n
        images, labels = self._arrays.get(self.split)
        spacing = (1.0,) * self.card.ndim
        image = Image(images[i].copy(), spacing=spacing, modality="OT",
                      meta={"source": str(self._arrays.path), "spacing_known": False})
        label: Any = labels[i].copy() if labels.ndim == 2 else int(labels[i])
        return Sample(id=f"{self.split}/{i}", image=image, label=label, meta={"index": i})

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def checksum(self) -> str:
        return hashlib.sha256(f"{self._arrays.md5}|{self.split}|{len(self)}".encode()).hexdigest()


def load(card: DatasetCard, located: Located, **options: Any) -> dict[str, SplitData]:
    """Splits of one MedMNIST card, given where its file was found (and its verified MD5)."""
    if options:
        raise ConfigError(f"dataset {card.name}: unknown option(s) {sorted(options)}; MedMNIST takes none")
    entry = card.files[0]
    arrays = MedMNISTArrays(card, located.files[entry.path], located.hashes[entry.path])
    return {split: MedMNISTSplit(arrays, split) for split in card.splits}
