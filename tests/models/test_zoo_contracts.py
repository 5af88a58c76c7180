"""Zoo fixes read against upstream code: SigLIP tokenizer, pinned revisions and their provenance,
MedSAM's CT window, and the typed contracts (adapter faces, backend protocol, one factory)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import io
import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from medfm.errors import ConfigError
from medfm.models import create_model, get_model_card, save_model
from medfm.models.base import ModelAdapter
from medfm.models.card import ModelCard, card_to_dict

ROOT = Path(__file__).resolve().parents[2]
SHA = "0123456789abcdef0123456789abcdef01234567"
SENTENCES = ["a chest x-ray", "benign lesion", "malignant tumour in the breast", "normal lung", "no finding"] * 20


def _siglip_folder(tmp_path: Path) -> Path:
    """A tiny random SigLIP saved as a hub snapshot is: weights, config and a SentencePiece
    ``SiglipTokenizer`` (what google/siglip-* and google/medsiglip-448 ship)."""
    import sentencepiece as spm
    import transformers

    card = get_model_card("test/siglip-tiny")
    cfg = dict(card.config["hf_config"])
    model = transformers.SiglipModel(transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg))
    folder = tmp_path / "siglip"
    model.save_pretrained(str(folder))
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(SENTENCES), model_writer=buf, vocab_size=40,
                                   hard_vocab_limit=False, num_threads=1, minloglevel=2)
    (tmp_path / "spiece.model").write_bytes(buf.getvalue())
    transformers.SiglipTokenizer(str(tmp_path / "spiece.model"), model_max_length=16).save_pretrained(str(folder))
    real = dataclasses.replace(card, id="test/siglip-spm", config={k: v for k, v in card.config.items()
                                                                   if k not in ("tokenizer", "hf_config")})
    (folder / "model_card.json").write_text(json.dumps(card_to_dict(real)))
    return folder


def test_sentencepiece_is_in_the_zoo_extra() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("sentencepiece") for d in extras["zoo"])


def test_siglip_tokenizer_loads_lazily_and_only_for_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    folder = _siglip_folder(tmp_path)
    loads: list[str] = []
    real = transformers.AutoTokenizer.from_pretrained

    def counting(path, *a, **k):  # noqa: ANN001, ANN002, ANN003
        loads.append(str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", counting)
    m = create_model(str(folder), device="cpu", precision="fp32")
    img = m.encode_image(m.preprocess([np.zeros((32, 32), np.uint8)]))
    assert img.shape == (1, 32) and loads == []  # image-only use never touches the tokenizer
    text = m.encode_text(["a chest x-ray", "normal lung"])
    assert text.shape == (2, 32) and len(loads) == 1
    assert type(m.tokenizer).__name__.startswith("SiglipTokenizer")
    m.encode_text(["no finding"])
    assert len(loads) == 1


def test_missing_sentencepiece_only_breaks_text_with_an_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    folder = _siglip_folder(tmp_path)

    def no_spm(*a, **k):  # noqa: ANN002, ANN003
        raise ImportError("SiglipTokenizer requires the SentencePiece library but it was not found")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_spm)
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    m = create_model(str(folder), device="cpu", precision="fp32")
    assert m.encode_image(m.preprocess([np.zeros((32, 32), np.uint8)])).shape == (1, 32)
    with pytest.raises(ConfigError, match=r"sentencepiece.*medfm\[zoo\]"):
        m.encode_text(["a chest x-ray"])


def test_cards_state_their_intensity_rule() -> None:
    siglip = get_model_card("medsiglip/448").preprocess
    assert siglip.intensity == "dtype_range" and siglip.pad_square  # predictor.py: / iinfo(dtype).max, centred pad
    medsam = get_model_card("medsam/vit-base").preprocess
    assert medsam.intensity == "minmax" and medsam.ct_window == (40.0, 400.0)
    for mid in ("dinov2/base", "rad-dino/base", "clip/vit-b16", "pubmedclip/vit-b32", "biomedclip/vit-b16"):
        assert get_model_card(mid).preprocess.intensity == "unit", mid


def test_medsam_windows_ct_slices_before_min_max() -> None:
    """pre_CT_MR.py: CT clipped to level 40 / width 400, then MedSAM_Inference.py's resize + min-max."""
    m = create_model("test/medsam-tiny", device="cpu", precision="fp32")
    rng = np.random.default_rng(0)
    hu = rng.normal(40, 300, (40, 56)).astype(np.float32)
    hu[0, 0], hu[-1, -1] = -1000.0, 1500.0  # air and bone: the window clips both
    clipped = np.clip(hu, -160.0, 240.0)
    as_ct = m.preprocess([hu], modality="CT")
    torch.testing.assert_close(as_ct, m.preprocess([clipped]), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(as_ct, m.preprocess([hu]), atol=1e-3)  # unknown modality: no window
    m.set_image(hu, modality="CT")
    state = m.image_state()
    m.set_image(clipped)
    torch.testing.assert_close(state[0], m.image_state()[0], atol=1e-4, rtol=1e-4)


def _fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: Path) -> dict[str, object]:
    """Route ``pull`` to a local 'hub' holding ``source``'s files; records what was asked for."""
    import shutil

    import huggingface_hub

    from medfm.models import hub

    asked: dict[str, object] = {}
    monkeypatch.setenv("MEDFM_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(hub, "hub_offline", lambda: False)
    monkeypatch.setattr(hub, "endpoint_reachable", lambda timeout=2.0: True)

    def resolve(repo: str, revision: str | None, token: str | None) -> str:
        asked["resolve"] = (repo, revision)
        return SHA

    def snapshot(repo: str, revision: str | None = None, local_dir: str | None = None, **kw: object) -> str:
        asked["download"] = (repo, revision)
        shutil.copytree(source, str(local_dir), dirs_exist_ok=True)
        return str(local_dir)

    monkeypatch.setattr(hub, "resolve_revision", resolve)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    return asked


def test_pull_downloads_the_resolved_commit_and_results_name_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medfm.models import hub
    from medfm.results import make_provenance

    tiny = create_model("test/vit-tiny-timm", device="cpu")
    src = save_model(tiny, tiny.card, tmp_path / "src")
    (src / "model_card.json").unlink()  # a hub repo holds weights, not a medfm card
    asked = _fake_hub(monkeypatch, tmp_path, src)
    card = dataclasses.replace(tiny.card, id="org/tiny-vit", source="org/tiny-vit", revision="v1.0")
    folder = hub.pull(card)
    assert asked == {"resolve": ("org/tiny-vit", "v1.0"), "download": ("org/tiny-vit", SHA)}
    marker = json.loads((folder / hub.MARKER).read_text())
    assert marker["commit"] == SHA and marker["revision"] == "v1.0"
    assert json.loads((folder / hub.CARD_FILE).read_text())["revision"] == SHA  # the local card is pinned
    assert hub.cached_folder(card) == folder
    assert hub.cached_folder(dataclasses.replace(card, revision="v2.0")) is None  # another pin: not this folder
    m = create_model(str(folder), device="cpu")
    assert m.weights_revision == SHA and m.provenance()["weights_revision"] == SHA
    prov = make_provenance({"x": 1}, weights_hash=m.weights_hash)
    assert prov["weights_revision"] == SHA and prov["weights_source"] == str(folder)
    hub.pull(card, revision="main")  # the CLI's --revision overrides the card's pin
    assert asked["resolve"] == ("org/tiny-vit", "main")


def test_two_cards_of_one_repo_share_one_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second card reading the same hub repo at the same commit (e.g. the CT encoder and its
    multi-stage card) is filled from the first card's folder; another commit is downloaded."""
    from medfm.models import hub

    tiny = create_model("test/vit-tiny-timm", device="cpu")
    src = save_model(tiny, tiny.card, tmp_path / "src")
    (src / "model_card.json").unlink()
    asked = _fake_hub(monkeypatch, tmp_path, src)
    plain = dataclasses.replace(tiny.card, id="org/tiny-vit", source="org/tiny-vit", revision=None)
    first = hub.pull(plain)
    asked.clear()
    second = hub.pull(dataclasses.replace(plain, id="org/tiny-vit-stages"))
    assert asked == {"resolve": ("org/tiny-vit", None)}  # resolved, not downloaded again
    marker = json.loads((second / hub.MARKER).read_text())
    assert marker["commit"] == SHA and marker["copied_from"] == str(first) and marker["id"] == "org/tiny-vit-stages"
    assert json.loads((second / hub.CARD_FILE).read_text())["id"] == "org/tiny-vit-stages"
    weights = sorted(p.name for p in first.iterdir() if p.name.endswith(".safetensors"))
    assert weights and weights == sorted(p.name for p in second.iterdir() if p.name.endswith(".safetensors"))
    assert all((first / w).read_bytes() == (second / w).read_bytes() for w in weights)
    x = tiny.preprocess([np.zeros((28, 28), np.uint8)])
    torch.testing.assert_close(create_model(str(second), device="cpu").encode_image(x), tiny.encode_image(x))
    assert hub.pulled_folder_of("org/tiny-vit", "0" * 40) is None  # another commit: nothing to share
    monkeypatch.setattr(hub, "resolve_revision", lambda repo, revision, token: "0" * 40)
    asked.clear()
    hub.pull(dataclasses.replace(plain, id="org/tiny-vit-other"))
    assert asked["download"] == ("org/tiny-vit", "0" * 40)


def test_pull_turns_a_gated_repo_into_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.errors as hf_errors

    from medfm.errors import MissingWeightsError
    from medfm.models import hub

    _fake_hub(monkeypatch, tmp_path, tmp_path)
    http = importlib.import_module(hf_errors.Response.__module__.split(".")[0])  # the hub client's HTTP library
    response = http.Response(403, request=http.Request("GET", "https://huggingface.co/api/models/org/x"))

    def refuse(repo: str, revision: str | None, token: str | None) -> str:
        raise hf_errors.GatedRepoError("403: access to this repo is restricted", response=response)

    monkeypatch.setattr(hub, "resolve_revision", refuse)
    card = dataclasses.replace(get_model_card("test/vit-tiny-timm"), id="org/x", source="org/x", license="custom")
    with pytest.raises(MissingWeightsError, match=r"'org/x' is gated \(custom\): accept its terms at https://huggingface.co/org/x"):
        hub.pull(card)
    assert not hub.model_dir("org/x").exists()


def test_hf_cache_snapshot_names_its_commit(tmp_path: Path) -> None:
    from medfm.models import hub

    snap = tmp_path / "models--org--x" / "snapshots" / SHA
    snap.mkdir(parents=True)
    assert hub.folder_commit(snap) == SHA
    assert hub.folder_commit(tmp_path) is None


def test_adapter_declares_what_serve_and_the_cache_use() -> None:
    for name in ("image_state", "set_image_state", "modules_for_hash", "provenance"):
        assert callable(getattr(ModelAdapter, name))
    for name in ("encoder_calls", "iou_scores", "weights_revision", "accepts_images"):
        assert hasattr(ModelAdapter, name)
    enc = create_model("test/vit-tiny-timm", device="cpu")
    with pytest.raises(ConfigError, match="no segmenter"):
        enc.image_state()
    service = (ROOT / "src/medfm/serve/service.py").read_text()
    assert "getattr(self.model" not in service and "hasattr(self.model" not in service


def test_every_backend_implements_the_protocol() -> None:
    from medfm.models.zoo import BACKENDS, backend_module

    for name in BACKENDS:
        mod = backend_module(name)
        assert hasattr(mod, "FOLDER_FILE"), name
        for fn in ("build", "save", "save_trained"):
            assert callable(getattr(mod, fn)), (name, fn)
        assert "options" in inspect.signature(mod.build).parameters, name
        assert not hasattr(mod, "create"), name  # generators go through the one factory
    zoo_src = inspect.getsource(importlib.import_module("medfm.models.zoo"))
    assert 'backend in ("' not in zoo_src and "backend ==" not in zoo_src


def test_one_factory_for_encoders_and_generators(monkeypatch: pytest.MonkeyPatch) -> None:
    from medfm.models import zoo
    from medfm.models.generators import create_generator, http_card

    with pytest.raises(ConfigError, match="takes no options"):
        create_model("test/vit-tiny-timm", device="cpu", dtype="bf16")
    seen: list[ModelCard] = []
    real = zoo.create_model

    def spy(card, **kw):  # noqa: ANN001, ANN003
        seen.append(card)
        return real(card, **kw)

    monkeypatch.setattr(zoo, "create_model", spy)
    gen = create_generator(http_card("http://127.0.0.1:9", "m"), device="cpu")
    assert [c.id for c in seen] == ["http/m"] and gen.card.id == "http/m"


def test_split_images_is_part_of_the_split_contract(tmp_path: Path) -> None:
    from medfm.data.card import DatasetCard, SplitData
    from medfm.data.dataset import FileSplit

    assert "images" in dir(SplitData)
    card = DatasetCard(name="folder", task="segmentation", modality="OT")
    assert FileSplit(card, "train", [], lambda r: r).images() is None  # read sample by sample


def test_centred_square_padding_maps_prompts_and_masks_back() -> None:
    base = create_model("test/sam-tiny", device="cpu", precision="fp32")
    pp = dataclasses.replace(base.card.preprocess, resize="resize", pad_square=True)
    from medfm.models.adapters.sam import SamAdapter

    m = SamAdapter(dataclasses.replace(base.card, preprocess=pp), base.model, "cpu")
    img = np.random.default_rng(1).integers(0, 256, (30, 90), dtype=np.uint8)
    m.set_image(img)
    top = 30 * 64 / 90  # 30 rows of padding above (half of 60), scaled to the 64 grid
    np.testing.assert_allclose(m._to_grid(np.array([[0, 0, 90, 30]], np.float32)), [[0, top, 64, 64 - top]], atol=1e-4)
    assert m.predict(boxes=[10, 5, 60, 25]).shape == (1, 30, 90)
