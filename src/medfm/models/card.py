"""Model cards: what a model is, where its weights come from, how to feed it.

Transforms are derived from ``Preprocess``; configs never retype mean/std or sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CAPABILITIES = frozenset({"image_encoder", "text_encoder", "segmenter", "generator"})


INTENSITY_RULES = ("unit", "dtype_range", "minmax", "window")


@dataclass(frozen=True)
class Preprocess:
    """Input preparation: intensity to [0, 1], channels, geometry, then mean/std.

    ``intensity`` says how source values reach [0, 1] (see ``medfm.models.transforms``):
    "unit" (uint8 / 255, bool 0/1, floats already in [0, 1] kept, anything else per-image
    min-max), "dtype_range" (integers divided by their dtype's range, e.g. uint16 / 65535, as
    MedSigLIP's serving code does; floats as "unit"), "minmax" (per-image min-max *after* the
    resize, MedSAM) or "window" (``window`` = (center, width), e.g. CT in HU).
    ``ct_window`` (center, width) is applied first when the caller says the image is CT
    (MedSAM's ``pre_CT_MR.py`` windows CT at (40, 400) before anything else).
    ``resize`` is "resize" (straight), "shortest_crop" (short side then centre crop) or
    "longest_pad" (longest side then pad, SAM). ``pad_square`` zero-pads to a square first,
    centred (MedSigLIP).
    """

    size: tuple[int, int] = (224, 224)
    channels: int = 3
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    resize: str = "resize"
    interpolation: str = "bicubic"
    intensity: str = "unit"
    window: tuple[float, float] | None = None
    ct_window: tuple[float, float] | None = None
    crop_size: tuple[int, int] | None = None
    pad_square: bool = False  # zero-pad to a square (centred) before resizing (MedSigLIP's recipe)

    def __post_init__(self) -> None:
        if self.intensity not in INTENSITY_RULES:
            raise ValueError(f"preprocess intensity must be one of {INTENSITY_RULES}, got {self.intensity!r}")
        if (self.intensity == "window") != (self.window is not None):
            raise ValueError("preprocess: intensity 'window' needs window=(center, width), and window needs it")
        if self.pad_square and self.resize != "resize":
            raise ValueError("preprocess: pad_square goes with resize='resize' (pad, then a straight resize)")

    @property
    def output_size(self) -> tuple[int, int]:
        """(H, W) of the model-ready tensor: ``crop_size`` for "shortest_crop", else ``size``."""
        if self.resize == "shortest_crop" and self.crop_size is not None:
            return tuple(self.crop_size)  # type: ignore[return-value]
        return tuple(self.size)  # type: ignore[return-value]


@dataclass(frozen=True)
class ModelCard:
    """A model the zoo can build.

    ``id`` is ``family/name``; ``source`` a hub id (``org/repo``), ``hf-hub:org/repo`` for
    open_clip, a URL, or ``None`` for random-init test models; ``revision`` pins a hub commit.
    """

    id: str
    backend: str
    source: str | None
    license: str
    capabilities: frozenset[str]
    preprocess: Preprocess = field(default_factory=Preprocess)
    embed_dim: int | None = None
    modalities: tuple[str, ...] = ()
    gated: bool = False
    revision: str | None = None
    arch: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    # text side (CLIP-like models): tokens per prompt and the prompt templates used for
    # zero-shot classification ("{}" is replaced by the class name).
    context_length: int | None = None
    prompt_templates: tuple[str, ...] = ("a photo of {}.",)
    citation: str = ""
    # other hub repositories the model reads at load time (e.g. BiomedCLIP's text tokenizer):
    # ``medfm models pull`` fetches them too so that loading works offline afterwards.
    extra_repos: tuple[str, ...] = ()

    @property
    def input_ndim(self) -> int:
        """Spatial dimensions of the images the model takes: 3 for volume encoders (native 3D
        models, MONAI nets with ``spatial_dims=3``), else 2."""
        c = self.config
        return int(c.get("ndim", c.get("net_kwargs", {}).get("spatial_dims", 2)))

    def __post_init__(self) -> None:
        unknown = set(self.capabilities) - CAPABILITIES
        if unknown:
            raise ValueError(f"model card {self.id}: unknown capabilities {sorted(unknown)}")
        if "/" not in self.id:
            raise ValueError(f"model card id must be 'family/name', got {self.id!r}")


def card_to_dict(card: ModelCard) -> dict[str, Any]:
    """JSON-ready dict of ``card`` (the ``model_card.json`` of a saved model folder)."""
    from medfm._config import to_dict

    return to_dict(card)


def card_from_dict(data: dict[str, Any], where: str = "model card") -> ModelCard:
    """Inverse of :func:`card_to_dict`; unknown keys raise ConfigError naming ``where``."""
    from medfm._config import from_dict

    data = dict(data)
    pp = data.get("preprocess")
    if isinstance(pp, dict) and "scale" in pp:  # cards saved before ``intensity`` existed
        pp = dict(pp)
        scale = pp.pop("scale")
        pp.setdefault("intensity", "window" if pp.get("window") is not None else scale)
        data["preprocess"] = pp
    return from_dict(ModelCard, data, where=where)
