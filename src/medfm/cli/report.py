"""``medfm report RESULTS.json``: (re)build the HTML report and print the leaderboard."""

from __future__ import annotations

from pathlib import Path

import typer

from medfm.cli._common import err_console, print_json
from medfm.errors import InputError, OutputError


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        results: Path = typer.Argument(..., help="A results.json written by medfm bench."),
        out: Path = typer.Option(None, "--out", "-o", help="HTML file to write. Default: report.html beside RESULTS."),
        force: bool = typer.Option(False, "--force", help="Replace an existing HTML file."),
        json_: bool = typer.Option(False, "--json", help="Leaderboard as JSON on stdout."),
    ) -> None:
        """Build a self-contained report.html from a results.json and print its leaderboard."""
        from medfm.cli.bench import print_tables
        from medfm.report import build_report, leaderboard, rich_tables
        from medfm.results import completeness_text, load_results

        if not results.is_file():
            raise InputError(f"{results}: results file not found")
        res = load_results(results)
        spec, records, completeness = res.spec, res.records, res.completeness
        for problem in res.problems:
            err_console.print(f"warning: {results}: {problem}", highlight=False, markup=False)
        target = out if out is not None else results.parent / "report.html"
        if target.exists() and not force:
            raise OutputError(f"{target}: exists; pass --force to replace it or choose another --out")
        if target.is_dir():
            raise OutputError(f"{target}: is a folder; --out names the HTML file to write")
        try:
            build_report((spec, records), target, completeness=completeness, warnings=res.problems)
        except OSError as exc:
            raise OutputError(f"{target}: cannot write there ({exc.strerror or exc})") from exc
        from rich.markup import escape

        board = leaderboard(records)
        status = completeness_text(completeness)
        complete = completeness is not None and completeness.complete
        if not complete:  # on stderr before anything else, with --json too
            err_console.print(f"[bold yellow]warning:[/] {escape(str(results))}: {escape(status)}", highlight=False)
        if json_:
            print_json({"report": str(target), "complete": complete, "completeness": status,
                        "problems": list(res.problems), "leaderboard": {
                ds: [{"model": r.model, "protocol": r.protocol, "shots": r.shots, "metric": r.metric, "value": r.value,
                      "ci_low": r.ci_low, "ci_high": r.ci_high, "sd": r.sd, "seeds": r.n_seeds} for r in rows]
                for ds, rows in board.items()
            }})
            return
        print_tables(rich_tables(board))
        if complete:
            err_console.print(escape(status), highlight=False)
        elif completeness is None:
            err_console.print("[bold yellow]warning:[/] leaderboard above: completeness unknown", highlight=False)
        else:
            err_console.print(f"[bold yellow]warning:[/] leaderboard above ranks only {completeness.written} of "
                              f"{completeness.expected} planned results", highlight=False)
        err_console.print(f"wrote {target}")
