"""The REST service and web viewer for interactive (prompted) segmentation: ``medfm serve``.

Importing this package does not import FastAPI (the ``serve`` extra): ``create_app`` does.
"""

from medfm.serve.app import create_app
from medfm.serve.service import SegmentationService

__all__ = ["SegmentationService", "create_app"]
