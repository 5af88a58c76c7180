"""``medfm serve``: the REST service and web viewer for interactive segmentation (box / point prompts)."""

from __future__ import annotations

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
    if is_trained_model_dir(model):
        raise ConfigError(
            f"{model}: a trained segmentation model (train-seg / seg-ensemble) takes no prompts; serve needs a "
            "promptable one (SAM family, e.g. medsam/vit-base). Segment files with `medfm segment --model DIR`"
        )
    uvicorn = optional_import("uvicorn")
    optional_import("fastapi")
    configure_threads()
    adapter = create_model(model, device=device, precision=precision)
    service = SegmentationService(
        adapter, max_images=max_images, max_bytes=max_upload_mb * 2**20, max_embeddings=max_embeddings
    )
    app = create_app(service)
    err_console.print(f"serve: {service.model_id} on http://{host}:{port}/ (viewer), API at /docs; Ctrl-C stops")
    uvicorn.run(app, host=host, port=port, log_level="warning")
