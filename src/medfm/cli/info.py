"""``medfm info FILE_OR_DIR``: what an image file or DICOM series holds (shape, spacing, orientation)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("info")(info_command)


def info_command(
    path: Path = typer.Argument(..., help="Image file (DICOM, NIfTI, NRRD/MHA, PNG/JPEG/TIFF) or DICOM series folder."),
    series_uid: str | None = typer.Option(None, "--series-uid", help="Series to read when a folder holds several."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
) -> None:
    """Show modality, shape, dtype, spacing, origin, orientation and value range of an image."""
    from medfm.cli._common import out_console, print_json
    from medfm.io import describe, read_image

    image = read_image(path, **({"series_uid": series_uid} if series_uid else {}))
    info = describe(image)
    if json_out:
        print_json(info)
        return
    from rich.table import Table

    def fmt(values: list[float] | None) -> str:
        return "-" if values is None else " x ".join(f"{v:g}" for v in values)

    from rich.markup import escape

    axes = "z, y, x" if info["spatial_dims"] == 3 else "y, x"
    table = Table(show_header=False, title=escape(str(path)), title_justify="left")
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value")
    table.add_row("format", str(info["format"] or "-"))
    table.add_row("modality", info["modality"])
    table.add_row(f"shape (C, {axes.upper()})", " x ".join(str(s) for s in info["shape"]))
    table.add_row("dtype", info["dtype"])
    table.add_row(f"spacing ({info['spacing_unit']}; {axes})", fmt(info["spacing"]))
    table.add_row(f"origin (mm; {axes})", fmt(info["origin"]) if info["orientation"] else "-")
    table.add_row("orientation (x, y, z axes point to)", info["orientation"] or "- (no patient geometry)")
    lo, hi = info["value_range"]
    table.add_row("value range", "-" if lo is None else f"{lo:g} .. {hi:g}")
    if "window" in info:
        table.add_row("window (center, width)", ", ".join(f"{v:g}" for v in info["window"]))
    out_console.print(table)
