"""HTML section for prognosis results: metric table with CIs and Kaplan-Meier curves of the
predicted low/high-risk groups (log-rank p), as a fragment with inline base64 PNGs.

Reads only Records (``protocol == "survival"``); KM curves come from ``Record.extra["km_groups"]``
written by ``medfm.tasks.survival.cv``.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence

from medfm.metrics import higher_is_better
from medfm.results import MetricValue, Record, format_ci, format_metric

# (metric key, column title); which way is better comes from medfm.metrics
COLUMNS: tuple[tuple[str, str], ...] = (
    ("c_harrell", "Harrell C"),
    ("c_uno", "Uno C"),
    ("td_auc_mean", "mean td-AUC"),
    ("ibs", "IBS"),
    ("calibration_error@q50", "calib. error @median"),
)


def _fmt(v: MetricValue | None) -> str:
    if v is None or v.value is None or (isinstance(v.value, float) and math.isnan(v.value)):
        return "&ndash;"
    ci = format_ci(v.ci_low, v.ci_high, 3)
    return format_metric(v.value, digits=3) + (f" <span class='ci'>{ci}</span>" if ci else "")


def metric_table(records: Sequence[Record]) -> str:
    """HTML table: one row per model, the best value per column in bold."""
    best: dict[str, float] = {}
    for key, _ in COLUMNS:
        vals = [r.metrics[key].value for r in records if key in r.metrics and math.isfinite(r.metrics[key].value)]
        if vals:
            best[key] = max(vals) if higher_is_better(key) else min(vals)
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in COLUMNS)
    rows = []
    for r in records:
        if r.extra.get("error"):
            rows.append(
                f"<tr><td>{html.escape(r.model)}</td><td>{r.n}</td><td>&ndash;</td>"
                f"<td colspan='{len(COLUMNS)}'>failed: {html.escape(str(r.extra['error']))}</td></tr>"
            )
            continue
        cells = []
        for key, _ in COLUMNS:
            v = r.metrics.get(key)
            text = _fmt(v)
            if v is not None and key in best and math.isfinite(v.value) and v.value == best[key]:
                text = f"<b>{text}</b>"
            cells.append(f"<td>{text}</td>")
        rows.append(f"<tr><td>{html.escape(r.model)}</td><td>{r.n}</td><td>{r.seconds:.1f}</td>{''.join(cells)}</tr>")
    return (
        "<table class='medfm-table'><thead><tr><th>model</th><th>n</th><th>s</th>"
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def hazard_ratio_table(rows: Sequence[dict]) -> str:
    """HTML table of full-cohort Cox hazard ratios per SD (from ``extra['hazard_ratios']``)."""
    body = "".join(
        f"<tr><td>{html.escape(str(r['covariate']))}</td><td>{r['hr']:.2f}</td>"
        f"<td>{format_ci(r['hr_low'], r['hr_high'], 2)}</td><td>{r['p']:.2g}</td></tr>"
        for r in rows
    )
    return (
        "<table class='medfm-table'><thead><tr><th>covariate</th><th>HR per SD</th><th>95% CI</th><th>p</th></tr>"
        f"</thead><tbody>{body}</tbody></table>"
    )


def km_figure_png(records: Sequence[Record]) -> bytes | None:
    """PNG bytes: one panel per model with KM curves of predicted low/high-risk groups."""
    recs = [r for r in records if r.extra.get("km_groups", {}).get("time")]
    if not recs:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ncol = min(3, len(recs))
    nrow = math.ceil(len(recs) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), squeeze=False)
    for ax, r in zip(axes.flat, recs, strict=False):
        g = r.extra["km_groups"]
        for key, colour in (("low", "tab:blue"), ("high", "tab:red")):
            if g.get(key):
                ax.step(g["time"], g[key], where="post", color=colour, label=f"{key} risk (n={g.get('n_' + key, '?')})")
        p = g.get("logrank_p")
        p_txt = "n/a" if p is None or not math.isfinite(p) else f"{p:.2g}"
        ax.set_title(f"{r.model}  (log-rank p = {p_txt})", fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("time")
        ax.set_ylabel("survival")
        ax.legend(fontsize=7, loc="lower left")
    for ax in list(axes.flat)[len(recs) :]:
        ax.axis("off")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def survival_section(records: Sequence[Record], title: str = "Prognosis") -> str:
    """HTML fragment (``<section>``) for every survival Record, grouped by (dataset, split)."""
    recs = [r for r in records if r.protocol == "survival"]
    parts = [f"<section class='medfm-survival'><h2>{html.escape(title)}</h2>"]
    if not recs:
        parts.append("<p>No survival results.</p></section>")
        return "".join(parts)
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in recs:
        groups.setdefault((r.dataset, r.split), []).append(r)
    for (dataset, split), rs in groups.items():
        n_events = rs[0].extra.get("n_events")
        parts.append(f"<h3>{html.escape(dataset)} &mdash; {html.escape(split)}</h3>")
        ev = f", {n_events} events" if n_events is not None else ""
        parts.append(
            f"<p>{rs[0].n} rows{ev}. Values: mean over folds; [95% bootstrap CI over test rows]. "
            "Risk groups: test rows above/below the training-fold median predicted risk. "
            "Calibration error: size-weighted mean |predicted &minus; Kaplan-Meier observed| event probability "
            "at the training-median time over predicted-risk deciles of each test fold; being an absolute error, "
            "its bootstrap distribution sits above the point estimate.</p>"
        )
        parts.append(metric_table(rs))
        png = km_figure_png(rs)
        if png is not None:
            b64 = base64.b64encode(png).decode("ascii")
            parts.append(
                f"<img alt='Kaplan-Meier curves by predicted risk group, {html.escape(dataset)}' src='data:image/png;base64,{b64}'/>"
            )
        hrs = next((r.extra["hazard_ratios"] for r in rs if r.extra.get("hazard_ratios")), None)
        if hrs:
            parts.append(
                "<h4>Cox hazard ratios, whole cohort (lifelines; standardised covariates; association, not validation)</h4>"
            )
            parts.append(hazard_ratio_table(hrs))
    parts.append("</section>")
    return "\n".join(parts)


def standalone_page(body: str, title: str = "medfm prognosis report") -> str:
    """A minimal self-contained HTML page around a section fragment."""
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}"
        ".ci{color:#666;font-size:11px}img{max-width:100%}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )
