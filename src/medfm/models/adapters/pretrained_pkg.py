"""Real pretrained CNNs whose weights install from pip: Merlin's 3D CT I3ResNet-152, the
tse-motion brain-MRI DenseNet-121 and ImageNet EfficientNet-Lite0 (backend ``pretrained``).

Architectures come from the field's libraries, not copies of the reference code:
- ``i3resnet152``: MONAI's 3D ``ResNet`` (bottleneck [3, 8, 36, 3], stem (3, 7, 7) / stride
  (1, 2, 2), conv shortcuts without bias) has exactly the module names and shapes of Merlin's
  inflated ResNet-152, so Astra's extracted backbone and Merlin's hub checkpoint (keys under
  ``encode_image.i3_resnet.``) load strictly. Merlin feeds RAS volumes [B, 1, X, Y, Z] and
  permutes them to [B, 1, Z, X, Y]; medfm volumes are (C, Z, Y, X), so the tower swaps the last
  two axes and repeats the channel 3 times. Embedding = global average of layer4 (2048), or
  with the card's ``config["pool"] = "stages"`` those of layer1..layer4 side by side (3840).
- ``efficientnet_lite0``: timm ``tf_efficientnet_lite0``; the package's lukemelas-named tensors
  map one to one, in order, onto timm's (shapes checked). Embedding = timm's pooled 1280.
- ``densenet121``: MONAI ``DenseNet121`` (2D, 1 channel, 5 motion grades), as tse-motion builds
  it. Embedding = pooled 1024 features.
Each adapter keeps the pretrained classifier as ``head`` (``classify`` gives its logits).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from medfm.errors import ConfigError, InputError, MissingWeightsError
from medfm.models.adapters._common import TorchAdapter, load_state_dict_file, save_module, seeded
from medfm.models.card import ModelCard

if TYPE_CHECKING:
    from medfm.io.image import Image

WEIGHTS_NAME = "model.safetensors"
HEAD_NAME = "head.safetensors"
# Where Merlin-derived checkpoints keep the image backbone: Astra's full checkpoint, then
# Merlin's own (stanfordmimi/Merlin). Keys outside the backbone are dropped.
I3_PREFIXES = ("visual_encoder.model.encode_image.i3_resnet.", "encode_image.i3_resnet.")
I3_DROPPED = ("classifier.", "contrastive_head.")
MERLIN_CHECKPOINT = "i3_resnet_clinical_longformer_best_clip_04-02-2024_23-21-36_epoch_99.pt"
ARCHS = ("i3resnet152", "efficientnet_lite0", "densenet121")


# -- networks -----------------------------------------------------------------------------
def i3resnet152() -> nn.Module:
    """Merlin's inflated ResNet-152 trunk as MONAI's 3D ResNet (no classifier; GAP output)."""
    from monai.networks.nets import ResNet

    return ResNet(
        block="bottleneck", layers=[3, 8, 36, 3], block_inplanes=[64, 128, 256, 512], spatial_dims=3,
        n_input_channels=3, conv1_t_size=(3, 7, 7), conv1_t_stride=(1, 2, 2), shortcut_type="B",
        bias_downsample=False, feed_forward=False,
    )


I3_POOLS = ("layer4", "stages")
I3_STAGE_WIDTHS = (256, 512, 1024, 2048)


class I3ResNetEncoder(nn.Module):
    """(N, 1 or 3, Z, Y, X) in [0, 1] -> (N, 2048): Merlin's axis order, 3 channels, GAP of layer4.

    ``pool="stages"``: the global averages of layer1..layer4 side by side (N, 3840; the last 2048
    are the layer4 embedding), for inputs far from CT where earlier, more local stages carry more."""

    def __init__(self, net: nn.Module, pool: str = "layer4") -> None:
        super().__init__()
        if pool not in I3_POOLS:
            raise ConfigError(f"i3resnet152 pool must be one of {', '.join(I3_POOLS)}, got {pool!r}")
        self.net = net
        self.pool = pool
        self.embed_dim = sum(I3_STAGE_WIDTHS) if pool == "stages" else I3_STAGE_WIDTHS[-1]

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(-1, -2)  # (Z, Y, X) -> (Z, X, Y), Merlin's permuted RAS order
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1, -1)
        x = x.contiguous()  # one dense copy (the reference's torch.cat layout) before the stem
        n = self.net
        return n.maxpool(n.act(n.bn1(n.conv1(x))))

    def _stages(self) -> tuple[nn.Module, ...]:
        n = self.net
        return n.layer1, n.layer2, n.layer3, n.layer4

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """layer4 output (N, 2048, Z/16, X/32, Y/32), what the reference encoder returns."""
        x = self._stem(x)
        for layer in self._stages():
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool == "layer4":
            return self.feature_map(x).mean(dim=(2, 3, 4))
        x, pooled = self._stem(x), []
        for layer in self._stages():
            x = layer(x)
            pooled.append(x.mean(dim=(2, 3, 4)))  # only the averages are kept, not the stage maps
        return torch.cat(pooled, dim=1)


def i3_backbone_state(state: dict[str, Any]) -> dict[str, Any]:
    """Backbone tensors of an Astra / Merlin checkpoint (prefix stripped, heads dropped), as fp32."""
    for prefix in I3_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    out = {}
    for k, v in state.items():
        if k.startswith(I3_DROPPED):
            continue
        out[k] = v.float() if torch.is_tensor(v) and v.is_floating_point() else v
    return out


def lite0_state(state: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """lukemelas EfficientNet-Lite0 tensors -> timm ``tf_efficientnet_lite0`` names, by position."""
    ours = model.state_dict()
    if len(state) != len(ours):
        raise InputError(f"EfficientNet-Lite0 weights: {len(state)} tensors, timm's model has {len(ours)}")
    out = {}
    for (k_ours, t_ours), (k_src, t_src) in zip(ours.items(), state.items(), strict=True):
        if tuple(t_ours.shape) != tuple(t_src.shape):
            raise InputError(f"EfficientNet-Lite0 weights: {k_src} {tuple(t_src.shape)} does not fit "
                             f"{k_ours} {tuple(t_ours.shape)}")
        out[k_ours] = t_src
    return out


def _strict_load(module: nn.Module, state: dict[str, Any], where: Path | str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"{where}: weights do not fit this architecture ({str(exc)[:400]})") from exc


def _build_nets(card: ModelCard, state: dict[str, Any] | None, where: Path | str) -> tuple[nn.Module, nn.Module | None]:
    """(tower, head) for the card's arch; ``state`` None = seeded random init (the random twin)."""
    arch = card.arch
    if arch == "i3resnet152":
        net = i3resnet152()
        if state is not None:
            _strict_load(net, i3_backbone_state(state), where)
        return I3ResNetEncoder(net, pool=str(card.config.get("pool", "layer4"))), None
    if arch == "efficientnet_lite0":
        import timm

        model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
        if state is not None:
            _strict_load(model, lite0_state(state, model), where)
        head = model.classifier
        model.reset_classifier(0)
        return model, head
    if arch == "densenet121":
        from monai.networks.nets import DenseNet121

        kw = card.config.get("net_kwargs", {"spatial_dims": 2, "in_channels": 1, "out_channels": 5})
        net = DenseNet121(**kw)
        if state is not None:
            _strict_load(net, state, where)
        head = net.class_layers.out
        net.class_layers.out = nn.Identity()
        return net, head
    raise ConfigError(f"model card {card.id}: backend 'pretrained' arch must be one of {', '.join(ARCHS)}, got {arch!r}")


