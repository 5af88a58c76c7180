"""``medfm deid IN OUT``: de-identify DICOM files (PS3.15 Basic Application Level Confidentiality Profile)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from medfm.cli._common import Force, Json


def register(app: typer.Typer) -> None:
    app.command("deid")(deid_command)


def deid_command(
    inp: Path = typer.Argument(..., help="A DICOM file or a folder of them (searched recursively); never changed."),
    out: Path = typer.Argument(..., help="Output folder (not inside IN; created): OUT/<series>/<instance>.dcm."),
    seed: str = typer.Option(
        None, "--seed", envvar="MEDFM_DEID_SEED",
        help="Secret that fixes the pseudonym mapping: the same seed maps a UID / ID to the same value in every run "
        "(keep it secret; default: a new random one, so runs are not linkable).",
    ),
    force: Force = False,
    json_out: Json = False,
) -> None:
    """De-identify DICOM: names, IDs, dates and UIDs replaced consistently (dicognito), the profile's other
    attributes and private tags removed, pixel data unchanged. Writes OUT/deid_audit.json (what was removed, no values)."""
    from medfm.cli._common import err_console, out_console, print_json
    from medfm.io.deid import Deidentifier, deidentify_folder

    audit = deidentify_folder(inp, out, deidentifier=Deidentifier(seed=seed or os.environ.get("MEDFM_DEID_SEED")),
                              force=force)
    summary = {"n_files": audit["n_files"], "n_skipped_not_dicom": audit["n_skipped_not_dicom"], "n_failed": audit["n_failed"],
               "out": str(out), "audit": str(out / "deid_audit.json")}
    if json_out:
        print_json(summary)
        return
    removed = sum(len(e["removed"]) for e in audit["entries"])
    replaced = sum(len(e["replaced"]) for e in audit["entries"])
    private = sum(e["private_removed"] for e in audit["entries"])
    out_console.print(
        f"deid: {audit['n_files']} files -> {out} ({replaced} attributes replaced, {removed} removed, "
        f"{private} private removed; {audit['n_skipped_not_dicom']} non-DICOM files skipped)"
    )
    if audit["n_failed"]:
        err_console.print(f"deid: warning: {audit['n_failed']} DICOM files could not be de-identified and were not written")
    burned = sum(e["burned_in_annotation"] for e in audit["entries"])
    if burned:
        err_console.print(f"deid: warning: {burned} files declare burned-in annotation: pixel data is not cleaned")
