"""One direction table per metrics module, combined in ``medfm.metrics``: no guessing from names."""

from __future__ import annotations

import numpy as np
import pytest

from medfm import metrics
from medfm.errors import ConfigError
from medfm.metrics import classification, image_synthesis, segmentation, survival, text


@pytest.mark.parametrize("name", ["ibs", "hd95_mm", "assd_mm", "frechet_distance", "ece", "calibration_error@q50", "hc_mad_mm"])
def test_lower_is_better_metrics_their_modules_declare(name: str) -> None:
    assert metrics.higher_is_better(name) is False


@pytest.mark.parametrize("name", ["auroc", "dice", "nsd", "c_harrell", "td_auc@q50", "bleu4", "rouge_l", "precision", "auroc_tstr"])
def test_higher_is_better_metrics(name: str) -> None:
    assert metrics.higher_is_better(name) is True


def test_every_module_table_is_in_the_combined_one() -> None:
    for module in (classification, segmentation, survival, text, image_synthesis):
        for name, direction in module.HIGHER_IS_BETTER.items():
            assert metrics.DIRECTIONS[name] == direction, (module.__name__, name)


def test_qualified_names_rank_as_their_base_metric() -> None:
    assert metrics.higher_is_better("dice[2]") is True
    assert metrics.higher_is_better("hd95_mm[1]") is False
    assert metrics.higher_is_better("accuracy[qtype=ORGAN]") is True


def test_unknown_or_descriptive_metric_is_an_error_not_a_guess() -> None:
    with pytest.raises(ConfigError, match="unknown metric 'mean_error_score'"):
        metrics.higher_is_better("mean_error_score")
    with pytest.raises(ConfigError, match="Did you mean 'hd95_mm'"):
        metrics.higher_is_better("hd95mm")
    with pytest.raises(ConfigError, match="descriptive"):
        metrics.higher_is_better("volume_pred_ml")
    assert metrics.direction("volume_pred_ml") is None
    assert not metrics.is_ranked("volume_pred_ml") and not metrics.is_ranked("nope") and metrics.is_ranked("ibs")


def test_two_modules_ranking_one_name_oppositely_is_refused() -> None:
    with pytest.raises(ConfigError, match="'f1'"):
        metrics._combine({"a": {"f1": True}, "b": {"f1": False}})
    assert metrics._combine({"a": {"f1": True}, "b": {"f1": True, "x": None}}) == {"f1": True, "x": None}


def test_every_metric_the_metric_functions_return_has_a_direction() -> None:
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    p = np.clip(y * 0.6 + rng.uniform(0, 0.4, 40), 0, 1)
    names = set(classification.compute_metrics(y, p, "binary", n_boot=0))
    gt = np.zeros((8, 8), bool)
    gt[2:6, 2:6] = True
    names |= set(segmentation.binary_metrics(gt, gt, (1.0, 1.0)))
    names |= set(text.bleu(["a b c d"], ["a b c d"]))
    for name in names:
        metrics.direction(name)  # raises for an undeclared one
