"""``Dataset`` (a card plus its splits), file-backed splits, and fixed-seed split helpers."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfm._registry import suggest
from medfm.data.card import DatasetCard, Sample, SplitData
from medfm.errors import ConfigError

DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)  # train, val, test
DEFAULT_SPLIT_SEED = 0


class Dataset:
    """A dataset ready to read: its card, its folder and one ``SplitData`` per split.

    >>> ds = load_dataset("breastmnist")                       # doctest: +SKIP
    >>> ds.split("train").images().shape                        # doctest: +SKIP
    (546, 1, 28, 28)
    """

    def __init__(self, card: DatasetCard, root: Path, splits: dict[str, SplitData]) -> None:
        self.card = card
        self.root = Path(root)
        self._splits = splits

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self._splits)

    def split(self, name: str) -> SplitData:
        """One split by name (``train``, ``val``, ``test``); unknown -> ConfigError."""
        try:
            return self._splits[name]
        except KeyError:
            raise ConfigError(
                f"dataset {self.card.name} has no split '{name}'.{suggest(name, list(self._splits))} "
                f"Splits: {', '.join(self._splits)}"
            ) from None

    def counts(self) -> dict[str, int]:
        return {name: len(s) for name, s in self._splits.items()}

    def checksum(self) -> str:
        """Content hash of the whole dataset: the card name and every split's checksum."""
        h = hashlib.sha256(self.card.name.encode())
        for name in sorted(self._splits):
            h.update(f"|{name}:{self._splits[name].checksum()}".encode())
        return h.hexdigest()

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.counts().items())
        return f"Dataset({self.card.name!r}, root={str(self.root)!r}, {counts})"


@dataclass
class SampleRef:
    """One sample on disk before it is read: paths, target and metadata."""

    id: str
    image: Path | None = None
    mask: Path | None = None
    label: Any = None
    text: str | None = None
    group: str | None = None  # patient / examination: splits never divide a group
    meta: dict[str, Any] = field(default_factory=dict)

    def paths(self) -> list[Path]:
        return [p for p in (self.image, self.mask) if p is not None]


class FileSplit:
    """One split of a file-backed dataset; samples are read on access by ``read``.

    ``labels``: (N,) int64 for classification/ordinal, (N, L) for multilabel, and -1 for
    samples without a class label (segmentation, VQA, unlabelled folders).
    """

    def __init__(self, card: DatasetCard, split: str, records: Sequence[SampleRef], read: Callable[[SampleRef], Sample]) -> None:
        self.card = card
        self.split = split
        self.records = list(records)
        self._read = read

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Sample:
        return self._read(self.records[i])

    def __iter__(self) -> Iterator[Sample]:
        for rec in self.records:
            yield self._read(rec)

    @property
    def labels(self) -> np.ndarray:
        if self.card.task == "multilabel":
            width = len(self.card.labels)
            return np.array([np.asarray(r.label, dtype=np.int64) for r in self.records]).reshape(-1, width)
        return np.array([-1 if r.label is None else int(r.label) for r in self.records], dtype=np.int64)

    @property
    def ids(self) -> Sequence[str]:
        return [r.id for r in self.records]

    def images(self) -> None:
        """None: files are read (and sized) sample by sample (see ``SplitData.images``)."""
        return None

    def checksum(self) -> str:
        """Hash of (id, label, MD5 of every file) for every sample of the split."""
        h = hashlib.sha256(f"{self.card.name}|{self.split}".encode())
        for rec in self.records:
            h.update(f"|{rec.id}:{rec.label!r}:{rec.text or ''}".encode())
            for p in rec.paths():
                h.update(checksum_path(p).encode())
        return h.hexdigest()


def checksum_path(path: Path) -> str:
    """MD5 of a file, or of all files below a folder (a DICOM series) in name order."""
    from medfm.data.fetch import checksum as file_checksum

    if path.is_dir():
        h = hashlib.md5()  # noqa: S324 - content fingerprint, not security
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            h.update(f"{p.relative_to(path)}:{file_checksum(p)}".encode())
        return h.hexdigest()
    return file_checksum(path)


def _cut(n: int, fractions: Sequence[float]) -> list[int]:
    """Cumulative cut points for ``n`` items into len(fractions) parts (rounded)."""
    total = float(sum(fractions))
    cuts, acc = [], 0.0
    for f in fractions[:-1]:
        acc += f / total
        cuts.append(int(round(acc * n)))
    parts = len(fractions)
    if n >= parts:  # enough items: no part (e.g. val of a small dataset) is left empty
        for k in range(len(cuts)):
            low = (cuts[k - 1] if k else 0) + (1 if fractions[k] > 0 else 0)
            high = n - sum(1 for f in fractions[k + 1:] if f > 0)
            cuts[k] = min(max(cuts[k], low), high)
    return cuts


def group_split(
    groups: Sequence[Hashable],
    names: Sequence[str] = ("train", "val", "test"),
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = DEFAULT_SPLIT_SEED,
) -> dict[str, list[int]]:
    """Split item indices so that every group (patient, examination) lies in one split.

    Groups are sorted, shuffled with ``random.Random(seed)`` (stable across Python versions)
    and cut by ``fractions`` of the number of groups.
    """
    unique = sorted(set(groups), key=str)
    random.Random(seed).shuffle(unique)
    cuts = [0, *_cut(len(unique), fractions), len(unique)]
    where = {g: names[k] for k in range(len(names)) for g in unique[cuts[k]:cuts[k + 1]]}
    out: dict[str, list[int]] = {name: [] for name in names}
    for i, g in enumerate(groups):
        out[where[g]].append(i)
    return out


def stratified_split(
    labels: Sequence[Hashable],
    names: Sequence[str] = ("train", "val", "test"),
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = DEFAULT_SPLIT_SEED,
) -> dict[str, list[int]]:
    """Split item indices per class by ``fractions`` (fixed seed), so class ratios are kept."""
    by_class: dict[Hashable, list[int]] = {}
    for i, lab in enumerate(labels):
        by_class.setdefault(lab, []).append(i)
    rng = random.Random(seed)
    out: dict[str, list[int]] = {name: [] for name in names}
    for lab in sorted(by_class, key=str):
        idx = by_class[lab]
        rng.shuffle(idx)
        cuts = [0, *_cut(len(idx), fractions), len(idx)]
        for k, name in enumerate(names):
            out[name].extend(idx[cuts[k]:cuts[k + 1]])
    return {name: sorted(v) for name, v in out.items()}
