"""MedMNIST splits from the real official files: counts, arrays, samples, checksums."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medfm.data import load_dataset, verify
from medfm.data.medmnist import npz_counts
from medfm.errors import ConfigError


def test_breastmnist_splits(shared_data: Path) -> None:
    ds = load_dataset("breastmnist", data_dir=shared_data)
    assert ds.counts() == {"train": 546, "val": 78, "test": 156}
    train = ds.split("train")
    x = train.images()
    assert x.shape == (546, 1, 28, 28) and x.dtype == np.uint8 and x.flags.c_contiguous
    y = train.labels
    assert y.shape == (546,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [147, 399]  # SOURCE.md: train 147/399
    assert np.bincount(ds.split("test").labels).tolist() == [42, 114]
    s = train[3]
    assert s.id == "train/3" and s.label == int(y[3])
    assert s.image is not None and s.image.array.shape == (1, 28, 28)
    np.testing.assert_array_equal(s.image.array, x[3])
    assert len(train.ids) == 546 and train.ids[0] == "train/0"
    assert train.checksum() != ds.split("val").checksum()
    assert ds.checksum() == load_dataset("breastmnist", data_dir=shared_data).checksum()


def test_retinamnist_is_ordinal_rgb(shared_data: Path) -> None:
    ds = load_dataset("retinamnist", data_dir=shared_data)
    assert ds.card.task == "ordinal"
    assert ds.counts() == {"train": 1080, "val": 120, "test": 400}
    x = ds.split("val").images()
    assert x.shape == (120, 3, 28, 28) and x.dtype == np.uint8
    assert np.bincount(ds.split("test").labels).tolist() == [174, 46, 92, 68, 20]


def test_adrenalmnist3d_28_and_64(shared_data: Path) -> None:
    ds = load_dataset("adrenalmnist3d", data_dir=shared_data)
    assert ds.counts() == {"train": 1188, "val": 98, "test": 298}
    x = ds.split("val").images()
    assert x.shape == (98, 1, 28, 28, 28) and x.dtype == np.uint8
    assert np.bincount(ds.split("val").labels).tolist() == [76, 22]
    # 64^3: counts from the array headers, without decompressing ~390 MB
    path = shared_data / "adrenalmnist3d" / "adrenalmnist3d_64.npz"
    assert npz_counts(path) == {"train": 1188, "val": 98, "test": 298}
    ds64 = load_dataset("adrenalmnist3d_64", data_dir=shared_data)
    assert ds64.counts() == {"train": 1188, "val": 98, "test": 298}
    assert ds64.checksum() != ds.checksum()


@pytest.mark.slow
def test_adrenalmnist3d_64_arrays(shared_data: Path) -> None:
    ds = load_dataset("adrenalmnist3d_64", data_dir=shared_data)
    x = ds.split("val").images()
    assert x.shape == (98, 1, 64, 64, 64) and x.dtype == np.uint8


def test_unknown_split_and_option(shared_data: Path) -> None:
    ds = load_dataset("breastmnist", data_dir=shared_data)
    with pytest.raises(ConfigError, match="Did you mean 'test'"):
        ds.split("tset")
    with pytest.raises(ConfigError, match="unknown option"):
        load_dataset("breastmnist", data_dir=shared_data, size=64)


def test_verify_reports_counts(shared_data: Path) -> None:
    r = verify("breastmnist", shared_data)
    assert r["status"] == "ok" and r["checksum_ok"] and r["readable"]
    assert r["counts"] == {"train": 546, "val": 78, "test": 156}
    absent = verify("pathmnist_224", shared_data)
    assert absent["status"] == "absent" and "zenodo.org" in absent["error"]
