"""The pretrained fine-tuning benchmark's pieces: recipe grid parsing, validation-only choice, resizing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "pretrained_finetune.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("pretrained_finetune", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_parse_grid(bench) -> None:
    assert bench.parse_grid("full:1e-4, lora:1e-3:8") == [
        {"method": "full", "lr": 1e-4}, {"method": "lora", "lr": 1e-3, "lora_rank": 8}]


def test_choose_recipe_uses_validation_only(bench) -> None:
    rows = [{"recipe": "a", "val_auroc": 0.80, "test_auroc": 0.99},
            {"recipe": "b", "val_auroc": 0.85, "test_auroc": 0.50},
            {"recipe": "c", "val_auroc": 0.85, "test_auroc": 0.70}]
    assert bench.choose_recipe(rows)["recipe"] == "b"  # best val, first on ties; test ignored
    with pytest.raises(ValueError):
        bench.choose_recipe([])


def test_resized_changes_only_the_input_size(bench) -> None:
    from medfm.models import create_model

    model = create_model("random/efficientnet-lite0", precision="fp32")
    before = model.preprocess([np.full((1, 28, 28), 128, np.uint8)])
    card = model.card
    bench.resized(model, 64)
    after = model.preprocess([np.full((1, 28, 28), 128, np.uint8)])
    assert tuple(before.shape) == (1, 3, 224, 224) and tuple(after.shape) == (1, 3, 64, 64)
    assert model.card.preprocess.mean == card.preprocess.mean and model.card.id == card.id
    assert float(after.mean()) == pytest.approx(float(before.mean()), abs=1e-3)


@pytest.mark.parametrize("protocol", ["linear_probe", "knn", "prototype"])
def test_drawn_rows_equal_the_protocols_own_draw(protocol: str) -> None:
    """pretrained_probe.py --train-rows shots embeds only subsample_shots' rows and runs the
    protocol on them with shots=None: that must give the protocol's own k-shot result for the
    probes it runs (SUBSET_PROBES); the prototype probe centres on every training row, so it
    differs, which is why the script leaves it out."""
    spec = importlib.util.spec_from_file_location("pretrained_probe", SCRIPT.parent / "pretrained_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    same = protocol in probe.SUBSET_PROBES
    from medfm.tasks.classification import PROTOCOLS, FeatureSplits
    from medfm.tasks.classification.data import subsample_shots

    rng = np.random.default_rng(0)
    y_tr, y_va, y_te = rng.integers(0, 2, 60), rng.integers(0, 2, 20), rng.integers(0, 2, 30)
    x = {n: rng.normal(size=(len(y), 8)) + y[:, None] for n, y in (("tr", y_tr), ("va", y_va), ("te", y_te))}
    proto = PROTOCOLS.get(protocol)
    cfg = proto.make_config({})
    full = FeatureSplits(x["tr"], y_tr, x["va"], y_va, x["te"], y_te, label_names=("a", "b"), task="binary")
    for k, seed in ((1, 0), (4, 2)):
        rows = subsample_shots(y_tr, k, seed, n_classes=2)
        part = FeatureSplits(x["tr"][rows], y_tr[rows], x["va"], y_va, x["te"], y_te, label_names=("a", "b"),
                             task="binary")
        a = proto.run(full, cfg, seed=seed, shots=k)
        b = proto.run(part, cfg, seed=seed, shots=None)
        assert np.allclose(a.test_scores, b.test_scores) == same
        assert np.allclose(a.val_scores, b.val_scores) == same
