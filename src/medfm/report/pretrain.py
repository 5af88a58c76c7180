"""A small self-contained HTML page for a pretraining or distillation run: loss curves + config."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from medfm._paths import atomic_write_text


def loss_curve_png(history: dict[str, Any]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot(range(1, len(history["losses"]) + 1), history["losses"], label="training loss")
    if history.get("val_losses"):
        ax.plot(range(1, len(history["val_losses"]) + 1), history["val_losses"], label="held-out loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_pretrain_report(history: dict[str, Any], path: str | Path, title: str) -> Path:
    """Write ``path`` (HTML with the loss curve embedded as base64 PNG and the run's config)."""
    png = base64.b64encode(loss_curve_png(history)).decode()
    cfg = html.escape(json.dumps(history.get("config", {}), indent=2, default=str))
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body style='font-family:sans-serif;max-width:900px;margin:auto'><h1>{html.escape(title)}</h1>"
        f"<h2>Loss curve</h2><img alt='loss curve' src='data:image/png;base64,{png}'>"
        f"<p>{len(history['losses'])} epochs, {history.get('seconds', 0):.0f} s.</p>"
        f"<h2>Configuration</h2><pre>{cfg}</pre></body></html>"
    )
    atomic_write_text(path, page)
    return Path(path)
