"""``medfm datasets list | show | verify``: the dataset registry from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from medfm.cli._common import DataDir, Json

datasets_app = typer.Typer(help="Dataset cards: list them, show one, verify local files.", no_args_is_help=True)

def register(app: typer.Typer) -> None:
    app.add_typer(datasets_app, name="datasets")


def _card_row(card: Any, present: bool) -> dict[str, Any]:
    return {
        "name": card.name, "task": card.task, "modality": card.modality, "ndim": card.ndim,
        "classes": len(card.labels), "splits": list(card.splits), "license": card.license, "present": present,
    }


@datasets_app.command("list")
def list_command(
    data_dir: DataDir = None,
    json_out: Json = False,
) -> None:
    """List every registered dataset card and whether its files are present locally."""
    from rich.table import Column, Table

    from medfm.cli._common import out_console, print_json
    from medfm.data import list_cards
    from medfm.data.fetch import present

    rows = [_card_row(card, present(card, data_dir)) for card in list_cards()]
    if json_out:
        print_json(rows)
        return
    table = Table(*(Column(h, no_wrap=True) for h in ("name", "task", "D", "classes")),
                  Column("license", no_wrap=True, overflow="ellipsis", max_width=14), Column("local", no_wrap=True))
    for r in rows:
        table.add_row(r["name"], r["task"], str(r["ndim"]), str(r["classes"] or ""), r["license"],
                      "yes" if r["present"] else "-")
    out_console.print(table)


@datasets_app.command("show")
def show_command(
    name: str = typer.Argument(..., help="Dataset name (see `medfm datasets list`) or a dataset folder."),
    data_dir: DataDir = None,
    json_out: Json = False,
) -> None:
    """Show one dataset card and where its files are (or would be) on this machine."""
    from medfm._config import to_dict
    from medfm._paths import data_dir as resolve_data_dir
    from medfm.cli._common import out_console, print_json
    from medfm.data import get_card, is_path_like
    from medfm.data.fetch import candidate_dirs, find_local, present, self_contained

    if is_path_like(name):
        from medfm.data.folder import load_folder

        card = load_folder(Path(name)).card
    else:
        card = get_card(name)
    base, downloadable = resolve_data_dir(data_dir)
    info = to_dict(card)
    info["present"] = present(card, data_dir)
    info["data_dir"] = str(base)
    info["downloadable"] = downloadable and any(e.url for e in card.files)
    info["local_files"] = {e.path: (str(p) if (p := find_local(card, e, base)) else None) for e in card.files}
    info["bundled"] = self_contained(card) and not is_path_like(name)
    if not card.files:
        dirs = [d for d in candidate_dirs(card, base) if d != base and d.is_dir()]
        info["local_folder"] = str(dirs[0]) if info["present"] and dirs else None
    if json_out:
        print_json(info)
        return
    out_console.print(f"[bold]{card.name}[/bold]: {card.description}")
    lines = [
        ("task", card.task), ("modality", card.modality), ("dimensions", f"{card.ndim}D"),
        ("labels", ", ".join(f"{i}={lab}" for i, lab in enumerate(card.labels)) or "-"),
        ("splits", ", ".join(card.splits)), ("license", card.license), ("citation", card.citation),
    ]
    for key, value in card.options.items():
        if key not in ("probe", "family"):
            lines.append((key, str(value)))
    for entry in card.files:
        checksum = f"sha256 {entry.sha256}" if entry.sha256 else f"md5 {entry.md5}" if entry.md5 else "no checksum"
        lines.append(("file", f"{entry.path} ({checksum}) {entry.url or ''}".rstrip()))
    where = info.get("local_folder") or next((p for p in info["local_files"].values() if p), None)
    if info["bundled"]:
        where = "bundled with an installed package (no download)"
    lines.append(("local", where or f"absent under {base}"))
    for key, value in lines:
        out_console.print(f"  {key:<11} {value}")


@datasets_app.command("verify")
def verify_command(
    name: str | None = typer.Argument(None, help="Dataset name or folder; default: every dataset present."),
    data_dir: DataDir = None,
    no_read: bool = typer.Option(False, "--no-read", help="Check checksums and counts only; do not read every file."),
    json_out: Json = False,
) -> None:
    """Check checksums, readability and counts per split; exit 2 when a file is corrupt or unreadable.

    Downloads nothing. Without NAME, datasets whose files are absent are reported as absent,
    not as failures.
    """
    from rich.table import Column, Table

    from medfm.cli._common import err_console, out_console, print_json
    from medfm.data import verify, verify_all

    if name is not None:
        results = [verify(name, data_dir, read=not no_read, progress=True, raise_errors=True)]
    else:
        results = verify_all(data_dir, read=not no_read, progress=True)
    failed = [r for r in results if r["status"] == "failed"]
    if json_out:
        print_json(results if name is None else results[0])
    else:
        table = Table(*(Column(h, no_wrap=True) for h in ("name", "status", "hash", "readable", "samples")))
        for r in results:
            if r["status"] == "absent":
                continue
            ck = {True: "ok", False: "MISMATCH", None: "-"}[r["checksum_ok"]]
            rd = {True: "ok", False: "NO", None: "-"}[r["readable"]]
            counts = " ".join(f"{k}={v}" for k, v in r["counts"].items())
            table.add_row(r["name"], r["status"], ck, rd, counts)
        out_console.print(table)
        absent = [r["name"] for r in results if r["status"] == "absent"]
        if absent:
            out_console.print(f"absent ({len(absent)}): {', '.join(absent)}")
    for r in failed:
        err_console.print(f"medfm: error: {r['name']}: {r['error']}", markup=False, highlight=False)
    if failed:
        raise typer.Exit(code=2)
