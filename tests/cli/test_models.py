"""``medfm models list | show | pull | import`` in-process."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from medfm.cli.main import main


def test_list_json_and_table(capsys) -> None:
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_id = {r["id"]: r for r in rows}
    assert by_id["test/vit-tiny-timm"]["weights"] == "random-init"
    assert by_id["medsiglip/448"]["gated"] is True
    assert by_id["dinov2/base"]["weights"] == "missing"
    sig = by_id["signal/resnet1d-small"]  # the 1D signal encoders are listed with the image zoo
    assert sig["capabilities"] == ["signal_encoder"] and sig["embed_dim"] == 128
    assert main(["models", "list"]) == 0
    assert "sam/vit-base" in capsys.readouterr().out


def test_show_json_and_unknown(capsys) -> None:
    assert main(["models", "show", "medsam/vit-base", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["preprocess"]["intensity"] == "minmax" and info["weights"] == "missing" and info["license"] == "Apache-2.0"
    assert main(["models", "show", "dinov2/base"]) == 0
    assert "medfm models pull dinov2/base" in capsys.readouterr().out
    assert main(["models", "show", "dinov3/base"]) == 2
    assert "Did you mean" in capsys.readouterr().err


def test_pull_offline_fails_fast_with_licence_first(capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    assert main(["models", "pull", "medsiglip/448"]) == 2
    assert time.perf_counter() - t0 < 2.0
    err = capsys.readouterr().err
    assert err.index("Health AI Developer Foundations") < err.index("medfm: error:")
    assert "GATED" in err and "HF_TOKEN" in err
    assert main(["models", "pull", "random/vit-b16"]) == 2


def test_import_hub_snapshot_and_medfm_folder(tmp_path: Path, capsys, monkeypatch) -> None:
    from medfm.models import create_model, save_model

    monkeypatch.setenv("MEDFM_HOME", str(tmp_path / "home"))
    tiny = create_model("test/sam-tiny", device="cpu")
    snap = tmp_path / "snap"
    tiny.model.save_pretrained(str(snap))
    assert main(["models", "import", "sam/vit-base", str(snap), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert Path(info["folder"]).is_dir()
    assert main(["models", "show", "sam/vit-base", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["weights"] == "local"
    # a medfm folder under a new id becomes a listed, loadable model
    folder = save_model(create_model("test/vit-tiny-timm"), create_model("test/vit-tiny-timm").card, tmp_path / "ft")
    assert main(["models", "import", "site/my-vit", str(folder), "--link"]) == 0
    assert main(["models", "list", "--json"]) == 0
    assert "site/my-vit" in {r["id"] for r in json.loads(capsys.readouterr().out)}
    assert create_model("site/my-vit").card.id == "site/my-vit"
    # a folder that is not a model folder is refused with the reason
    (tmp_path / "empty").mkdir()
    assert main(["models", "import", "dinov2/base", str(tmp_path / "empty")]) == 2
    assert "config.json" in capsys.readouterr().err


def test_pull_on_a_connected_machine_then_offline_load(tmp_path: Path, capsys, monkeypatch) -> None:
    """The download itself is faked (no network in tests): a copy of a tiny snapshot."""
    import shutil

    import huggingface_hub

    from medfm.models import create_model, hub

    tiny = create_model("test/dinov2-tiny", device="cpu", precision="fp32")
    snap = tmp_path / "remote"
    tiny.model.save_pretrained(str(snap))
    calls = []

    def fake_snapshot_download(repo_id, revision=None, local_dir=None, token=None, **kw):
        calls.append((repo_id, revision, kw.get("local_files_only", False)))
        if kw.get("local_files_only"):
            raise FileNotFoundError(repo_id)
        shutil.copytree(snap, local_dir)
        return local_dir

    monkeypatch.setenv("MEDFM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "endpoint_reachable", lambda timeout=2.0: True)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    sha = "f" * 40  # what the hub says main points to: exactly that commit is downloaded and recorded
    monkeypatch.setattr(hub, "resolve_revision", lambda repo, revision, token: sha)
    assert main(["models", "pull", "dinov2/base", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert ("facebook/dinov2-base", sha, False) in calls and out["commit"] == sha
    assert (Path(out["folder"]) / hub.MARKER).is_file()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m = create_model("dinov2/base", device="cpu", precision="fp32")
    x = tiny.preprocess([np.zeros((28, 28), np.uint8)])
    np.testing.assert_allclose(m.encode_image(x).numpy(), tiny.encode_image(x).numpy(), rtol=1e-5, atol=1e-6)
