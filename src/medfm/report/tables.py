"""Leaderboards from Records: one row per (dataset, model, protocol, shots), best first.

A row with one seed shows the metric with its bootstrap 95% CI; a row with several seeds
shows the mean over seeds with the standard deviation across seeds (the spread that
few-shot sampling causes) and the mean of the per-seed bootstrap bounds.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from medfm.metrics import DIRECTIONS, base_name, higher_is_better, is_ranked
from medfm.results import Record, format_ci, format_metric

PREFERRED_METRICS = ("auroc", "balanced_accuracy", "accuracy", "f1", "c_harrell", "dice")


def primary_metric(records: Sequence[Record]) -> str | None:
    """The metric leaderboards rank by: the first preferred one present (AUROC first), else the
    first with a declared direction; else the first undeclared one (ranking by it raises, as no
    direction is guessed); None when every metric is descriptive (nothing to rank by)."""
    names: dict[str, None] = {}
    for r in records:
        names.update(dict.fromkeys(r.metrics))
    for m in PREFERRED_METRICS:
        if m in names:
            return m
    ranked = next((m for m in names if is_ranked(m)), None)
    return ranked or next((m for m in names if base_name(m) not in DIRECTIONS), None)


def shots_label(shots: int | None) -> str:
    return "all" if shots is None else str(shots)


@dataclass
class LeaderRow:
    """One (dataset, model, protocol, shots) group of records, aggregated over seeds."""

    dataset: str
    model: str
    protocol: str
    shots: int | None
    metric: str
    value: float
    ci_low: float | None
    ci_high: float | None
    sd: float | None
    n_seeds: int
    n: int
    n_train: int | None
    trained: bool
    seconds: float
    others: dict[str, float] = field(default_factory=dict)

    def value_text(self, digits: int = 3) -> str:
        """``0.871 [0.80, 0.93]`` (one seed) or ``0.712 ± 0.051 (3 seeds)``."""
        if not math.isfinite(self.value):
            return "n/a"
        if self.n_seeds > 1 and self.sd is not None:
            return f"{self.value:.{digits}f} ± {self.sd:.{digits}f} ({self.n_seeds} seeds)"
        return format_metric(self.value, self.ci_low, self.ci_high, digits, digits - 1)


def _mean(xs: Iterable[float | None]) -> float | None:
    vals = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    return sum(vals) / len(vals) if vals else None


def _sd(xs: Sequence[float]) -> float | None:
    vals = [x for x in xs if math.isfinite(x)]
    if len(vals) < 2:
        return None
    m = sum(vals) / len(vals)
    return math.sqrt(sum((x - m) ** 2 for x in vals) / (len(vals) - 1))


def leaderboard(records: Sequence[Record], metric: str | None = None) -> dict[str, list[LeaderRow]]:
    """Rows per dataset, best first by ``metric`` (default: ``primary_metric``)."""
    metric = metric or primary_metric(records)
    groups: dict[tuple, list[Record]] = defaultdict(list)
    for r in records:
        groups[(r.dataset, r.model, r.protocol, r.shots)].append(r)
    out: dict[str, list[LeaderRow]] = defaultdict(list)
    for (ds, model, proto, shots), recs in groups.items():
        vals = [r.metrics[metric].value if metric in r.metrics else math.nan for r in recs] if metric else [math.nan]
        finite = [v for v in vals if math.isfinite(v)]
        others: dict[str, float] = {}
        for name in sorted({k for r in recs for k in r.metrics} - {metric}):
            m = _mean(r.metrics[name].value for r in recs if name in r.metrics)
            if m is not None:
                others[name] = m
        n_train = recs[0].extra.get("n_train") if recs[0].extra else None
        out[ds].append(LeaderRow(
            dataset=ds, model=model, protocol=proto, shots=shots, metric=metric or "",
            value=sum(finite) / len(finite) if finite else math.nan,
            ci_low=_mean(r.metrics[metric].ci_low for r in recs if metric in r.metrics) if metric else None,
            ci_high=_mean(r.metrics[metric].ci_high for r in recs if metric in r.metrics) if metric else None,
            sd=_sd(finite), n_seeds=len(recs), n=recs[0].n, n_train=n_train,
            trained=any(bool(r.extra.get("trained")) for r in recs),
            seconds=sum(r.seconds for r in recs), others=others,
        ))
    sign = -1.0 if metric is None or higher_is_better(metric) else 1.0  # ConfigError for an unknown metric
    for ds in out:
        out[ds].sort(key=lambda row: (
            not math.isfinite(row.value), sign * row.value if math.isfinite(row.value) else 0.0,
            row.shots is not None, -(row.shots or 0), row.model, row.protocol,
        ))
    return dict(sorted(out.items()))


def weights_label(row: LeaderRow) -> str:
    """How the network's weights were obtained in this row."""
    if row.model.startswith("scratch/"):
        return "from scratch"
    return "fine-tuned" if row.trained else "frozen"


def spread_text(row: LeaderRow, digits: int = 2) -> str:
    """``[0.80, 0.93]`` (bootstrap 95% CI, one seed) or ``± 0.05`` (sd over seeds)."""
    if row.n_seeds > 1 and row.sd is not None:
        return f"± {row.sd:.{digits}f}"
    return format_ci(row.ci_low, row.ci_high, digits)


def rich_tables(board: dict[str, list[LeaderRow]], max_others: int = 2) -> list:
    """One Rich table per dataset (for the terminal)."""
    from rich.table import Table

    tables = []
    for ds, rows in board.items():
        others = [o for o in ("accuracy", "ece") if any(o in r.others for r in rows)]
        others += [o for o in dict.fromkeys(k for r in rows for k in r.others) if o not in others]
        others = others[:max_others]
        metric = rows[0].metric if rows else ""
        t = Table(title=f"{ds}: leaderboard by {metric} (test split)", caption="95% bootstrap CI (1 seed) or ± sd over seeds")
        t.add_column("#", justify="right")
        t.add_column("model", no_wrap=True)
        t.add_column("protocol", no_wrap=True)
        t.add_column("shots", justify="right")
        t.add_column(metric, justify="right")
        t.add_column("CI / sd", justify="left", no_wrap=True)
        t.add_column("seeds", justify="right")
        for o in others:
            t.add_column(o, justify="right")
        t.add_column("weights", no_wrap=True)
        for i, r in enumerate(rows, 1):
            t.add_row(
                str(i), r.model, r.protocol, shots_label(r.shots),
                f"{r.value:.3f}" if math.isfinite(r.value) else "n/a", spread_text(r), str(r.n_seeds),
                *[f"{r.others[o]:.3f}" if o in r.others else "" for o in others],
                weights_label(r),
            )
        tables.append(t)
    return tables


def html_table(rows: Sequence[LeaderRow], max_others: int = 6) -> str:
    """A leaderboard as an HTML table (escaped)."""
    if not rows:
        return "<p>No records.</p>"
    others = list(dict.fromkeys(k for r in rows for k in r.others))[:max_others]
    metric = rows[0].metric
    head = ["#", "model", "protocol", "shots/class", f"{metric} (95% CI or ± sd)", *others, "n test", "weights", "seconds"]
    lines = ["<table class='board'><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for i, r in enumerate(rows, 1):
        cells = [
            str(i), r.model, r.protocol, shots_label(r.shots), r.value_text(),
            *[f"{r.others[o]:.3f}" if o in r.others else "" for o in others],
            str(r.n), weights_label(r), f"{r.seconds:.1f}",
        ]
        lines.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)
