"""The REST service (FastAPI) for interactive segmentation, with the browser viewer at ``/``.

Endpoints (JSON unless said otherwise; coordinates are pixels of the displayed slice, boxes
``[x0, y0, x1, y1]``, points ``[x, y]``):

- ``GET  /health``: ``{"status": "ok", "model": id, "images": n}``
- ``POST /images?name=FILE``: body = the file's bytes (PNG/JPEG/TIFF/DICOM/NIfTI/NRRD, or a .zip
  of one DICOM series); returns its description: ``id``, ``width``, ``height``, ``depth`` (slices;
  1 for a 2D image), ``slice`` (the middle one, used when a request names none), ``spacing_mm``
- ``GET  /images``: the images held; ``DELETE /images/{id}``
- ``GET  /images/{id}/display.png[?slice=Z]``: the 8-bit rendering of a slice the viewer draws on
- ``POST /images/{id}/segment``: ``{"box": [...], "points": [[...]], "labels": [1, 0], "slice": Z}`` ->
  ``{"mask_png": base64 PNG, "area_px", "area_mm2" (when the file has pixel spacing), "score", "seconds"}``;
  the image encoder runs on the first prompt to a slice, later prompts reuse its embedding
- ``POST /images/{id}/propagate``: the same prompt body (+ ``"margin"`` px) on a key slice of a
  volume -> ``{"masks": {slice: base64 PNG}, "voxels", "volume_ml" (with spacing), "seconds"}``

Bad input is HTTP 400 with one line in ``detail``; an unknown image id is 404.
"""

# no "from __future__ import annotations": FastAPI reads the endpoint annotations at runtime,
# and they name classes local to create_app (fastapi is imported lazily, an optional extra)
from typing import Any

from medfm._optional import optional_import
from medfm.errors import InputError, MedfmError
from medfm.serve.service import SegmentationService
from medfm.serve.viewer import VIEWER_HTML


def _add_error_handlers(app: Any, responses: Any) -> None:
    """Bad input (a MedfmError or a request that fails validation) answers 400 with one line."""

    @app.exception_handler(MedfmError)
    async def medfm_error(request: Any, exc: MedfmError) -> Any:
        return responses.JSONResponse({"detail": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}, status_code=400)

    @app.exception_handler(optional_import("fastapi.exceptions").RequestValidationError)
    async def bad_request(request: Any, exc: Any) -> Any:
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "request"
        return responses.JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=400)


def create_app(service: SegmentationService) -> Any:
    """A FastAPI app serving ``service`` (run it with uvicorn, or ``medfm serve``)."""
    fastapi = optional_import("fastapi")
    responses = optional_import("fastapi.responses")
    pydantic = optional_import("pydantic")
    run_in_threadpool = optional_import("starlette.concurrency").run_in_threadpool
    from medfm import __version__

    class Prompt(pydantic.BaseModel):
        box: list[float] | None = None
        points: list[list[float]] | None = None
        labels: list[int] | None = None
        slice: int | None = None
        margin: float = 3.0

    app = fastapi.FastAPI(title="medfm segmentation service", version=__version__)

    def not_found(image_id: str) -> Any:
        return fastapi.HTTPException(404, f"no image {image_id!r} here (never uploaded, or dropped to make room: upload it again)")

    _add_error_handlers(app, responses)

    @app.get("/", response_class=responses.HTMLResponse)
    def viewer() -> str:
        return VIEWER_HTML.replace("{{MODEL}}", service.model_id)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": service.model_id, "images": len(service.images()), "medfm": __version__}

    @app.post("/images")
    async def upload(request: fastapi.Request, name: str = "upload") -> dict[str, Any]:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > service.max_bytes:  # refuse before reading it
            raise InputError(f"{name}: {size} bytes is more than the service accepts ({service.max_bytes})")
        data = await request.body()
        # reading and embedding take seconds: off the event loop, so other requests are served
        return await run_in_threadpool(service.add_image, data, name)

    @app.get("/images")
    def images() -> list[dict[str, Any]]:
        return service.images()

    @app.get("/images/{image_id}/display.png")
    def display(image_id: str, slice: int | None = None) -> Any:
        try:
            png = service.display(image_id, slice)
        except KeyError:
            raise not_found(image_id) from None
        return responses.Response(png, media_type="image/png")

    @app.post("/images/{image_id}/segment")
    def segment(image_id: str, prompt: Prompt) -> dict[str, Any]:
        try:
            return service.segment(image_id, prompt.box, prompt.points, prompt.labels, prompt.slice)
        except KeyError:
            raise not_found(image_id) from None

    @app.post("/images/{image_id}/propagate")
    def propagate(image_id: str, prompt: Prompt) -> dict[str, Any]:
        try:
            return service.propagate(image_id, prompt.slice, prompt.box, prompt.points, prompt.labels, prompt.margin)
        except KeyError:
            raise not_found(image_id) from None

    @app.delete("/images/{image_id}")
    def drop(image_id: str) -> dict[str, Any]:
        try:
            service.drop(image_id)
        except KeyError:
            raise not_found(image_id) from None
        return {"dropped": image_id}

    return app
