"""Conventions shared by every command: JSON output, progress on stderr, output folders."""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from medfm._config import to_dict

T = TypeVar("T")

# stdout is for results (tables or --json); everything else goes to stderr.
out_console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(to_dict(obj), indent=2, default=str) + "\n")
    sys.stdout.flush()


def interactive() -> bool:
    """True when stderr is a terminal and not CI: only then draw live progress bars."""
    return err_console.is_terminal and not os.environ.get("CI")


def progress(items: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it") -> Iterator[T]:
    """Iterate with a Rich progress bar on a terminal, plain periodic lines otherwise."""
    from medfm._progress import track

    yield from track(items, total=total, desc=desc, unit=unit, console=err_console, live=interactive())


# The options every command shares, declared once (typer ``Annotated`` aliases):
#   def cmd(out: OutDir, force: Force = False, json_out: Json = False, device: Device = None,
#           data_dir: DataDir = None): ...
# ``OutDir`` is a required --out; ``OptionalOutDir`` (default None) writes only when given.
DATA_DIR_HELP = "Data location (default: $MEDFM_DATA, else ~/.cache/medfm/data)."
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
OutDir = Annotated[Path, typer.Option("--out", help="Output folder (created; never overwritten without --force).")]
OptionalOutDir = Annotated[
    Path | None, typer.Option("--out", help="Output folder (created; never overwritten without --force).")
]
Force = Annotated[bool, typer.Option("--force", help="Write into a non-empty --out (files are replaced one by one).")]
Device = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1 (default: CUDA when present).")]
DataDir = Annotated[Path | None, typer.Option("--data-dir", help=DATA_DIR_HELP)]


@contextmanager
def output_folder(out: Path | None, force: bool = False, resume: bool = False) -> Iterator[Path | None]:
    """``prepare_out_dir(out)`` for the block; when the block fails and this call created the
    folder, it is removed again if still empty (a bad input never leaves an empty --out)."""
    from medfm._paths import prepare_out_dir

    if out is None:
        yield None
        return
    existed = Path(out).expanduser().exists()
    folder = prepare_out_dir(out, force=force, resume=resume)
    try:
        yield folder
    except BaseException:
        if not existed and folder.is_dir() and not any(folder.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)
        raise


@contextmanager
def warnings_on_stderr() -> Iterator[None]:
    """Library warnings (e.g. files skipped when reading a series) as one 'warning:' line each on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            yield
        finally:
            from rich.markup import escape

            for w in caught:
                if "medfm" in Path(w.filename).parts:
                    err_console.print(f"[yellow]warning:[/] {escape(' '.join(str(w.message).split()))}")
                else:  # other libraries' warnings as Python shows them
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)
