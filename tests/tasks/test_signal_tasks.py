"""Signal tasks: 1D views, self-supervised pretraining (SimCLR from medfm.tasks.pretrain),
encoders, EC57 detection on MIT-BIH 100, and a tiny pretrain + probe + fine-tune run end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("neurokit2")
pytest.importorskip("lightly")

from medfm.models.signal import SIGNAL_ENCODERS, create_signal_encoder  # noqa: E402
from medfm.tasks.signals.augment import SignalViewConfig, random_view  # noqa: E402
from medfm.tasks.signals.pretrain import SignalPretrainConfig, pretrain_signal_encoder  # noqa: E402


def _record_100(shared_data: Path) -> Path:
    rec = shared_data / "ecg_physionet" / "mitdb" / "100"
    if not rec.with_suffix(".hea").is_file():
        pytest.skip("ecg_physionet not in the shared data")
    return rec


@pytest.mark.parametrize("name", SIGNAL_ENCODERS.names())
def test_encoders_map_windows_to_embeddings(name: str) -> None:
    enc = create_signal_encoder(name, in_channels=2, seed=0)
    out = enc(torch.randn(3, 2, 240))
    assert out.shape == (3, enc.embed_dim) and torch.isfinite(out).all()


def test_random_view_keeps_shape_and_changes_signal() -> None:
    x = torch.randn(4, 1, 200)
    g = torch.Generator().manual_seed(0)
    v = random_view(x, SignalViewConfig(), g)
    assert v.shape == x.shape and not torch.allclose(v, x)
    same = random_view(x, SignalViewConfig(crop=1.0, scale=0.0, noise=0.0, wander=0.0), g)
    torch.testing.assert_close(same, x, atol=1e-4, rtol=0)  # grid_sample interpolation round-off


@pytest.mark.parametrize("method", ["simclr", "dino"])
def test_pretraining_updates_the_encoder(method: str) -> None:
    enc = create_signal_encoder("signal/transformer1d-tiny", seed=0)
    before = [p.detach().clone() for p in enc.parameters()]
    x = np.random.default_rng(0).normal(size=(32, 1, 120)).astype(np.float32)
    hist = pretrain_signal_encoder(enc, x, SignalPretrainConfig(method=method, epochs=2, batch_size=16), seed=0)
    assert len(hist["losses"]) == 2 and all(np.isfinite(hist["losses"]))
    assert any(not torch.equal(a, b) for a, b in zip(before, enc.parameters()))


def test_detection_on_mitdb_100_meets_ec57_goal(shared_data: Path) -> None:
    from medfm.io.signal import read_wfdb
    from medfm.tasks.signals.detect import DetectConfig, run_detection

    sig = read_wfdb(_record_100(shared_data), annotations="atr")
    cfg = DetectConfig(candidates=("neurokit", "pantompkins1985"))
    res = run_detection(sig, cfg)
    test = res.test[res.chosen]
    # record 100 after the 5-minute learning period: 1902 reference beats
    assert test.tp + test.fn == 1902
    assert test.scores["sensitivity"] >= 0.995 and test.scores["positive_predictivity"] >= 0.995
    assert res.chosen in cfg.candidates


@pytest.mark.slow
def test_tiny_pretrain_and_probe_end_to_end(shared_data: Path) -> None:
    from medfm.data.signals import BeatDatasetConfig
    from medfm.tasks.signals.bench import SignalBenchConfig, SignalFinetuneConfig, run_signal_bench

    _record_100(shared_data)
    cfg = SignalBenchConfig(
        record="ecg_physionet/mitdb/100", data=BeatDatasetConfig(fs=60.0), encoders=("signal/transformer1d-tiny",),
        pretrain=("simclr",), protocols=("linear_probe", "prototype", "finetune"), shots=(None,), n_boot=50,
        pretrain_cfg=SignalPretrainConfig(epochs=1, batch_size=256), finetune=SignalFinetuneConfig(epochs=1),
    )
    records, summary = run_signal_bench(cfg, data_dir=str(shared_data))
    assert summary["counts"]["test"]["A"] == 8
    cells = {(r.model, r.protocol) for r in records}
    assert ("features/rr-intervals", "linear_probe") in cells
    assert ("signal/transformer1d-tiny+simclr", "finetune") in cells
    assert len(records) == 2 + 2 * 3  # rr baseline x 2 feature protocols + 2 inits x 3 protocols
    for r in records:
        auroc = r.metrics["auroc"]
        assert 0.0 <= auroc.value <= 1.0 and r.n == 456
        assert auroc.ci_low is not None and auroc.ci_low <= auroc.value <= auroc.ci_high
        assert r.provenance["data_checksum"] and r.provenance["config"]["record"] == "ecg_physionet/mitdb/100"
    # RR intervals are the textbook cue for atrial premature beats: the baseline must find them
    rr = next(r for r in records if r.model == "features/rr-intervals" and r.protocol == "linear_probe")
    assert rr.metrics["auroc"].value > 0.8
