"""Spec parsing and expansion into cells: defaults, skips with notes, refused combinations."""

from __future__ import annotations

import pytest

from medfm.bench import BenchSpec, ProtocolInfo, expand, parse_shots
from medfm.bench.spec import Cell
from medfm.errors import ConfigError

PROTOS = [
    ProtocolInfo("knn", "features"), ProtocolInfo("linear_probe", "features"), ProtocolInfo("zero_shot", "model+text"),
    ProtocolInfo("finetune", "model+images"), ProtocolInfo("scratch", "images"),
]
CAPS = {"random/vit-b16": frozenset({"image_encoder"}), "test/clip-tiny": frozenset({"image_encoder", "text_encoder"})}


def caps(model: str) -> frozenset[str]:
    if model not in CAPS:
        raise ConfigError(f"unknown model '{model}'")
    return CAPS[model]


def test_parse_shots() -> None:
    assert parse_shots("1, 4,all") == [1, 4, "all"]
    with pytest.raises(ConfigError, match="positive integers"):
        parse_shots("0,4")
    with pytest.raises(ConfigError):
        parse_shots("four")


def test_default_grid_skips_with_notes_and_adds_scratch_row() -> None:
    spec = BenchSpec(shots=[1, "all"], seeds=3, full_data_seeds=1)
    cells, notes = expand(spec, PROTOS, caps, lambda: ["random/vit-b16"])
    combos = {(c.model, c.protocol) for c in cells}
    assert combos == {("random/vit-b16", "knn"), ("random/vit-b16", "linear_probe"), ("scratch/resnet18", "scratch")}
    assert any("zero_shot" in n and "text_encoder" in n for n in notes)
    assert any("finetune" in n for n in notes)  # left out of the default grid, said so
    # 3 seeds for 1-shot, 1 seed for all, per (model, protocol)
    assert len(cells) == 3 * (3 + 1)
    assert {c.seed for c in cells if c.shots is None} == {0}
    assert {c.seed for c in cells if c.shots == 1} == {0, 1, 2}


def test_protocol_shots_override_the_grid_for_one_protocol() -> None:
    spec = BenchSpec(shots=[1, 4, "all"], seeds=3, full_data_seeds=1, protocol_shots={"scratch": ["all"]})
    cells, _ = expand(spec, PROTOS, caps, lambda: ["random/vit-b16"])
    assert {(c.shots, c.seed) for c in cells if c.protocol == "scratch"} == {(None, 0)}
    assert {c.shots for c in cells if c.protocol == "knn"} == {1, 4, None}
    with pytest.raises(ConfigError, match="protocol_shots names unknown protocol 'scrach'"):
        expand(BenchSpec(protocol_shots={"scrach": ["all"]}), PROTOS, caps, lambda: ["random/vit-b16"])
    with pytest.raises(ConfigError, match="protocol_shots.scratch must be a non-empty list"):
        BenchSpec(protocol_shots={"scratch": []})
    with pytest.raises(ConfigError, match="positive integers"):
        BenchSpec(protocol_shots={"scratch": [0]})


def test_explicit_combination_that_does_not_fit_is_an_error() -> None:
    spec = BenchSpec(models=["random/vit-b16"], protocols=["zero_shot"])
    with pytest.raises(ConfigError, match="zero_shot.*text_encoder"):
        expand(spec, PROTOS, caps)


def test_explicit_mixed_grid_skips_only_misfits() -> None:
    spec = BenchSpec(models=["random/vit-b16", "test/clip-tiny"], protocols=["zero_shot", "knn"], shots=["all"], seeds=1)
    cells, notes = expand(spec, PROTOS, caps)
    assert {(c.model, c.protocol) for c in cells} == {
        ("random/vit-b16", "knn"), ("test/clip-tiny", "knn"), ("test/clip-tiny", "zero_shot"),
    }
    assert any("random/vit-b16" in n for n in notes)


def test_unknown_protocol_suggests() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'linear_probe'"):
        expand(BenchSpec(protocols=["linear_prob"]), PROTOS, caps)


def test_scratch_model_name_selects_arch_and_config_overrides() -> None:
    spec = BenchSpec(
        models=["scratch/resnet34"], protocols=["scratch"], shots=["all"], seeds=1,
        protocol_config={"scratch": {"epochs": 2}},
    )
    cells, _ = expand(spec, PROTOS, caps)
    assert [(c.model, c.config) for c in cells] == [("scratch/resnet34", {"epochs": 2, "arch": "resnet34"})]


def test_spec_from_yaml_refuses_unknown_keys(tmp_path) -> None:
    good = tmp_path / "spec.yaml"
    good.write_text("datasets: [breastmnist]\nmodels: [random/vit-b16]\nshots: [1, all]\nseeds: 2\n")
    spec = BenchSpec.from_file(str(good))
    assert spec.shots == [1, "all"] and spec.seeds == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [breastmnist]\n")
    with pytest.raises(ConfigError, match="unknown key"):
        BenchSpec.from_file(str(bad))


def test_cache_key_depends_on_config_data_and_weights_only() -> None:
    a = Cell("d", "m", "knn", 4, 0, {"k": 5}, data_dir="/x", batch_size=8)
    b = Cell("d", "m", "knn", 4, 0, {"k": 5}, data_dir="/y", batch_size=64)
    assert a.cache_key("c1", "w1") == b.cache_key("c1", "w1")
    assert a.cache_key("c1", "w1") != a.cache_key("c2", "w1")
    assert a.cache_key("c1", "w1") != a.cache_key("c1", "w2")
    assert a.cache_key("c1", "w1") != Cell("d", "m", "knn", 4, 0, {"k": 7}).cache_key("c1", "w1")
    assert a.cache_key("c1", "w1") != Cell("d", "m", "knn", 4, 1, {"k": 5}).cache_key("c1", "w1")


def test_label_free_protocol_runs_once_and_scratch_arch_is_checked() -> None:
    protos = [ProtocolInfo("zero_shot", "model+text", uses_labels=False), ProtocolInfo("scratch", "images", config_keys=frozenset({"epochs"}))]
    spec = BenchSpec(models=["test/clip-tiny"], protocols=["zero_shot"], shots=[1, 4, "all"], seeds=3)
    cells, notes = expand(spec, protos, caps)
    assert [(c.shots, c.seed) for c in cells] == [(None, 0)]
    assert any("no labelled images" in n for n in notes)
    with pytest.raises(ConfigError, match="trains resnet18 only"):
        expand(BenchSpec(models=["scratch/resnet50"], protocols=["scratch"]), protos, caps)


def test_feature_protocol_with_only_a_scratch_model_is_refused() -> None:
    spec = BenchSpec(models=["scratch/resnet18"], protocols=["knn", "scratch"])
    with pytest.raises(ConfigError, match="knn.*from-scratch"):
        expand(spec, PROTOS, caps)


def test_docstring_spec_example_loads(tmp_path) -> None:
    import textwrap

    import medfm.bench.spec as spec_module

    doc = spec_module.__doc__
    block = doc[doc.index("    datasets:"):doc.index("    n_boot: 1000") + len("    n_boot: 1000")]
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(block) + "\n")
    spec = BenchSpec.from_file(str(path))
    assert spec.models == ["random/vit-b16", "scratch/resnet18"] and spec.full_data_seeds == 1
    assert spec.protocol_config == {"scratch": {"epochs": 20}}
