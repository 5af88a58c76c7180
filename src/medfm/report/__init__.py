"""Reports from Records: leaderboards (terminal and HTML), plots, the self-contained HTML report.

Other report modules (e.g. survival) hand their own HTML sections to ``build_report``
through ``extra_sections``; ``section()`` wraps a body in the report's section markup.
"""

from medfm.report.html import build_report, load_records, render_report, section
from medfm.report.tables import LeaderRow, leaderboard, primary_metric, rich_tables

__all__ = ["LeaderRow", "build_report", "leaderboard", "load_records", "primary_metric", "render_report", "rich_tables", "section"]
