"""Image-synthesis metrics on feature vectors: Frechet distance and k-NN precision / recall.

Both take (N, D) feature arrays of real and generated images from the *same* encoder (which
encoder is part of the result: distances from different feature spaces do not compare).

- ``frechet_distance``: ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)), the FID formula
  (Heusel et al. 2017) in any feature space; lower is better.
- ``precision_recall``: improved precision and recall (Kynkaanniemi et al. 2019): each set's
  manifold is the union of balls reaching each point's k-th nearest neighbour in that set;
  precision = share of generated points inside the real manifold, recall = share of real points
  inside the generated manifold; higher is better.
"""

from __future__ import annotations

import numpy as np

from medfm.errors import InputError

# metric name -> True when higher is better; ``*_real``: the same metric for held-out real images
# (the reference a synthetic set is compared with); ``auroc_tstr`` / ``auroc_trtr``: a probe
# trained on synthetic / real features, tested on real ones (``medfm.tasks.synthesis``)
HIGHER_IS_BETTER: dict[str, bool | None] = {
    "frechet_distance": False, "frechet_distance_real": False,
    "precision": True, "recall": True, "precision_real": True, "recall_real": True,
    "auroc_tstr": True, "auroc_trtr": True,
}


def _check(a: np.ndarray, b: np.ndarray, min_n: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise InputError(f"feature arrays must be (N, D) with the same D, got {a.shape} and {b.shape}")
    if len(a) < min_n or len(b) < min_n:
        raise InputError(f"need at least {min_n} feature vectors per set, got {len(a)} and {len(b)}")
    return a, b


def frechet_from_stats(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Frechet distance between Gaussians N(mu1, s1) and N(mu2, s2).

    Tr((s1 s2)^(1/2)) is the sum of square roots of the eigenvalues of s1 s2 (real and >= 0 for
    covariance matrices up to round-off), which avoids scipy's ``sqrtm`` and its complex parts.
    """
    diff = mu1 - mu2
    eig = np.linalg.eigvals(s1 @ s2)
    tr_sqrt = float(np.sqrt(np.clip(eig.real, 0.0, None)).sum())
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """Frechet distance between the Gaussian fits of (N, D) ``real`` and (M, D) ``fake`` features."""
    a, b = _check(real, fake, 2)
    return frechet_from_stats(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def _kth_radii(x: np.ndarray, k: int) -> np.ndarray:
    d = np.sqrt(np.maximum(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1), 0.0))
    return np.sort(d, axis=1)[:, k]  # column 0 is the point itself


def _inside(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.maximum(((points[:, None, :] - centres[None, :, :]) ** 2).sum(-1), 0.0))
    return (d <= radii[None, :]).any(axis=1)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """Improved precision / recall of ``fake`` against ``real`` with k-NN manifolds."""
    a, b = _check(real, fake, k + 1)
    precision = float(_inside(b, a, _kth_radii(a, k)).mean())
    recall = float(_inside(a, b, _kth_radii(b, k)).mean())
    return {"precision": precision, "recall": recall}
