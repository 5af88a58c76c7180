"""The self-contained HTML report of a benchmark (figures embedded as base64 PNGs).

Sections: summary, leaderboard per dataset (best first, with CIs), label-efficiency curve,
ROC curves, reliability diagram, dataset card, notes, provenance, then any extra HTML
sections other report modules hand in (e.g. survival curves). The summary states the results'
completeness; an incomplete (or unknown) one also gets a warning banner above everything else.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medfm import __version__
from medfm._paths import atomic_write_text
from medfm.report import plots, tables
from medfm.results import Completeness, Record, completeness_text, load_results

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left}th{background:#f4f4f4}
table.board td:nth-child(5){font-weight:600}
img{max-width:100%;border:1px solid #eee}pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.8em}
.note{color:#555}.small{font-size:.85em;color:#666}
.warn{background:#fff3cd;border:2px solid #d39e00;padding:.6em 1em;font-weight:600}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _section(anchor: str, title: str, body: str) -> str:
    return f"<section id='{anchor}'>\n<h2>{_esc(title)}</h2>\n{body}\n</section>"


def _img(uri: str | None, alt: str, missing: str) -> str:
    if uri is None:
        return f"<p class='note'>{_esc(missing)}</p>"
    return f"<img alt='{_esc(alt)}' src='{uri}'>"


def _kv_table(rows: Sequence[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows) + "</table>"


def _dataset_cards(records: Sequence[Record]) -> str:
    cards: dict[str, dict[str, Any]] = {}
    for r in records:
        card = r.provenance.get("dataset_card")
        if isinstance(card, dict) and r.dataset not in cards:
            cards[r.dataset] = card
    if not cards:
        return "<p class='note'>No dataset card stored in the records.</p>"
    parts = []
    for name, c in sorted(cards.items()):
        checksum = next((r.provenance.get("data_checksum") for r in records if r.dataset == name), None)
        splits = c.get("splits") or {}
        parts.append(f"<h3>{_esc(name)}</h3>" + _kv_table([
            ("task", c.get("task", "")), ("modality", c.get("modality", "")),
            ("labels", ", ".join(f"{i}: {lab}" for i, lab in enumerate(c.get("labels") or []))),
            ("split sizes", ", ".join(f"{k} {v}" for k, v in splits.items())),
            ("licence", c.get("license", "")), ("citation", c.get("citation", "")),
            ("description", c.get("description", "")), ("data checksum", checksum or ""),
        ]))
    return "\n".join(parts)


def _provenance(spec: dict[str, Any], records: Sequence[Record]) -> str:
    first = records[0].provenance if records else {}
    versions = first.get("versions") or {}
    commits = sorted({str(r.provenance.get("git_commit")) + (" (with uncommitted changes)" if r.provenance.get("git_dirty") else "")
                      for r in records})
    weights = sorted({(r.model, str(r.provenance.get("weights_hash")), str(r.provenance.get("weights_source") or "")) for r in records})
    rows = [("medfm", versions.get("medfm", __version__)), ("git commit", ", ".join(commits))]
    rows += sorted((k, v) for k, v in versions.items() if k != "medfm")
    body = "<h3>Versions</h3>" + _kv_table(rows)
    body += "<h3>Models and weights</h3>" + _kv_table([
        (m, (f"weights sha256 {h}" if h != "None" else "trained in the cell (no pre-trained weights)") + (f"; source: {src}" if src else ""))
        for m, h, src in weights
    ])
    body += "<h3>Spec</h3><pre>" + _esc(json.dumps(spec, indent=2, default=str)) + "</pre>"
    hp = []
    for r in records:
        if r.shots is None and r.seed == 0 and r.extra.get("hyperparameters"):
            hp.append((f"{r.dataset} · {r.model} · {r.protocol}", json.dumps(r.extra["hyperparameters"], default=str)))
    if hp:
        body += "<h3>Chosen hyper-parameters (full data, seed 0; chosen on the validation split)</h3>" + _kv_table(hp)
    return body


def load_records(results: str | Path | tuple[dict[str, Any], Sequence[Record]]) -> tuple[dict[str, Any], list[Record]]:
    """A results.json path or (spec dict, records) -> (spec dict, records)."""
    if isinstance(results, (str, Path)):
        res = load_results(results)
        return res.spec, res.records
    spec, records = results
    return dict(spec or {}), list(records)


def completeness_banner(completeness: Completeness | None, warnings: Sequence[str] = ()) -> str:
    """The warnings shown above everything else: an incomplete or unknown completeness, and
    ``warnings`` (records changed by hand, cache entries that failed their checks); "" when none."""
    items = []
    if completeness is None or not completeness.complete:
        text = completeness_text(completeness)
        if completeness is not None:
            text += ". The leaderboard ranks only the results present; missing cells may change it."
        items.append(f"<p class='warn' id='completeness-warning'>Warning: {_esc(text)}</p>")
    items += [f"<p class='warn'>Warning: {_esc(w)}</p>" for w in warnings]
    return "\n".join(items)


def render_report(
    spec: dict[str, Any], records: Sequence[Record], extra_sections: Sequence[str] = (),
    notes: Sequence[str] = (), title: str = "medfm benchmark report", completeness: Completeness | None = None,
    warnings: Sequence[str] = (),
) -> str:
    """The report's HTML text (see the module docstring for its sections); ``completeness`` None
    means unknown (a results file from before medfm recorded it) and is said so."""
    board = tables.leaderboard(records)
    metric = tables.primary_metric(records) or ""
    datasets = sorted({r.dataset for r in records})
    summary = _kv_table([
        ("datasets", ", ".join(datasets)), ("models", ", ".join(sorted({r.model for r in records}))),
        ("protocols", ", ".join(sorted({r.protocol for r in records}))),
        ("records", len(records)), ("completeness", completeness_text(completeness)),
        ("ranked by", f"{metric} on the test split"),
        ("protocol time (sum over cells)", f"{sum(r.seconds for r in records):.1f} s"),
        ("embedding / input time (sum)", f"{sum(float(r.extra.get('input_seconds') or 0) for r in records):.1f} s"),
    ])
    parts = [_section("summary", "Summary", summary + (
        "<p class='small'>A row with one seed shows the bootstrap 95% confidence interval; a row with several "
        "seeds shows the mean ± standard deviation over seeds (different few-shot draws). "
        "Hyper-parameters are chosen on the validation split only. \"weights\": frozen = the encoder was not "
        "trained (only a head / neighbours / prototypes were fitted on its features); fine-tuned or from scratch = "
        "the network's weights were trained in the cell.</p>"
    ))]
    lb = "".join(f"<h3>{_esc(ds)}</h3>{tables.html_table(rows)}" for ds, rows in board.items())
    parts.append(_section("leaderboard", "Leaderboard", lb or "<p>No records.</p>"))
    eff = "".join(
        f"<h3>{_esc(ds)}</h3>" + _img(
            plots.label_efficiency([r for r in records if r.dataset == ds], metric), f"label efficiency {ds}",
            "Only one labelled-set size was run: no curve to draw.",
        ) for ds in datasets
    )
    parts.append(_section("label-efficiency", "Label efficiency", eff))
    roc = "".join(
        f"<h3>{_esc(ds)}</h3>" + _img(
            plots.roc_plot([r for r in records if r.dataset == ds]), f"ROC {ds}", "No ROC points stored for full-data runs.",
        ) for ds in datasets
    )
    parts.append(_section("roc", "ROC curves (full training split, seed 0)", roc))
    rel = "".join(
        f"<h3>{_esc(ds)}</h3>" + _img(
            plots.reliability_plot([r for r in records if r.dataset == ds]), f"reliability {ds}",
            "No reliability bins stored for full-data runs.",
        ) for ds in datasets
    )
    parts.append(_section("reliability", "Reliability diagram (full training split, seed 0)", rel))
    parts.append(_section("dataset", "Dataset card", _dataset_cards(records)))
    if notes:
        parts.append(_section("notes", "Notes", "<ul>" + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>"))
    parts.extend(str(s) for s in extra_sections)
    parts.append(_section("provenance", "Provenance", _provenance(spec, records)))
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>\n"
        f"<h1>{_esc(title)}</h1>\n" + completeness_banner(completeness, warnings) + "\n".join(parts) + "\n</body></html>\n"
    )


def build_report(
    results: str | Path | tuple[dict[str, Any], Sequence[Record]],
    out_html: str | Path,
    extra_sections: Sequence[str] = (),
    notes: Sequence[str] = (),
    title: str = "medfm benchmark report",
    completeness: Completeness | None = None,
    warnings: Sequence[str] = (),
) -> Path:
    """Write the report for ``results`` (a results.json path or (spec, records)) to ``out_html``.

    ``extra_sections``: HTML fragments (e.g. ``<section>...</section>``) appended before
    the provenance section. ``completeness`` and ``warnings`` (shown first): read from the file
    for a path (its changed records), else as given (completeness None: unknown). The file is
    self-contained and written atomically.
    """
    if isinstance(results, (str, Path)):
        res = load_results(results)
        spec, records, completeness = res.spec, res.records, res.completeness
        warnings = [*res.problems, *warnings]
    else:
        spec, records = load_records(results)
    out_html = Path(out_html)
    atomic_write_text(out_html, render_report(spec, records, extra_sections, notes, title, completeness, warnings))
    return out_html


def section(anchor: str, title: str, body_html: str) -> str:
    """Wrap an HTML body as a report section (for ``extra_sections``)."""
    return _section(anchor, title, body_html)
