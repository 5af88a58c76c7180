"""Trained segmentation models: network builders, input preparation, saving, loading, inference.

A saved model is a folder with ``model.safetensors`` (the selected weights), ``model_card.json``
(a ``ModelCard`` whose ``config`` holds everything inference needs: architecture, labels, patch
size, intensity normalisation, input size) and the training files (``checkpoint.pt``, see
``medfm.tasks.segmentation.state``, and ``history.json``). ``TrainedSegmenter.load(folder)`` rebuilds it for ``medfm segment``;
``medfm.tasks.segmentation.ensemble`` averages several of them.

Arrays follow ``medfm.io.image.Image``: (C, Z, Y, X) or (C, Y, X); label maps hold the original
label values (e.g. 0, 1, 2), the network works on class indices 0..K (0 = background).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medfm.errors import ConfigError, InputError
from medfm.io.image import Image

if TYPE_CHECKING:
    import torch

ARCHS = ("unet2d", "unet3d", "swinunetr", "frozen_encoder")
POSTPROCESS = ("none", "largest_cc_fill", "ellipse_fill")
CARD_FILE = "model_card.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class NetSpec:
    """What is needed to rebuild a network: architecture, channels in/out, sizes, encoder id."""

    arch: str
    in_channels: int
    num_classes: int  # including background
    patch_size: tuple[int, ...]
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    encoder: str | None = None  # model-zoo id for arch "frozen_encoder"
    feature_size: int = 24  # SwinUNETR width

    @property
    def spatial_dims(self) -> int:
        return len(self.patch_size)


def build_network(spec: NetSpec) -> torch.nn.Module:
    """MONAI UNet (2D/3D), SwinUNETR, or a frozen zoo encoder with a light decoder."""
    if spec.arch not in ARCHS:
        raise ConfigError(f"unknown segmentation architecture '{spec.arch}'; choose one of {', '.join(ARCHS)}")
    want = {"unet2d": 2, "unet3d": 3}.get(spec.arch)
    if want is not None and spec.spatial_dims != want:
        raise ConfigError(f"{spec.arch} needs {want}-D patches, got patch size {spec.patch_size}")
    if spec.arch in ("unet2d", "unet3d"):
        from monai.networks.nets import UNet

        ch = tuple(spec.channels)
        return fp32_normalization(UNet(
            spatial_dims=spec.spatial_dims,
            in_channels=spec.in_channels,
            out_channels=spec.num_classes,
            channels=ch,
            strides=(2,) * (len(ch) - 1),
            num_res_units=2,
            norm="instance",
        ))
    if spec.arch == "swinunetr":
        from monai.networks.nets import SwinUNETR

        if any(s % 32 for s in spec.patch_size):
            raise ConfigError(f"swinunetr needs patch sizes divisible by 32, got {spec.patch_size}")
        return fp32_normalization(SwinUNETR(
            in_channels=spec.in_channels,
            out_channels=spec.num_classes,
            feature_size=spec.feature_size,
            spatial_dims=spec.spatial_dims,
        ))
    if spec.spatial_dims != 2:
        raise ConfigError("frozen_encoder segmentation is 2D only (zoo encoders take 2D images)")
    if not spec.encoder:
        raise ConfigError("arch frozen_encoder needs an encoder id (--encoder MODEL_ID)")
    from medfm.tasks.segmentation.frozen import FrozenEncoderSegmenter

    return FrozenEncoderSegmenter(spec.encoder, spec.in_channels, spec.num_classes)


def fp32_normalization(net: torch.nn.Module) -> torch.nn.Module:
    """Run every normalisation layer in fp32 under bf16 autocast (as AMP keeps norms in fp32):
    instance-norm statistics over a whole 3D feature map lose too much in bf16 and made training
    diverge on AMX CPUs. The state dict is unchanged (only ``forward`` is rebound)."""
    import types

    import torch

    norms = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)
    for m in net.modules():
        if isinstance(m, norms):
            m.forward = types.MethodType(_fp32_norm_forward, m)
    return net


def _fp32_norm_forward(self: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    import torch

    if not torch.is_autocast_enabled(x.device.type):
        return type(self).forward(self, x)
    with torch.autocast(x.device.type, enabled=False):
        return type(self).forward(self, x.float())


# -- input preparation -----------------------------------------------------------------------


def normalize_intensity(array: np.ndarray) -> np.ndarray:
    """Per-image, per-channel z-score (float32). The same function runs in training and inference."""
    a = np.asarray(array, dtype=np.float32)
    axes = tuple(range(1, a.ndim))
    mean = a.mean(axis=axes, keepdims=True)
    std = a.std(axis=axes, keepdims=True)
    return (a - mean) / np.maximum(std, 1e-6)


def resize_array(array: np.ndarray, size: tuple[int, ...], mode: str) -> np.ndarray:
    """(C, *spatial) -> (C, *size) with torch interpolation (``mode`` "bilinear"/"trilinear"/"nearest")."""
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.ascontiguousarray(array))[None].float()
    kw = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(t, size=tuple(size), mode=mode, **kw)[0].numpy()


def labels_to_index(mask: np.ndarray, labels: tuple[int, ...], where: str) -> np.ndarray:
    """Label values -> class indices (0 background, i+1 for ``labels[i]``); unknown values -> InputError."""
    m = np.asarray(mask)
    if m.ndim >= 1 and m.shape[0] == 1:
        m = m[0]
    values = np.unique(m)
    allowed = {0, *labels}
    bad = [int(v) for v in values if int(v) not in allowed]
    if bad or not np.all(values == np.round(values)):
        raise InputError(f"{where}: label value(s) {bad} not among the declared labels {sorted(allowed)}")
    lut = np.zeros(int(max(allowed)) + 1, dtype=np.int64)
    for i, lab in enumerate(labels):
        lut[lab] = i + 1
    return lut[m.astype(np.int64)]


# -- saving and loading ----------------------------------------------------------------------


@dataclass
class SegModelInfo:
    """Inference settings saved in the model card's ``config``."""

    net: NetSpec
    labels: tuple[int, ...]
    label_names: tuple[str, ...] = ()
    input_size: tuple[int, ...] = ()  # resize images to this before the network (2D); () = native
    overlap: float = 0.5
    tta_flips: tuple[int, ...] = ()  # spatial axes: also predict on each flipped image and average
    postprocess: str = "none"  # "none", "largest_cc_fill" (per label: largest component, holes filled) or
    # "ellipse_fill" (2D: per label, the filled ellipse fitted to that component, as HC18's references are drawn)
    refine_margin: float = 0.0  # 2D cascade: > 0 refines a box this many times the object's size with
    # the sub-model in refine/ (see medfm.tasks.segmentation.refine); 0 = the whole-frame network alone
    refine_passes: int = 1  # each pass crops around the object the previous pass found
    dataset: str = ""
    val_dice: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def weights_to_save(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the trainable state (frozen encoders excluded when the module says so)."""
    state = module.state_dict_to_save() if hasattr(module, "state_dict_to_save") else module.state_dict()
    return {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}


def save_weights(weights: torch.nn.Module | dict[str, torch.Tensor], path: Path) -> None:
    """A module's trainable state (or a state dict) -> safetensors, atomically and fsynced."""
    from safetensors.torch import save

    from medfm._paths import write_durably

    state = weights if isinstance(weights, dict) else weights_to_save(weights)
    write_durably(path, save(state))


def apply_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], where: str | Path) -> None:
    """Load a state dict saved by ``save_weights`` (frozen encoders keep their zoo weights)."""
    strict = not hasattr(module, "state_dict_to_save")
    missing, unexpected = module.load_state_dict(state, strict=strict)
    if unexpected:
        raise InputError(f"{where}: unexpected weights {unexpected[:3]} for this architecture")


