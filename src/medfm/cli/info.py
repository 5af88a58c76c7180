"""``medfm info FILE_OR_DIR``: what an image file or DICOM series holds (shape, spacing, orientation)."""

from __future__ import annotations

from pathlib import Path

import typer

from medfm.cli._common import Json


def register(app: typer.Typer) -> None:
    app.command("info")(info_command)


def info_command(
    path: Path = typer.Argument(..., help="Image file (DICOM, NIfTI, NRRD/MHA, PNG/JPEG/TIFF) or DICOM series folder."),
    series_uid: str | None = typer.Option(None, "--series-uid", help="Series to read when a folder holds several."),
    allow_unreadable: bool = typer.Option(
        False, "--allow-unreadable", help="Read a series folder without the files that are not readable DICOM (named in a warning)."
    ),
    allow_gaps: bool = typer.Option(
        False, "--allow-gaps", help="Read a series with missing slices or irregular slice spacing (named in a warning)."
    ),
    json_out: Json = False,
) -> None:
    """Show modality, shape, dtype, spacing, origin, orientation and value range of an image."""
    from medfm.cli._common import out_console, print_json, warnings_on_stderr
    from medfm.io import describe, read_image
    from medfm.io.signal import is_signal_path

    if is_signal_path(path):  # WFDB record / header, EDF, DICOM waveform
        _signal_info(path, json_out)
        return
    opts = {"series_uid": series_uid, "allow_unreadable": allow_unreadable, "allow_gaps": allow_gaps}
    with warnings_on_stderr():
        image = read_image(path, **{k: v for k, v in opts.items() if v})
    info = describe(image)
    if image.meta.get("skipped_files"):
        info["skipped_files"] = list(image.meta["skipped_files"])
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


def _signal_info(path: Path, json_out: bool) -> None:
    """Summary of a physiological signal (WFDB record, DICOM waveform, EDF): leads, rate, duration."""
    from rich.markup import escape
    from rich.table import Table

    from medfm.cli._common import out_console, print_json
    from medfm.io.signal import describe_signal, read_signal, read_wfdb_annotations

    sig = read_signal(path)
    if sig.meta.get("format") == "WFDB":
        header = Path(sig.meta["path"])
        for ext in ("atr", "qrs", "ecg"):
            if header.with_suffix(f".{ext}").is_file():
                sig.annotations = read_wfdb_annotations(header, ext)
                break
    info = describe_signal(sig)
    if json_out:
        print_json(info)
        return
    table = Table(show_header=False, title=escape(str(path)), title_justify="left")
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value")
    table.add_row("format", str(info["format"]))
    table.add_row("kind", "signal (channels x time)")
    table.add_row("leads", escape(", ".join(info["channels"])))
    table.add_row("units", escape(", ".join(dict.fromkeys(info["units"]))))
    table.add_row("sampling rate (Hz)", f"{info['fs_hz']:g}")
    table.add_row("samples x duration", f"{info['n_samples']} x {info['duration_s']:g} s")
    table.add_row("start time", info["start_time"] or "-")
    lo, hi = info["value_range"]
    table.add_row("value range", "-" if lo is None else f"{lo:g} .. {hi:g}")
    if "annotations" in info:
        a = info["annotations"]
        counts = ", ".join(f"{k} {v}" for k, v in a["counts"].items())
        table.add_row("annotations", escape(f"{Path(a['source']).name}: {a['n']} ({counts})"))
    if info.get("comments"):
        more = " ..." if len(info["comments"]) > 4 else ""
        table.add_row("header comments", escape("; ".join(info["comments"][:4]) + more))
    out_console.print(table)
