"""Classification protocols: knn, linear_probe, prototype (on embeddings), zero_shot,
finetune (on a model and images), scratch (ResNet-18 from scratch on images).

Each protocol module registers a ``Protocol`` in ``PROTOCOLS`` on import::

    from medfm.tasks.classification import PROTOCOLS
    proto = PROTOCOLS.get("linear_probe")
    preds = proto.run(feature_splits, proto.make_config({"c_grid": [0.1, 1.0]}), seed=0, shots=8)

Heavy libraries (torch, transformers, peft) are imported inside ``run``.
"""

from medfm.tasks.classification import finetune, knn, linear_probe, prototype, scratch, zero_shot
from medfm.tasks.classification.base import FEW_SHOT_K, PROTOCOLS, Protocol, get_protocol, register_protocol
from medfm.tasks.classification.data import FeatureSplits, ImageSplits, Predictions, subsample_shots
from medfm.tasks.classification.finetune import FinetuneConfig
from medfm.tasks.classification.knn import KNNConfig
from medfm.tasks.classification.linear_probe import LinearProbeConfig
from medfm.tasks.classification.prototype import PrototypeConfig
from medfm.tasks.classification.scratch import ScratchConfig
from medfm.tasks.classification.zero_shot import ZeroShotConfig

__all__ = [
    "FEW_SHOT_K",
    "PROTOCOLS",
    "FeatureSplits",
    "FinetuneConfig",
    "ImageSplits",
    "KNNConfig",
    "LinearProbeConfig",
    "Predictions",
    "Protocol",
    "PrototypeConfig",
    "ScratchConfig",
    "ZeroShotConfig",
    "finetune",
    "get_protocol",
    "knn",
    "linear_probe",
    "prototype",
    "register_protocol",
    "scratch",
    "subsample_shots",
    "zero_shot",
]
