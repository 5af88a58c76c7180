"""Reports rank by each metric's declared direction and say how complete their results are."""

from __future__ import annotations

import json

import pytest

from medfm.errors import ConfigError
from medfm.report import build_report, leaderboard
from medfm.report.survival import metric_table
from medfm.results import Completeness, MetricValue, Record, completeness_text, load_results, read_results, write_results


def _rec(model: str, metrics: dict[str, float], protocol: str = "p", dataset: str = "d") -> Record:
    return Record(dataset=dataset, split="test", model=model, protocol=protocol,
                  metrics={k: MetricValue(v) for k, v in metrics.items()}, n=10)


@pytest.mark.parametrize("metric", ["ibs", "hd95_mm", "assd_mm", "frechet_distance"])
def test_lower_is_better_metrics_rank_smallest_first(metric: str) -> None:
    recs = [_rec("worse", {metric: 9.0}), _rec("best", {metric: 1.0}), _rec("middle", {metric: 4.0})]
    rows = leaderboard(recs, metric=metric)["d"]
    assert [r.model for r in rows] == ["best", "middle", "worse"]


def test_default_ranking_of_segmentation_and_synthesis_records() -> None:
    seg = [_rec("a", {"dice": 0.7, "hd95_mm": 3.0}), _rec("b", {"dice": 0.9, "hd95_mm": 5.0})]
    assert [r.model for r in leaderboard(seg)["d"]] == ["b", "a"]  # by dice, higher first
    syn = [_rec("a", {"frechet_distance": 30.0}), _rec("b", {"frechet_distance": 10.0})]
    assert [r.model for r in leaderboard(syn)["d"]] == ["b", "a"]


def test_unknown_metric_is_refused_not_guessed() -> None:
    with pytest.raises(ConfigError, match="unknown metric 'wellness'"):
        leaderboard([_rec("a", {"wellness": 1.0}), _rec("b", {"wellness": 2.0})])


def test_survival_table_bolds_by_declared_direction() -> None:
    recs = [_rec("m1", {"c_harrell": 0.7, "ibs": 0.20}, protocol="survival"),
            _rec("m2", {"c_harrell": 0.6, "ibs": 0.15}, protocol="survival")]
    html = metric_table(recs)
    assert "<b>0.700</b>" in html and "<b>0.150</b>" in html and "<b>0.200</b>" not in html


def _cls_records(n: int) -> list[Record]:
    return [_rec(f"m{i}", {"auroc": 0.6 + 0.01 * i}, dataset="breastmnist") for i in range(n)]


def test_incomplete_results_carry_and_show_their_completeness(tmp_path) -> None:
    path = write_results(tmp_path / "results.json", _cls_records(3), {"x": 1},
                         Completeness(8, 3, ("cell 4", "cell 5", "cell 6", "cell 7", "cell 8")))
    res = load_results(path)
    assert res.completeness == Completeness(8, 3, ("cell 4", "cell 5", "cell 6", "cell 7", "cell 8"))
    assert not res.completeness.complete and "3 of 8" in res.completeness.text()
    html = build_report(path, tmp_path / "r.html").read_text()
    assert "id='completeness-warning'" in html and "INCOMPLETE: 3 of 8 results written" in html
    assert "cell 4" in html


def test_complete_results_have_no_warning(tmp_path) -> None:
    path = write_results(tmp_path / "results.json", _cls_records(2), {})
    assert load_results(path).completeness == Completeness(2, 2)
    html = build_report(path, tmp_path / "r.html").read_text()
    assert "completeness-warning" not in html and "complete: 2 of 2 results" in html


def test_old_results_file_without_completeness_reads_and_says_unknown(tmp_path) -> None:
    path = write_results(tmp_path / "results.json", _cls_records(2), {})
    doc = json.loads(path.read_text())
    del doc["completeness"]
    for rec in doc["records"]:  # metrics as old files wrote them: value and CI only
        rec["metrics"] = {k: {"value": v["value"], "ci_low": None, "ci_high": None} for k, v in rec["metrics"].items()}
    path.write_text(json.dumps(doc))
    spec, records = read_results(path)
    assert len(records) == 2 and load_results(path).completeness is None
    assert "completeness unknown" in completeness_text(None)
    html = build_report(path, tmp_path / "r.html").read_text()
    assert "completeness unknown" in html and "completeness-warning" in html


def test_a_number_edited_in_results_json_is_flagged(tmp_path) -> None:
    path = write_results(tmp_path / "results.json", _cls_records(3), {})
    assert load_results(path).problems == ()
    doc = json.loads(path.read_text())
    doc["records"][1]["metrics"]["auroc"]["value"] = 0.9999
    path.write_text(json.dumps(doc))
    res = load_results(path)
    assert res.changed == (1,) and "record 1 (breastmnist m1 p None 0) was changed" in res.problems[0]
    html = build_report(path, tmp_path / "r.html").read_text()
    assert "class='warn'>Warning: record 1" in html
    del doc["records"][2]
    path.write_text(json.dumps(doc))
    assert "added or removed" in load_results(path).problems[0]


def test_only_descriptive_metrics_are_listed_unranked() -> None:
    from medfm.report import primary_metric

    recs = [_rec("a", {"volume_pred_ml": 3.0}), _rec("b", {"volume_pred_ml": 1.0})]
    assert primary_metric(recs) is None
    assert {r.model for r in leaderboard(recs)["d"]} == {"a", "b"}


def test_one_formatter_for_a_value_and_its_ci() -> None:
    from medfm.results import format_ci, format_metric

    assert format_metric(0.87123, 0.8, 0.93) == "0.871 [0.800, 0.930]"
    assert format_metric(0.87123, 0.8, 0.93, 3, 2) == "0.871 [0.80, 0.93]"
    assert format_metric(0.5, None, 0.9) == "0.500" and format_metric(float("nan"), 0.1, 0.2) == "n/a"
    assert format_ci(0.1, float("nan")) == "" and format_ci(0.1, 0.2, 1) == "[0.1, 0.2]"
    assert MetricValue(2.5, 2.0, 3.0, n=5, n_undefined=2).text(1) == "2.5 [2.0, 3.0] (2 undef.)"
