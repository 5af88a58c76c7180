"""Conventions shared by every command: JSON output, progress on stderr, output folders."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

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
