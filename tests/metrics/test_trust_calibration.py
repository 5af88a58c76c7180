"""Calibration / conformal / risk-coverage metrics against torchmetrics, scikit-learn, MAPIE and hand checks."""

from __future__ import annotations

import numpy as np
import pytest

from medfm.errors import InputError
from medfm.metrics import calibration as cal


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _data(n: int = 400, c: int = 3, seed: int = 0, true_t: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Overconfident predictions: labels drawn from softmax(z / true_t), probabilities softmax(z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3.0, size=(n, c))
    p_true = _softmax(z / true_t)
    y = np.array([rng.choice(c, p=p) for p in p_true])
    return y, _softmax(z)


@pytest.mark.parametrize("c", [2, 4])
def test_ece_mce_match_torchmetrics(c: int) -> None:
    import torch
    from torchmetrics.functional.classification import multiclass_calibration_error

    y, p = _data(300, c, seed=c)
    args = (torch.tensor(p, dtype=torch.float64), torch.tensor(y), c)
    ref_ece = float(multiclass_calibration_error(*args, n_bins=15, norm="l1"))
    ref_mce = float(multiclass_calibration_error(*args, n_bins=15, norm="max"))
    assert cal.ece(y, p) == pytest.approx(ref_ece, abs=1e-6)
    assert cal.mce(y, p) == pytest.approx(ref_mce, abs=1e-6)
    assert cal.mce(y, p) >= cal.ece(y, p)


def test_brier_matches_sklearn() -> None:
    from sklearn.metrics import brier_score_loss

    y, p = _data(200, 2, seed=1)
    assert cal.brier(y, p) == pytest.approx(brier_score_loss(y, p[:, 1]), abs=1e-12)
    assert cal.brier(y, p[:, 1]) == pytest.approx(brier_score_loss(y, p[:, 1]), abs=1e-12)
    y3, p3 = _data(200, 3, seed=2)
    assert cal.brier(y3, p3) == pytest.approx(brier_score_loss(y3, p3, labels=[0, 1, 2], scale_by_half=True), abs=1e-12)


def test_nll_matches_sklearn_log_loss() -> None:
    from sklearn.metrics import log_loss

    y, p = _data(200, 3, seed=3)
    assert cal.nll(y, p) == pytest.approx(log_loss(y, p, labels=[0, 1, 2]), abs=1e-9)


def test_temperature_recovers_overconfidence_and_lowers_ece() -> None:
    y, p = _data(4000, 3, seed=4, true_t=2.0)
    t = cal.fit_temperature(y, p)
    assert 1.7 < t < 2.3
    scaled = cal.apply_temperature(p, t)
    assert np.allclose(scaled.sum(axis=1), 1.0)
    assert cal.nll(y, scaled) < cal.nll(y, p)
    assert cal.ece(y, scaled) < cal.ece(y, p)
    # the ranking (and so accuracy) is unchanged
    assert (scaled.argmax(axis=1) == p.argmax(axis=1)).all()


def test_temperature_of_calibrated_predictions_is_near_one() -> None:
    y, p = _data(4000, 3, seed=5, true_t=1.0)
    assert 0.9 < cal.fit_temperature(y, p) < 1.1


def test_conformal_sets_equal_mapie_lac() -> None:
    from mapie.classification import SplitConformalClassifier
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(900, 4))
    y = (x[:, 0] + 0.8 * x[:, 1] + rng.normal(0, 1.0, 900) > 0).astype(int) + (x[:, 2] > 0.8).astype(int)
    clf = LogisticRegression().fit(x[:300], y[:300])
    x_cal, y_cal, x_te = x[300:600], y[300:600], x[600:]
    mapie = SplitConformalClassifier(estimator=clf, confidence_level=0.9, conformity_score="lac", prefit=True)
    mapie.conformalize(x_cal, y_cal)
    _, ref = mapie.predict_set(x_te)
    q = cal.conformal_quantile(y_cal, clf.predict_proba(x_cal), alpha=0.1)
    ours = cal.prediction_sets(clf.predict_proba(x_te), q)
    assert ours.shape == ref[:, :, 0].shape
    assert (ours == ref[:, :, 0]).mean() > 0.995  # float ties at the threshold may differ
    assert 0 < ours.sum(axis=1).mean() < 3


def test_conformal_coverage_on_synthetic_data() -> None:
    """Marginal coverage averaged over many calibration draws is within [1-a, 1-a + 1/(n+1)]."""
    alpha, n_cal = 0.1, 200
    covs = []
    for seed in range(60):
        y, p = _data(n_cal + 1000, 3, seed=100 + seed)
        q = cal.conformal_quantile(y[:n_cal], p[:n_cal], alpha)
        covs.append(cal.set_coverage(y[n_cal:], cal.prediction_sets(p[n_cal:], q)))
    mean = float(np.mean(covs))
    assert 1 - alpha - 0.01 <= mean <= 1 - alpha + 1 / (n_cal + 1) + 0.01


def test_conformal_quantile_hand_checked() -> None:
    # scores 1 - p_true: 0.1, 0.2, ..., 0.9 (n = 9); alpha = 0.2 -> rank ceil(10 * 0.8) = 8 -> 0.8
    p_true = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    probs = np.stack([p_true, 1 - p_true], axis=1)
    y = np.zeros(9, dtype=int)
    assert cal.conformal_quantile(y, probs, 0.2) == pytest.approx(0.8)
    sets = cal.prediction_sets(np.array([[0.25, 0.75], [0.5, 0.5], [0.1, 0.9]]), 0.8)
    assert sets.tolist() == [[True, True], [True, True], [False, True]]


def test_conformal_too_few_samples_is_input_error() -> None:
    y, p = _data(5, 2)
    with pytest.raises(InputError, match="at least 9 calibration samples"):
        cal.conformal_quantile(y, p, alpha=0.1)


def test_risk_coverage_hand_checked() -> None:
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]])
    y = np.array([0, 0, 1, 1])  # confidences 0.9 ok, 0.8 wrong, 0.7 wrong, 0.6 ok
    rc = cal.risk_coverage(y, p)
    assert rc["coverage"].tolist() == [0.25, 0.5, 0.75, 1.0]
    assert np.allclose(rc["risk"], [0.0, 0.5, 2 / 3, 0.5])
    assert cal.aurc(y, p) == pytest.approx(np.mean([0.0, 0.5, 2 / 3, 0.5]))


def test_conformal_metrics_abstain_unless_singleton() -> None:
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    y = np.array([0, 0, 1])
    sets = np.array([[True, False], [False, True], [True, True]])
    m = cal.conformal_metrics(y, sets, p)
    assert m["coverage"] == pytest.approx(2 / 3)
    assert m["singleton_rate"] == pytest.approx(2 / 3)
    assert m["selective_risk"] == pytest.approx(0.5)
    assert m["set_size"] == pytest.approx(4 / 3)


def test_higher_is_better_covers_every_metric() -> None:
    y, p = _data(50, 2)
    assert set(cal.calibration_metrics(y, p)) <= set(cal.HIGHER_IS_BETTER)
    assert not cal.HIGHER_IS_BETTER["ece"]
