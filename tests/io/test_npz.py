"""MedMNIST archives: the real breast, adrenal (3D) and retina files, and wrong files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medfm.errors import InputError
from medfm.io import read_medmnist_npz


@pytest.mark.parametrize(
    ("name", "image_shape", "n"),
    [
        ("breastmnist/breastmnist.npz", (28, 28), {"train": 546, "val": 78, "test": 156}),
        ("adrenalmnist3d/adrenalmnist3d.npz", (28, 28, 28), {"train": 1188, "val": 98, "test": 298}),
        ("retinamnist/retinamnist.npz", (28, 28, 3), {"train": 1080, "val": 120, "test": 400}),
    ],
)
def test_real_medmnist_archives(shared_data: Path, name: str, image_shape: tuple[int, ...], n: dict[str, int]) -> None:
    path = shared_data / name
    if not path.is_file():
        pytest.skip(f"{name} not in the shared data")
    splits = read_medmnist_npz(path)
    assert list(splits) == ["train", "val", "test"]
    with np.load(path) as raw:
        for split, (images, labels) in splits.items():
            assert images.shape == (n[split], *image_shape) and images.dtype == np.uint8
            assert labels.shape == (n[split], 1)
            np.testing.assert_array_equal(images, raw[f"{split}_images"])
            np.testing.assert_array_equal(labels, raw[f"{split}_labels"])


def _fake(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_missing_keys(tmp_path: Path) -> None:
    x, y = np.zeros((4, 8, 8), np.uint8), np.zeros((4, 1), np.uint8)
    path = _fake(tmp_path / "partial.npz", train_images=x, train_labels=y, val_images=x, val_labels=y, test_images=x)
    with pytest.raises(InputError, match=r"partial.npz: not a MedMNIST archive: missing test_labels"):
        read_medmnist_npz(path)


def test_mismatched_lengths(tmp_path: Path) -> None:
    x, y = np.zeros((4, 8, 8), np.uint8), np.zeros((4, 1), np.uint8)
    path = _fake(tmp_path / "bad.npz", train_images=x, train_labels=y[:3], val_images=x, val_labels=y, test_images=x, test_labels=y)
    with pytest.raises(InputError, match="bad.npz: train_images has 4 items but train_labels has 3"):
        read_medmnist_npz(path)


def test_not_an_npz(tmp_path: Path) -> None:
    txt = tmp_path / "labels.npz"
    txt.write_text("hello")
    with pytest.raises(InputError, match="labels.npz: not a readable .npz"):
        read_medmnist_npz(txt)
    npy = tmp_path / "single.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(InputError, match="single.npy: is a single .npy array"):
        read_medmnist_npz(npy)
    with pytest.raises(InputError, match="no such file"):
        read_medmnist_npz(tmp_path / "absent.npz")
