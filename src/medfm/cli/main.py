"""Entry point: ``medfm`` = ``run()``; tests call ``main(argv) -> exit code`` in-process.

A ``MedfmError`` becomes one line on stderr and exit code 2 (``--debug`` shows the traceback);
anything else is a bug: traceback and exit code 1.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import click
import typer

from medfm import __version__
from medfm.errors import MedfmError

app = typer.Typer(
    name="medfm",
    help="Medical image interpretation with foundation models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module defines ``register(app)``; the order is the order of ``medfm --help``.
COMMAND_MODULES: list[str] = [
    "medfm.cli.bench",
    "medfm.cli.report",
    "medfm.cli.datasets",
    "medfm.cli.info",
    "medfm.cli.models",
    "medfm.cli.embed",
    "medfm.cli.classify",
    "medfm.cli.pretrain",
    "medfm.cli.segment",
    "medfm.cli.seg_prompt",
    "medfm.cli.prognosis",
    "medfm.cli.signals",
    "medfm.cli.generate",
    "medfm.cli.serve",
    "medfm.cli.pacs",
    "medfm.cli.trust",
    "medfm.cli.deid",
    "medfm.cli.listen",
]

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medfm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    threads: int | None = typer.Option(
        None, "--threads", min=1, envvar="MEDFM_THREADS",
        help="CPU threads for torch (default: the cores not already busy; 1 when sharing a small machine).",
    ),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    _state["debug"] = debug
    from medfm._runtime import default_threads, env_threads

    # set before any command imports torch, which reads OMP_NUM_THREADS once at import
    chosen = threads or env_threads()
    n = threads or default_threads()
    cores = os.cpu_count() or 1
    if not chosen and n < cores and sys.stderr.isatty():
        # a long run started just after another job ends would otherwise get fewer threads silently
        print(f"medfm: using {n} of {cores} CPU threads (the others looked busy: load average "
              f"{os.getloadavg()[0]:.1f}); --threads {cores} to use them all", file=sys.stderr)
    os.environ["MEDFM_THREADS"] = str(n)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def _load_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_load_commands()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = "--debug" in argv
    try:
        result = app(args=argv, prog_name="medfm", standalone_mode=False)
    except MedfmError as exc:
        if _state["debug"]:
            traceback.print_exc()
        print(f"medfm: error: {exc}", file=sys.stderr)
        return 2
    except (click.exceptions.Exit, typer.Exit) as exc:  # typer >= 0.2x raises its own (vendored click) classes
        return int(exc.exit_code or 0)
    except (click.exceptions.Abort, typer.Abort):
        print("medfm: aborted", file=sys.stderr)
        return 130
    except (click.ClickException, typer.TyperException) as exc:  # usage errors: missing or bad options
        exc.show()
        return 2
    except KeyboardInterrupt:
        print("medfm: interrupted", file=sys.stderr)
        return 130
    return int(result) if isinstance(result, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
