"""``medfm serve``: the REST service and web viewer for interactive segmentation (box / point prompts)."""

from __future__ import annotations

import logging

import typer

from medfm.errors import ConfigError


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)


def serve_command(
    model: str = typer.Option(
        ..., "--model", "-m", help="Zoo segmenter id (e.g. medsam/vit-base, sam/vit-base) or a saved model folder."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    max_images: int = typer.Option(16, "--max-images", help="Images / volumes held (least recently used out)."),
    max_embeddings: int = typer.Option(
        64, "--max-embeddings", help="Slice embeddings kept in memory (SAM ViT-B: 4 MiB each; least recently used out)."
    ),
    max_upload_mb: int = typer.Option(512, "--max-upload-mb", help="Largest accepted upload (MiB)."),
    max_voxels_m: float = typer.Option(
        135.0, "--max-voxels", help="Most decoded voxels per image, in millions (checked from the file's header before decoding; 512x512x512 fits)."
    ),
    max_memory_mb: int = typer.Option(2048, "--max-memory-mb", help="Pixel data kept for all images together (MiB; least recently used out)."),
    max_unzipped_mb: int = typer.Option(2048, "--max-unzipped-mb", help="Most bytes a zipped series may expand to (MiB)."),
    max_zip_files: int = typer.Option(5000, "--max-zip-files", help="Most files in a zipped series."),
    max_points: int = typer.Option(64, "--max-points", help="Most prompt points per request."),
    token: str = typer.Option(
        None, "--token", envvar="MEDFM_SERVE_TOKEN", show_default=False,
        help="Clients must send 'Authorization: Bearer TOKEN' (viewer: open /#token=TOKEN). Prefer the env variable MEDFM_SERVE_TOKEN.",
    ),
    allowed_hosts: list[str] = typer.Option(  # noqa: B008 - typer's way to declare a repeatable option
        None, "--allowed-host", help="A name clients use to reach the server, besides localhost / 127.0.0.1 / ::1 (repeatable; '*': any)."
    ),
    insecure: bool = typer.Option(False, "--insecure", help="Allow a non-loopback --host without a token."),
    pacs: str = typer.Option(
        None, "--pacs", show_default=False, help="A DICOMweb PACS for the viewer (dicomweb://HOST:PORT/dicom-web): pick a study, store masks back."
    ),
    deid: bool = typer.Option(False, "--deid", help="De-identify DICOM uploads (PS3.15 basic profile) before they are kept; keep no file names."),
    device: str = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    precision: str = typer.Option("auto", "--precision", help="auto | bf16 | fp32 for the image encoder."),
) -> None:
    """Serve a promptable segmenter over HTTP: upload an image, send boxes or points, get masks.
    Open http://HOST:PORT/ for the viewer; the API is described at /docs."""
    from medfm._optional import optional_import
    from medfm._runtime import check_precision, configure_threads
    from medfm.cli._common import err_console
    from medfm.models import create_model
    from medfm.serve import SegmentationService, create_app
    from medfm.tasks.segmentation.model import is_trained_model_dir

    check_precision(precision, "--precision")
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be 1..65535, got {port}")
    if min(max_images, max_embeddings, max_upload_mb) < 1:
        raise ConfigError("--max-images, --max-embeddings and --max-upload-mb must be >= 1")
    if min(max_voxels_m, max_memory_mb, max_unzipped_mb, max_zip_files, max_points) <= 0:
        raise ConfigError("--max-voxels, --max-memory-mb, --max-unzipped-mb, --max-zip-files and --max-points must be > 0")
    from medfm.serve.app import LOOPBACK_HOSTS, is_loopback

    token = token or None
    if not is_loopback(host) and token is None and not insecure:
        raise ConfigError(
            f"--host {host} is reachable from the network: give a token (--token or MEDFM_SERVE_TOKEN), or --insecure to serve without one"
        )
    hosts = [*LOOPBACK_HOSTS, *(allowed_hosts or [])]
    if host not in ("0.0.0.0", "::", "") and host not in hosts:
        hosts.append(host)  # the address it is bound to is a name clients use
    if is_trained_model_dir(model):
        raise ConfigError(
            f"{model}: a trained segmentation model (train-seg / seg-ensemble) takes no prompts; serve needs a "
            "promptable one (SAM family, e.g. medsam/vit-base). Segment files with `medfm segment --model DIR`"
        )
    uvicorn = optional_import("uvicorn")
    optional_import("fastapi")
    if deid:  # refused now, not at the first upload
        optional_import("dicognito")
        optional_import("dicomanonymizer")
    configure_threads()
    adapter = create_model(model, device=device, precision=precision)
    service = SegmentationService(
        adapter, max_images=max_images, max_bytes=max_upload_mb * 2**20, max_embeddings=max_embeddings,
        max_voxels=int(max_voxels_m * 1e6), max_held_bytes=max_memory_mb * 2**20, max_zip_files=max_zip_files,
        max_unzipped_bytes=max_unzipped_mb * 2**20, max_points=max_points, deid=deid,
    )
    app = create_app(service, token=token, allowed_hosts=hosts, pacs=pacs or None)
    auth = "token required (open /#token=TOKEN)" if token else "NO token"
    err_console.print(
        f"serve: {service.model_id} on http://{host}:{port}/ (viewer), API at /docs; {auth}; "
        f"Host names: {', '.join(hosts)}{'; uploads de-identified' if deid else ''}{'; PACS ' + pacs if pacs else ''}; Ctrl-C stops"
    )
    handler = _log_to_stderr()
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        logging.getLogger("medfm.serve").removeHandler(handler)


def _log_to_stderr() -> logging.Handler:
    """Requests and uploads to stderr (``medfm.serve``: methods, paths with image ids, sizes, times;
    never file names, query strings or DICOM header values); uvicorn's access log stays off."""
    logger = logging.getLogger("medfm.serve")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler
