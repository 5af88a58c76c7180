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

Bad input is HTTP 400 with one line in ``detail``; an unknown image id is 404; an upload (or
what it decodes or unzips to) over a limit is 413.

For a network (``_Guard``, in front of every route): a ``Host`` header outside ``allowed_hosts``
is 403 (DNS rebinding); with a ``token`` every route but ``/`` (a page without data) and
``/health`` needs ``Authorization: Bearer <token>`` (401); POST/PUT/PATCH/DELETE refuse a
cross-origin ``Origin``, a browser request (one with ``Origin``) without ``X-Medfm-Client``
(403), and the content types a cross-site form can send without a CORS preflight (415); request
bodies are counted while they stream (chunked ones too) and refused at the limit (413).
"""

# no "from __future__ import annotations": FastAPI reads the endpoint annotations at runtime,
# and they name classes local to create_app (fastapi is imported lazily, an optional extra)
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from medfm._optional import optional_import
from medfm.errors import MedfmError
from medfm.serve.service import SegmentationService, TooLarge
from medfm.serve.viewer import VIEWER_HTML

log = logging.getLogger("medfm.serve")

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
OPEN_PATHS = ("/", "/health")  # served without a token: the viewer page holds no data
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")
# what a cross-site <form> or a fetch without a preflight may send (the CORS "simple" content types)
SIMPLE_CONTENT_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data")
MAX_JSON_BYTES = 2**20  # a prompt is a few hundred bytes


def host_name(host: str) -> str:
    """The name in a ``Host`` / ``Origin`` authority without its port, lower case (``[::1]:8000`` -> ``::1``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address) can only be reached from this machine."""
    if host_name(host) == "localhost":
        return True
    try:
        return ipaddress.ip_address(host_name(host)).is_loopback
    except ValueError:
        return False


class _Guard:
    """ASGI middleware: Host allow-list, token, CSRF checks and streamed body limits (module doc)."""

    def __init__(self, app: Any, token: str | None, allowed_hosts: Iterable[str], upload_limit: int) -> None:
        self.app = app
        self.token = token.encode() if token else None
        hosts = {host_name(h) for h in allowed_hosts}
        self.any_host = "*" in hosts
        self.allowed = hosts - {"*"}
        self.upload_limit = upload_limit
        # raised from receive() when a body passes its limit while it streams in: an HTTPException,
        # so FastAPI's body parsing passes it on and the app answers 413 with a JSON detail
        self.http_error = optional_import("starlette.exceptions").HTTPException

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        refusal = self._refusal(headers, method, path)
        if refusal is not None:
            log.warning("%s %s refused: %d %s", method, path, refusal[0], refusal[1])
            await _reply(send, refusal[0], refusal[1], www_auth=refusal[0] == 401)
            return
        upload = method == "POST" and (path == "/images" or path.startswith("/pacs/store/"))  # files, mask zips
        limit = self.upload_limit if upload else MAX_JSON_BYTES
        declared = headers.get("content-length", "")
        what = "the upload" if upload else "the request body"
        if declared.isdigit() and int(declared) > limit:  # refused before a byte of it is read
            log.warning("%s %s refused: 413 Content-Length %s", method, path, declared)
            await _reply(send, 413, f"{what} is {declared} bytes, more than the service accepts ({limit})")
            return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise self.http_error(413, f"{what} is more than the service accepts ({limit} bytes)")
            return message

        started, status, t0 = False, 0, time.perf_counter()

        async def tracked(message: Any) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
            await send(message)

        await self.app(scope, counted, tracked)
        # the path holds image ids only; the query (an upload's file name) is never logged
        log.info("%s %s %d %.0f ms", method, path, status, 1000 * (time.perf_counter() - t0))

    def _refusal(self, headers: dict[str, str], method: str, path: str) -> tuple[int, str] | None:
        """(status, reason) when the request must not reach the app, else None."""
        host = headers.get("host", "")
        if not self.any_host and host_name(host) not in self.allowed:
            return 403, f"host {host!r} is not served here (allowed: {', '.join(sorted(self.allowed))}; medfm serve --allowed-host NAME)"
        if self.token is not None and path not in OPEN_PATHS:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token):
                return 401, "a valid token is needed: send 'Authorization: Bearer TOKEN' (viewer: open /#token=TOKEN)"
        if method in STATE_CHANGING:
            origin = headers.get("origin")
            if origin is not None:
                if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
                    return 403, f"cross-origin request from {origin!r} refused"
                if "x-medfm-client" not in headers:
                    return 403, "a browser request that changes state needs the header X-Medfm-Client"
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype in SIMPLE_CONTENT_TYPES:
                return 415, f"content type {ctype} is refused (send application/octet-stream for files, application/json for prompts)"
        return None


async def _reply(send: Any, status: int, detail: str, www_auth: bool = False) -> None:
    """A JSON ``{"detail": ...}`` response sent straight from the middleware."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if www_auth:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _add_error_handlers(app: Any, responses: Any) -> None:
    """Bad input (a MedfmError or a request that fails validation) answers 400 with one line."""

    @app.exception_handler(MedfmError)
    async def medfm_error(request: Any, exc: MedfmError) -> Any:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return responses.JSONResponse({"detail": detail}, status_code=413 if isinstance(exc, TooLarge) else 400)

    @app.exception_handler(optional_import("fastapi.exceptions").RequestValidationError)
    async def bad_request(request: Any, exc: Any) -> Any:
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "request"
        return responses.JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=400)


def create_app(
    service: SegmentationService,
    token: str | None = None,
    allowed_hosts: Iterable[str] = LOOPBACK_HOSTS,
    pacs: str | None = None,
) -> Any:
    """A FastAPI app serving ``service`` (run it with uvicorn, or ``medfm serve``). ``token``: every
    route but ``/`` and ``/health`` needs it as a bearer token; ``allowed_hosts``: the names the
    ``Host`` header may carry (any port; ``"*"``: any); ``pacs``: a DICOMweb URL, adds the ``/pacs``
    routes (``medfm.serve.pacs_routes``), behind the same guard."""
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
    app.add_middleware(_Guard, token=token, allowed_hosts=tuple(allowed_hosts), upload_limit=service.max_bytes)

    @app.get("/", response_class=responses.HTMLResponse)
    def viewer() -> str:
        return VIEWER_HTML.replace("{{MODEL}}", service.model_id)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": service.model_id, "images": len(service.images()), "medfm": __version__}

    @app.post("/images")
    async def upload(request: fastapi.Request, name: str = "upload") -> dict[str, Any]:
        data = bytearray()
        async for chunk in request.stream():  # counted as it arrives (the guard stops it at the limit too)
            data += chunk
            if len(data) > service.max_bytes:
                raise TooLarge(f"{name}: more than the {service.max_bytes} bytes the service accepts")
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

    if pacs:
        from medfm.serve.pacs_routes import add_pacs_routes

        add_pacs_routes(app, service, pacs)
    return app
