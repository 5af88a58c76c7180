"""The REST service and web viewer for interactive (prompted) segmentation: ``medfm serve``."""

from medfm.serve.service import SegmentationService

__all__ = ["SegmentationService", "create_app"]


def create_app(service: SegmentationService):  # noqa: ANN201  (FastAPI is an optional extra)
    """A FastAPI app for ``service``; see ``medfm.serve.app``."""
    from medfm.serve.app import create_app as _create

    return _create(service)
