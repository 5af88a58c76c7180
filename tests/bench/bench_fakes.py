"""Fakes for the runner tests: a tiny in-memory dataset, features and a counting protocol."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medfm.bench import CellContext
from medfm.data.card import DatasetCard


class FakeSplit:
    def __init__(self, name: str, x: np.ndarray, y: np.ndarray) -> None:
        self.split, self.x, self._y = name, x, y

    @property
    def labels(self) -> np.ndarray:
        return self._y

    def images(self) -> np.ndarray:
        return (np.clip(self.x[:, :16].reshape(-1, 1, 4, 4), -2, 2) * 60 + 128).astype(np.uint8)

    def checksum(self) -> str:
        return f"{self.split}-{len(self._y)}-{int(self._y.sum())}"

    def __len__(self) -> int:
        return len(self._y)


class FakeDataset:
    """Two Gaussian classes in 16-D; ``drop_class`` removes a class from train."""

    def __init__(
        self, name: str = "fake", n: tuple[int, int, int] = (40, 20, 30), drop_class: int | None = None,
        empty: str | None = None, ndim: int = 2,
    ) -> None:
        self.card = DatasetCard(name=name, task="classification", modality="OT", labels=("neg", "pos"), license="test", ndim=ndim)
        rng = np.random.default_rng(0)
        self._splits = {}
        for split, m in zip(("train", "val", "test"), n, strict=True):
            m = 0 if split == empty else m
            y = np.arange(m) % 2
            if split == "train" and drop_class is not None:
                y = np.full(m, 1 - drop_class)
            x = rng.normal(size=(m, 16)) + y[:, None] * 1.5
            self._splits[split] = FakeSplit(split, x, y)

    def split(self, name: str) -> FakeSplit:
        return self._splits[name]

    def checksum(self) -> str:
        return "fake-" + "-".join(s.checksum() for s in self._splits.values())


@dataclass
class CountCfg:
    shrink: float = 0.0


class CountingProtocol:
    """Nearest-class-mean on features; counts calls and can fail after ``fail_after`` calls."""

    needs = "features"
    config_cls = CountCfg

    def __init__(self, name: str = "count", fail_after: int | None = None) -> None:
        self.name, self.calls, self.fail_after = name, 0, fail_after

    def make_config(self, values: dict | None = None) -> CountCfg:
        return CountCfg(**(values or {}))

    def run(self, data, cfg: CountCfg, seed: int, shots: int | None):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        from medfm.tasks.classification import Predictions, subsample_shots

        self.calls += 1
        idx = subsample_shots(data.train_y, shots, seed, data.n_classes)
        x, y = data.train_x[idx], data.train_y[idx]
        means = np.stack([x[y == c].mean(0) for c in range(data.n_classes)]) * (1 - cfg.shrink)
        d = -((data.test_x[:, None, :] - means[None]) ** 2).sum(-1)
        p = np.exp(d - d.max(1, keepdims=True))
        return Predictions(p / p.sum(1, keepdims=True), data.test_y, info={"shrink": cfg.shrink, "trained": False})


class TextProtocol(CountingProtocol):
    needs = "model+text"


class FakeContext(CellContext):
    """A CellContext over fake data and fake model cards (no zoo, no files)."""

    CAPS = {
        "fake/vision": frozenset({"image_encoder"}), "fake/clip": frozenset({"image_encoder", "text_encoder"}),
        "fake/vision3d": frozenset({"image_encoder"}),
    }

    def __init__(self, protocols: dict, datasets: dict | None = None) -> None:
        super().__init__(protocols=protocols)
        self.fake_datasets = datasets or {"fake": FakeDataset()}
        self.feature_calls = 0

    def dataset(self, name: str, data_dir: str | None):
        return self.fake_datasets[name]

    def capabilities(self, model: str) -> frozenset[str]:
        from medfm.errors import ConfigError

        if model not in self.CAPS:
            raise ConfigError(f"unknown model '{model}'")
        return self.CAPS[model]

    def default_models(self) -> list[str]:
        return ["fake/vision"]

    def input_ndim(self, model: str) -> int:
        return 3 if model.endswith("3d") else 2

    def weights_hash(self, model: str, precision: str) -> str | None:
        return None if model.startswith("scratch/") else f"hash-{model}"

    def weights_source(self, model: str, precision: str) -> str:
        return "fake"

    def adapter(self, model: str, precision: str):
        return object()

    def features(self, cell, split: str) -> np.ndarray:
        self.feature_calls += 1
        return self.dataset(cell.dataset, None).split(split).x
