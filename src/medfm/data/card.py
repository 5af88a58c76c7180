"""Dataset cards, samples, and the split-aware dataset interface every task reads."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from medfm.io.image import Image

TASKS = ("classification", "multilabel", "ordinal", "segmentation", "survival", "vqa", "report")


@dataclass(frozen=True)
class FileEntry:
    """One file of a dataset: path relative to the dataset folder, checksum, optional URL."""

    path: str
    md5: str | None = None
    sha256: str | None = None
    url: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class DatasetCard:
    """What a dataset is: task, modality, labels, official splits, files, licence, citation."""

    name: str
    task: str
    modality: str
    labels: tuple[str, ...] = ()
    splits: tuple[str, ...] = ("train", "val", "test")
    files: tuple[FileEntry, ...] = ()
    license: str = "unknown"
    citation: str = ""
    description: str = ""
    ndim: int = 2
    folder: str = ""  # folder under the data location holding ``files``
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"dataset card {self.name}: task must be one of {TASKS}, got {self.task!r}")


@dataclass
class Sample:
    """One item: image and/or target. ``label`` is an int (or an int vector for multilabel)."""

    id: str
    image: Image | None = None
    label: int | np.ndarray | None = None
    mask: Image | None = None
    text: str | None = None
    time: float | None = None
    event: bool | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class SplitData(Protocol):
    """One split of one dataset: indexable samples plus the arrays tasks need quickly."""

    card: DatasetCard
    split: str

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Sample: ...

    def __iter__(self) -> Iterator[Sample]: ...

    @property
    def labels(self) -> np.ndarray:
        """(N,) ints for classification/ordinal, (N, L) for multilabel."""
        ...

    @property
    def ids(self) -> Sequence[str]: ...

    def images(self) -> np.ndarray | None:
        """All images of the split as one (N, C, H, W) / (N, C, D, H, W) array when the dataset
        stores them so (MedMNIST), else None: read them sample by sample."""
        ...

    def checksum(self) -> str:
        """Content hash of this split (files' checksums + split definition)."""
        ...
