"""Synthesis: tiny diffusion model training/sampling and the evaluation protocol (kept CPU-small)."""

from __future__ import annotations

import numpy as np
import pytest

from medfm.errors import InputError
from medfm.tasks.synthesis import ClassConditionalDiffusion, DiffusionConfig, SynthConfig, evaluate_synthetic

TINY = DiffusionConfig(channels=(8, 16), train_steps=4, batch_size=8, sample_steps=2, num_train_timesteps=50)


def _toy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 1 has a bright square, class 0 is dark noise; (n, 1, 16, 16) uint8."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(40, 10, (n, 1, 16, 16))
    x[y == 1, :, 4:12, 4:12] += 150
    return np.clip(x, 0, 255).astype(np.uint8), y


@pytest.mark.slow
def test_diffusion_trains_and_samples_deterministically() -> None:
    x, y = _toy(32, 0)
    model = ClassConditionalDiffusion(TINY).fit(x, y)
    assert len(model.losses) == 4 and all(np.isfinite(model.losses))
    a = model.sample(np.array([0, 1, 1]), seed=5)
    assert a.shape == (3, 1, 16, 16) and a.dtype == np.uint8
    assert np.array_equal(a, model.sample(np.array([0, 1, 1]), seed=5))
    with pytest.raises(InputError):
        model.sample(np.array([2]))


@pytest.mark.slow
def test_evaluation_separates_good_from_bad_synthetic() -> None:
    x_tr, y_tr = _toy(48, 1)
    x_te, y_te = _toy(40, 2)
    cfg = SynthConfig(feature_encoder="test/vit-tiny-timm", n_boot=50, k=3, device="cpu")
    good_x, good_y = _toy(48, 3)  # "synthetic" drawn from the real distribution
    rng = np.random.default_rng(4)
    bad_x = rng.integers(0, 255, (48, 1, 16, 16)).astype(np.uint8)  # noise
    m_good, _ = evaluate_synthetic(x_tr, y_tr, x_te, y_te, good_x, good_y, cfg)
    m_bad, _ = evaluate_synthetic(x_tr, y_tr, x_te, y_te, bad_x, good_y, cfg)
    m_swapped, _ = evaluate_synthetic(x_tr, y_tr, x_te, y_te, good_x, 1 - good_y, cfg)  # wrong class per image
    assert m_good["frechet_distance"].value < m_bad["frechet_distance"].value
    assert m_good["auroc_tstr"].value > 0.9 and m_swapped["auroc_tstr"].value < 0.5
    assert m_good["precision"].value > m_bad["precision"].value
    assert m_good["auroc_trtr"].ci_low is not None


@pytest.mark.slow
def test_run_synthesis_on_breastmnist(shared_data) -> None:
    from medfm.tasks.synthesis import run_synthesis

    cfg = SynthConfig(diffusion=DiffusionConfig(channels=(8, 16), train_steps=3, batch_size=8, sample_steps=2),
                      feature_encoder="test/vit-tiny-timm", n_per_class=8, max_train=64, n_boot=20, device="cpu")
    rec, synth, y_syn, _ = run_synthesis("breastmnist", cfg, data_dir=str(shared_data))
    assert synth.shape == (16, 1, 28, 28) and rec.n == 156
    assert rec.extra["feature_encoder"] == "test/vit-tiny-timm"
    assert {"frechet_distance", "frechet_distance_real", "auroc_tstr", "auroc_trtr"} <= set(rec.metrics)
