"""Progress reporting usable from every layer: a Rich bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def track(
    items: Iterable[T],
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    console: Any = None,
    live: bool | None = None,
    every_s: float = 10.0,
    weight: Callable[[T], int] | None = None,
) -> Iterator[T]:
    """Yield ``items`` while reporting progress and rate (``unit``/s) on stderr.

    ``weight(item)`` = how many units an item counts for (e.g. images in a batch); ``total``
    is then in units too.
    """
    if total is None and weight is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    if live is None:
        live = sys.stderr.isatty()
    if live:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = [
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
        ]
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(desc, total=total, rate="")
            start = time.perf_counter()
            i = 0
            for item in items:
                yield item
                step = weight(item) if weight else 1
                i += step
                el = time.perf_counter() - start
                bar.update(task, advance=step, rate=_rate(i, el, unit) if el > 0 else "")
        return
    start = last = time.perf_counter()
    # a log shows that slow work started (a one-cell bench, or one epoch, is otherwise silent until
    # it ends); a timer, so a run that fails fast prints its error line alone
    notice = _first_item_notice(desc, total, unit, every_s) if desc else None
    i = 0
    try:
        for item in items:
            yield item
            if notice is not None:  # the first item is done (fetched and consumed: either may be the slow part)
                notice.cancel()
                notice = None
            i += weight(item) if weight else 1
            now = time.perf_counter()
            if now - last >= every_s:
                last = now
                of = f"/{total}" if total else ""
                print(f"{desc}: {i}{of} ({_rate(i, now - start, unit)})", file=sys.stderr, flush=True)
    finally:
        if notice is not None:
            notice.cancel()
    if desc and i:
        el = time.perf_counter() - start
        print(f"{desc}: done {i} in {el:.1f}s", file=sys.stderr, flush=True)


def _rate(n: int, seconds: float, unit: str) -> str:
    """"12.3 img/s", or "805 s/epoch" for slow units (where the first would print "0.0 epoch/s")."""
    if n <= 0:  # items of weight 0 so far
        return f"0 {unit}"
    return f"{n / seconds:.1f} {unit}/s" if n >= 0.1 * seconds else f"{seconds / n:.0f} s/{unit}"


def _first_item_notice(desc: str, total: int | None, unit: str, after_s: float) -> Any:
    """A started timer printing one line if the first item is not done within ``after_s``."""
    import threading

    of = f"/{total}" if total else ""
    timer = threading.Timer(after_s, lambda: print(
        f"{desc}: 0{of}, the first {unit} still running after {after_s:g}s", file=sys.stderr, flush=True))
    timer.daemon = True
    timer.start()
    return timer
