"""Fixtures for the classification protocol tests: synthetic splits and BreastMNIST."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medfm.tasks.classification.data import FeatureSplits, ImageSplits


def gaussian_features(
    seed: int = 0, n: tuple[int, int, int] = (120, 40, 60), n_classes: int = 3, dim: int = 16, sep: float = 3.0,
    task: str = "multiclass",
) -> FeatureSplits:
    """Well-separated Gaussian clusters, one per class (multilabel: one shift per active label)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim)) * sep
    parts = []
    for size in n:
        if task == "multilabel":
            y = (rng.random((size, n_classes)) < 0.5).astype(int)
            y[y.sum(1) == 0, 0] = 1
            x = y @ centres + rng.normal(size=(size, dim))
        else:
            y = np.arange(size) % n_classes
            rng.shuffle(y)
            x = centres[y] + rng.normal(size=(size, dim))
        parts += [x.astype(np.float32), y]
    names = tuple(f"c{i}" for i in range(n_classes))
    return FeatureSplits(*parts, label_names=names, task=task)


def bright_dark_images(seed: int = 0, n: tuple[int, int, int] = (48, 16, 24), size: int = 12, depth: int | None = None) -> ImageSplits:
    """Binary images: class 1 has a bright square in the centre, class 0 does not; uint8 (N, 1, ...)."""
    rng = np.random.default_rng(seed)
    parts = []
    shape = (size, size) if depth is None else (depth, size, size)
    for m in n:
        y = np.arange(m) % 2
        x = rng.integers(0, 90, size=(m, 1, *shape)).astype(np.uint8)
        c = size // 2
        x[y == 1, ..., c - 2:c + 2, c - 2:c + 2] = 230
        parts += [x, y]
    return ImageSplits(*parts, label_names=("absent", "present"), task="binary")


@pytest.fixture
def features() -> FeatureSplits:
    return gaussian_features()


@pytest.fixture
def make_features():
    """The ``gaussian_features`` factory, for tests that need other shapes or tasks."""
    return gaussian_features


@pytest.fixture
def make_images():
    """The ``bright_dark_images`` factory."""
    return bright_dark_images


@pytest.fixture(scope="session")
def breastmnist_npz(shared_data: Path) -> dict[str, np.ndarray]:
    path = shared_data / "breastmnist" / "breastmnist.npz"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def breastmnist_images(breastmnist_npz: dict[str, np.ndarray]) -> ImageSplits:
    d = breastmnist_npz
    return ImageSplits(
        d["train_images"][:, None], d["train_labels"], d["val_images"][:, None], d["val_labels"],
        d["test_images"][:, None], d["test_labels"], label_names=("malignant", "normal or benign"), task="binary",
    )