def load_weights(module: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    apply_weights(module, load_file(str(path)), path)


def write_card(folder: Path, info: SegModelInfo, name: str, weights_hash: str | None = None,
               extra_config: dict[str, Any] | None = None, description: str | None = None) -> Path:
    """Write ``model_card.json`` describing the trained model (``extra_config``: more keys of its
    ``config``, such as an ensemble's members)."""
    from medfm._config import to_dict
    from medfm.models.card import ModelCard
    from medfm._paths import write_durably

    card = ModelCard(
        id=f"trained/{name}",
        backend="monai",
        source=str(folder),
        license="same terms as its training data",
        capabilities=frozenset({"segmenter"}),
        arch=info.net.arch,
        config={"segmentation": to_dict(info), "weights_sha256": weights_hash, **(extra_config or {})},
        description=description or f"{info.net.arch} trained by medfm train-seg on {info.dataset or 'a folder'}",
    )
    path = folder / CARD_FILE
    write_durably(path, json.dumps(to_dict(card), indent=2).encode())
    return path


def read_info(folder: Path) -> SegModelInfo:
    from medfm._config import from_dict

    path = folder / CARD_FILE
    seg = read_card_config(folder).get("segmentation")
    if not isinstance(seg, dict):
        raise InputError(f"{path}: not a medfm trained segmentation model card (no config.segmentation)")
    info = from_dict(SegModelInfo, seg, where=str(path))
    info.net.patch_size = tuple(int(s) for s in info.net.patch_size)
    info.labels = tuple(int(v) for v in info.labels)
    info.input_size = tuple(int(v) for v in info.input_size)
    info.tta_flips = tuple(int(v) for v in info.tta_flips)
    if info.postprocess not in POSTPROCESS:
        raise InputError(f"{path}: unknown postprocess '{info.postprocess}'; expected one of {', '.join(POSTPROCESS)}")
    return info


def read_card_config(folder: Path) -> dict[str, Any]:
    """The ``config`` of a trained model's card (InputError naming the file when unreadable)."""
    path = Path(folder) / CARD_FILE
    try:
        doc = json.loads(path.read_text())
        return dict(doc["config"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{path}: not a medfm trained segmentation model card ({exc})") from exc


def is_ensemble_dir(path: str | Path) -> bool:
    """A folder written by ``medfm seg-ensemble`` (its card lists members, it has no weights of its own)."""
    p = Path(path)
    if not (p.is_dir() and (p / CARD_FILE).is_file()):
        return False
    try:
        return "ensemble" in read_card_config(p)
    except InputError:
        return False


def is_trained_model_dir(path: str | Path) -> bool:
    """A folder written by ``train-seg`` (card with ``config.segmentation`` + weights) or by
    ``seg-ensemble``; not a zoo model saved by ``save_model`` (same file names, no such config)."""
    p = Path(path)
    if not (p.is_dir() and (p / CARD_FILE).is_file()):
        return False
    try:
        config = read_card_config(p)
    except InputError:
        return False
    return ("segmentation" in config and (p / WEIGHTS_FILE).is_file()) or "ensemble" in config


# -- inference -------------------------------------------------------------------------------


class Segmenter:
    """Whole-image label prediction from ``probabilities``: the card's post-processing, then the
    original label values. Subclasses: one trained network, or an ensemble of them."""

    info: SegModelInfo

    def probabilities(self, array: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_array(self, array: np.ndarray) -> np.ndarray:
        """(C, *spatial) -> label map (*spatial) with the original label values (uint8/uint16)."""
        idx = postprocess_labels(self.probabilities(array).argmax(axis=0), self.info.postprocess,
                                 len(self.info.labels))
        lut = np.array((0, *self.info.labels))
        out = lut[idx]
        return out.astype(np.uint8 if lut.max() < 256 else np.uint16)

    def predict(self, image: Image) -> Image:
        """Label-map Image (1, *spatial) on the input's geometry."""
        labels = self.predict_array(image.array)
        return image.with_array(labels[None], modality="SEG", meta={**image.meta, "labels": list(self.info.labels)})


class TrainedSegmenter(Segmenter):
    """A trained network ready for inference on whole images (sliding window)."""

    def __init__(self, net: torch.nn.Module, info: SegModelInfo, device: str = "cpu", precision: str = "auto",
                 refiner: TrainedSegmenter | None = None) -> None:
        self.net = net.to(device).eval()
        self.info = info
        self.device = device
        self.precision = precision
        self.refiner = refiner  # second stage on a crop around the object (used when info.refine_margin > 0)

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu", precision: str = "auto") -> TrainedSegmenter:
        folder = Path(folder)
        if is_ensemble_dir(folder):
            raise InputError(f"{folder}: an ensemble written by medfm seg-ensemble, not a single trained model")
        if not is_trained_model_dir(folder):
            raise InputError(f"{folder}: not a trained model folder (needs {CARD_FILE} and {WEIGHTS_FILE})")
        info = read_info(folder)
        net = build_network(info.net)
        load_weights(net, folder / WEIGHTS_FILE)
        from medfm.tasks.segmentation.refine import REFINE_DIR

        # a refiner trained but not chosen on val is loaded too (select_inference compares with it)
        refiner = cls.load(folder / REFINE_DIR, device, precision) if is_trained_model_dir(folder / REFINE_DIR) else None
        if info.refine_margin > 0 and refiner is None:
            raise InputError(f"{folder / CARD_FILE}: refine_margin is set but {folder / REFINE_DIR} holds no trained model")
        return cls(net, info, device, precision, refiner)

    def probabilities(self, array: np.ndarray) -> np.ndarray:
        """(C, *spatial) source intensities -> (K+1, *spatial) softmax probabilities at source size;
        with a refiner and ``info.refine_margin`` > 0, the box around the object is re-segmented by it."""
        prob = self.frame_probabilities(array)
        if self.refiner is None or self.info.refine_margin <= 0:
            return prob
        from medfm.tasks.segmentation.refine import MAX_PASS_GROWTH, crop_array, object_box, paste_probabilities

        r_in = self.refiner.info.input_size or self.refiner.info.net.patch_size
        fg = prob.argmax(axis=0) > 0
        for k in range(max(1, self.info.refine_passes)):
            box = object_box(fg, self.info.refine_margin, r_in[0] / r_in[1])
            if box is None:  # nothing found: nothing (more) to refine
                break
            crop_prob = self.refiner.frame_probabilities(crop_array(np.asarray(array), box), self.info.tta_flips)
            new = paste_probabilities(prob, crop_prob, box)
            new_fg = new.argmax(axis=0) > 0
            if k > 0 and np.count_nonzero(new_fg) > MAX_PASS_GROWTH * np.count_nonzero(fg):
                break  # a later pass that grows the object follows a leak: keep the previous pass (refine.py)
            prob, fg = new, new_fg
        return prob

    def frame_probabilities(self, array: np.ndarray, tta_flips: tuple[int, ...] | None = None) -> np.ndarray:
        """Probabilities of this network alone on the whole image (no refinement stage), with
        ``tta_flips`` (default: the card's)."""
        import torch
        from monai.inferers import sliding_window_inference

        from medfm._runtime import autocast_dtype

        info = self.info
        nd = info.net.spatial_dims
        if array.ndim != nd + 1:
            raise InputError(f"model expects {nd}-D images (C + {nd} axes), got an array of shape {array.shape}")
        if array.shape[0] != info.net.in_channels:
            array = match_channels(array, info.net.in_channels)
        src_size = array.shape[1:]
        x = normalize_intensity(array)
        if info.input_size:
            x = resize_array(x, info.input_size, "bilinear" if nd == 2 else "trilinear")
        t = torch.as_tensor(x)[None].to(self.device)
        dtype = autocast_dtype(self.device, self.precision)
        dev_type = "cuda" if self.device.startswith("cuda") else "cpu"
        with torch.inference_mode(), torch.autocast(dev_type, dtype=dtype or torch.float32, enabled=dtype is not None):
            prob = None
            flips = info.tta_flips if tta_flips is None else tuple(tta_flips)
            for axes in ((), *((a,) for a in flips)):
                dims = [2 + a for a in axes]
                x_in = torch.flip(t, dims) if dims else t
                logits = sliding_window_inference(
                    x_in, roi_size=info.net.patch_size, sw_batch_size=4, predictor=self.net, overlap=info.overlap,
                    mode="gaussian",
                )
                p = torch.softmax(logits.float(), dim=1)
                p = torch.flip(p, dims) if dims else p
                prob = p if prob is None else prob + p
            prob = prob / (1 + len(flips))
        if info.input_size:
            import torch.nn.functional as F

            prob = F.interpolate(prob, size=tuple(src_size), mode="bilinear" if nd == 2 else "trilinear", align_corners=False)
        return prob[0].cpu().numpy()



def postprocess_labels(idx: np.ndarray, method: str, num_labels: int) -> np.ndarray:
    """Index map (*spatial) -> the same after ``method``: "largest_cc_fill" keeps, per label, the
    largest connected component and fills its holes (scipy.ndimage; one object per label, such as
    a fetal head); "ellipse_fill" (2D only) replaces that component by the filled ellipse fitted to
    its outline (robust fit of ``hc18.fit_mask_ellipse``), for objects annotated as ellipses;
    "none" returns it unchanged."""
    if method == "none" or num_labels == 0:
        return idx
    if method not in POSTPROCESS:
        raise ConfigError(f"unknown postprocess '{method}'; choose one of {', '.join(POSTPROCESS)}")
    src = np.asarray(idx)
    if method == "ellipse_fill" and src.ndim != 2:
        raise ConfigError(f"postprocess 'ellipse_fill' needs 2D label maps, got {src.ndim}-D")
    from medfm.metrics.segmentation import largest_region_filled
    from medfm.tasks.segmentation.hc18 import ellipse_mask, fit_mask_ellipse

    out = np.zeros_like(src)
    for k in range(1, num_labels + 1):
        if not (src == k).any():
            continue
        keep = largest_region_filled(src == k)
        if method == "ellipse_fill":
            try:
                keep = ellipse_mask(src.shape, *fit_mask_ellipse(keep))
            except ValueError:  # too few boundary points for an ellipse: keep the component
                pass
        out[keep & (out == 0)] = k
    return out


def match_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """Grey <-> RGB: replicate one channel or average three to fit the network's input channels."""
    c = array.shape[0]
    if c == 1 and channels > 1:
        return np.repeat(array, channels, axis=0)
    if channels == 1 and c > 1:
        return array.astype(np.float32).mean(axis=0, keepdims=True)
    raise InputError(f"image has {c} channels; the model expects {channels}")