# -- preprocessing of volumes -----------------------------------------------------------------
def _scale_volume(a: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """Intensities -> [0, 1]: uint8 / 255, bool 0/1, floats already in [0, 1] kept (e.g. the
    output of ``merlin_ct_input``); other values through the card's HU window (center, width),
    clipped, when it has one, else per-volume min-max."""
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    was_float = np.issubdtype(a.dtype, np.floating)
    a = a.astype(np.float32)
    mn, mx = float(a.min()), float(a.max())
    if was_float and mn >= 0.0 and mx <= 1.0:
        return a
    if window is not None:
        from medfm.io.window import apply_window

        return apply_window(a, *window)
    return (a - mn) / (mx - mn) if mx > mn else np.zeros_like(a)


def pad_crop(a: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Centre zero-pad then centre-crop the trailing axes to ``size`` (MONAI SpatialPad +
    CenterSpatialCrop: the extra voxel of an odd difference goes after / is cut before)."""
    lead = a.ndim - len(size)
    pads = [(0, 0)] * lead
    for n, s in zip(a.shape[lead:], size):
        d = max(s - n, 0)
        pads.append((d // 2, d - d // 2))
    a = np.pad(a, pads)
    sl = [slice(None)] * lead
    for n, s in zip(a.shape[lead:], size):
        start = max((n - s) // 2, 0)
        sl.append(slice(start, start + s))
    return a[tuple(sl)]


def merlin_ct_input(image: Image, spacing_xyz: tuple[float, float, float] = (1.5, 1.5, 3.0),
                    size_xyz: tuple[int, int, int] | None = (224, 224, 160)) -> np.ndarray:
    """A CT ``Image`` in HU -> Merlin's input as a medfm volume (1, Z, Y, X) in [0, 1].

    Merlin's published recipe with MONAI's own transforms: Orientation RAS, Spacing
    ``spacing_xyz`` mm (bilinear), HU -1000..1000 -> 0..1 clipped, SpatialPad + CenterSpatialCrop
    to ``size_xyz`` (None keeps the resampled size). Returned in medfm's axis order, RAS.
    """
    from monai.data import MetaTensor
    from monai.transforms import CenterSpatialCrop, Orientation, ScaleIntensityRange, Spacing, SpatialPad

    from medfm.io.geometry import LPS_TO_RAS, affine_lps

    if image.ndim != 3:
        raise InputError(f"Merlin's CT encoder takes a 3D CT volume, got a {image.ndim}D image")
    arr = np.asarray(image.array, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.shape[0] != 1:
        raise InputError(f"Merlin's CT encoder takes a 1-channel CT volume, got {arr.shape[0]} channels")
    affine_ras = LPS_TO_RAS @ affine_lps(image)
    x = MetaTensor(torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 2, 1))), affine=torch.as_tensor(affine_ras))
    x = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(x)
    x = Spacing(pixdim=spacing_xyz, mode="bilinear")(x)
    x = ScaleIntensityRange(a_min=-1000, a_max=1000, b_min=0.0, b_max=1.0, clip=True)(x)
    if size_xyz is not None:
        x = CenterSpatialCrop(size_xyz)(SpatialPad(size_xyz)(x))
    out = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float32)
    return np.ascontiguousarray(out.transpose(0, 3, 2, 1))


# -- adapter ------------------------------------------------------------------------------
class PretrainedAdapter(TorchAdapter):
    """Image encoder around a packaged pretrained CNN; ``head`` is its original classifier."""

    def __init__(self, card: ModelCard, tower: nn.Module, head: nn.Module | None, device: str) -> None:
        super().__init__(card, device)
        self.tower = tower
        self.head = head
        self.ndim = card.input_ndim
        self._place(tower, head)

    def preprocess(self, images: Any, modality: str | None = None) -> torch.Tensor:
        """2D: the card's ``Preprocess`` (``medfm.models.transforms``). 3D: volumes (Z, Y, X) or
        (C, Z, Y, X) -> (N, 1, Z, Y, X) in [0, 1] (``_scale_volume``), centre pad/crop to
        ``config["volume_size"]`` when the card sets one, else kept at the size given."""
        if self.ndim == 2:
            return super().preprocess(images, modality=modality)
        size = self.card.config.get("volume_size")
        window = self.card.preprocess.window
        out = []
        for i, img in enumerate(images):
            a = np.asarray(img)
            if a.ndim == 3:
                a = a[None]
            if a.ndim != 4 or a.shape[0] != 1:
                raise InputError(f"image {i}: shape {a.shape} does not fit model '{self.card.id}', which takes "
                                 "3D volumes (Z, Y, X) or (1, Z, Y, X)")
            a = _scale_volume(a, window)
            if size is not None:
                a = pad_crop(a, tuple(int(s) for s in size))
            out.append(torch.from_numpy(np.ascontiguousarray(a)))
        shapes = {tuple(t.shape) for t in out}
        if len(shapes) > 1:
            raise InputError(f"volumes of different sizes {sorted(shapes)} in one batch for '{self.card.id}'; "
                             "resample them to one grid first (e.g. merlin_ct_input)")
        return torch.stack(out) if out else torch.zeros((0, 1, 1, 1, 1))

    def classify(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits of the pretrained classifier (ImageNet 1000 / 5 motion grades), float32."""
        if self.head is None:
            raise ConfigError(f"model '{self.card.id}' has no pretrained classifier head")
        with self.autocast():
            return self.head(self.tower(batch.to(self.device))).float()

    def modules_for_hash(self) -> list[nn.Module]:
        return [m for m in (self.tower, self.head) if m is not None]


def _read_state(path: Path) -> dict[str, Any]:
    return load_state_dict_file(path)


def _weights_file(folder: Path) -> Path:
    """The checkpoint in a weights folder: medfm's own save, Merlin's hub checkpoint, or the only one."""
    for name in (WEIGHTS_NAME, MERLIN_CHECKPOINT):
        if (folder / name).is_file():
            return folder / name
    from medfm.models.adapters._common import weight_files

    files = [p for p in weight_files(folder) if p.name != HEAD_NAME]
    if len(files) != 1:
        raise MissingWeightsError(
            f"{folder}: expected {MERLIN_CHECKPOINT} or one weight file, found {[p.name for p in files] or 'none'}"
        )
    return files[0]


FOLDER_FILE: str | None = None  # medfm's model.safetensors, or a hub snapshot holding Merlin's checkpoint


def build(card: ModelCard, folder: Path | None, weights: Path | None, device: str, **options: Any) -> PretrainedAdapter:
    """Backend entry: weights from ``weights`` (a file), a folder (medfm save or hub snapshot),
    the card's pip package, or none (``config["random_init"]``: the seeded random twin)."""
    if weights is not None and weights.is_dir():
        folder, weights = weights, None
    random_init = bool(card.config.get("random_init"))
    if weights is None and folder is None and not random_init:
        from medfm.models.packaged import package_weights_file

        weights = package_weights_file(card)
    saved = folder is not None and (folder / WEIGHTS_NAME).is_file()
    if folder is not None and weights is None:
        weights = _weights_file(folder)
    with seeded(int(card.config.get("seed", 0))):
        if saved:  # medfm's own save: tower and head as written by ``save``
            tower, head = _build_nets(card, None, "")
            from medfm.models.adapters._common import load_into

            load_into(tower, folder / WEIGHTS_NAME)  # type: ignore[operator]
            if head is not None and (folder / HEAD_NAME).is_file():  # type: ignore[operator]
                load_into(head, folder / HEAD_NAME)  # type: ignore[operator]
        else:
            state = _read_state(weights) if weights is not None else None
            tower, head = _build_nets(card, state, weights or "random-init")
    return PretrainedAdapter(card, tower, head, device)


def save(adapter: PretrainedAdapter, folder: Path) -> None:
    assert adapter.tower is not None
    save_module(adapter.tower, folder / WEIGHTS_NAME)
    if adapter.head is not None:
        save_module(adapter.head, folder / HEAD_NAME)


def save_trained(module: nn.Module, card: ModelCard, folder: Path) -> None:
    """The fine-tuned tower from ``trainable_module()`` (the pretrained head is not part of it)."""
    save_module(module, folder / WEIGHTS_NAME)
