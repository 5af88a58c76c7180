"""The model zoo: cards, one factory over timm / transformers / open_clip / SAM / MONAI, embeddings.

``create_model(id_or_folder)`` returns a ``ModelAdapter`` whose faces (``preprocess``,
``encode_image``, ``encode_text``, ``set_image`` + ``predict``, ``trainable_module``) are the
same for every backend; ``medfm.models.embed`` batches and caches image embeddings.
Importing this package is light: torch and the model libraries load when a model is built.
"""

from medfm.models.base import ModelAdapter
from medfm.models.card import ModelCard, Preprocess
from medfm.models.zoo import (
    MODELS,
    create_model,
    get_model_card,
    list_model_cards,
    register_model_card,
    save_model,
    weights_available,
)

__all__ = [
    "MODELS",
    "ModelAdapter",
    "ModelCard",
    "Preprocess",
    "create_model",
    "get_model_card",
    "list_model_cards",
    "register_model_card",
    "save_model",
    "weights_available",
]
