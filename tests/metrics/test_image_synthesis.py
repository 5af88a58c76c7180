"""Frechet distance against torchmetrics' FID formula and closed forms; k-NN precision/recall by hand."""

from __future__ import annotations

import numpy as np
import pytest

from medfm.errors import InputError
from medfm.metrics.image_synthesis import frechet_distance, frechet_from_stats, precision_recall


def test_frechet_matches_torchmetrics() -> None:
    import torch
    from torchmetrics.image.fid import _compute_fid

    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 6))
    b = rng.normal(0.5, 1.5, size=(150, 6)) @ rng.normal(size=(6, 6))
    ours = frechet_distance(a, b)
    ref = _compute_fid(
        torch.tensor(a.mean(0)), torch.tensor(np.cov(a, rowvar=False)),
        torch.tensor(b.mean(0)), torch.tensor(np.cov(b, rowvar=False)),
    )
    assert ours == pytest.approx(float(ref), rel=1e-6)


def test_frechet_closed_form() -> None:
    # diagonal Gaussians: |mu1-mu2|^2 + sum (sqrt(v1) - sqrt(v2))^2
    mu1, mu2 = np.array([0.0, 1.0]), np.array([2.0, 1.0])
    v1, v2 = np.array([1.0, 4.0]), np.array([9.0, 1.0])
    expected = 4.0 + (1 - 3) ** 2 + (2 - 1) ** 2
    assert frechet_from_stats(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected)
    x = np.random.default_rng(1).normal(size=(50, 3))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)


def test_precision_recall_by_hand() -> None:
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    # k=1 radii of real: 1 each; of the 4 fakes only 0.5 lies inside -> precision 0.25
    fake = np.array([[0.5], [10.0], [11.0], [12.0]])
    pr = precision_recall(real, fake, k=1)
    assert pr["precision"] == pytest.approx(0.25)
    # fake radii (k=1): 0.5->9.5, 10->1, 11->1, 12->1; ball around 0.5 of radius 9.5 covers all real
    assert pr["recall"] == pytest.approx(1.0)
    same = precision_recall(real, real, k=1)
    assert same == {"precision": 1.0, "recall": 1.0}
    with pytest.raises(InputError):
        precision_recall(real[:1], fake, k=1)
