"""Trust analyses of a finished bench run, and their HTML pages.

``calibrate_run(run_dir, out)`` takes every single-label record of ``run_dir/results.json``,
gets its validation and test probabilities (stored in ``record.extra["predictions"]`` when
the runner kept them, else recomputed from the record's cell with the bench's own code and
checked against the stored test AUROC), fits temperature scaling and the conformal threshold
on validation and writes ``out/results.json`` (one Record per cell, metrics
``ece_before`` / ``ece_after`` / ... with bootstrap CIs, the original provenance plus the
calibration config) and ``out/report.html`` (table, reliability before/after, risk-coverage).
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfm._config import to_dict
from medfm._paths import atomic_write_text, prepare_out_dir
from medfm.errors import InputError, MedfmError
from medfm.results import Record, read_results, write_results
from medfm.tasks.trust.calibrate import CalibrationConfig, CalibrationResult, calibrate, summary_row

_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}"
    "table{border-collapse:collapse;font-size:.85em}th,td{border:1px solid #ddd;padding:.25em .5em}"
    "th{background:#f4f4f4}img{max-width:100%}.bad{color:#b00;font-weight:600}.note{color:#555}"
)


@dataclass
class RunPredictions:
    """Validation and test probabilities of one bench record, and how they were obtained."""

    val_y: np.ndarray
    val_scores: np.ndarray
    test_y: np.ndarray
    test_scores: np.ndarray
    source: str  # "stored" or "recomputed"
    test_auroc_stored: float | None = None
    test_auroc_now: float | None = None


@dataclass
class CalibrationRun:
    """What ``calibrate_run`` did: one (record, result) per calibrated cell, skipped cells with why."""

    out: Path
    records: list[Record]
    results: list[CalibrationResult]
    skipped: list[str] = field(default_factory=list)
    report: Path | None = None


def results_path(run: str | Path) -> Path:
    """The results.json of a bench run given as its folder or the file itself (InputError when absent)."""
    p = Path(run).expanduser()
    path = p / "results.json" if p.is_dir() else p
    if not path.is_file():
        raise InputError(f"{run}: no results.json (pass a 'medfm bench' output folder or its results.json)")
    return path


def predictions_for(record: Record, data_dir: str | None = None, context: Any = None) -> RunPredictions:
    """Val/test probabilities of a bench record: stored ones, else the cell run again.

    Recomputing uses the bench runner's own inputs and protocol (seeded, so a cell gives the
    same numbers again; the stored and recomputed test AUROC are both returned to show it).
    """
    stored = record.extra.get("predictions") if isinstance(record.extra, dict) else None
    if isinstance(stored, dict) and stored.get("val_scores") is not None:
        return RunPredictions(
            np.asarray(stored["val_y"]), np.asarray(stored["val_scores"], dtype=np.float64),
            np.asarray(stored["test_y"]), np.asarray(stored["test_scores"], dtype=np.float64), "stored",
        )
    from medfm.bench import runner
    from medfm.bench.spec import Cell
    from medfm.metrics.classification import point_metric

    ident = (record.provenance.get("config") or {}).get("cell")
    if not isinstance(ident, dict):
        raise InputError(f"record {record.key()}: no cell identity in its provenance; cannot recompute its predictions")
    cell = Cell(
        dataset=ident["dataset"], model=ident["model"], protocol=ident["protocol"], shots=ident["shots"],
        seed=int(ident["seed"]), config=dict(ident.get("config") or {}), n_boot=int(ident.get("n_boot", 1000)),
        precision=str(ident.get("precision", "auto")), data_dir=data_dir,
    )
    ctx = context or runner.default_context()
    proto = ctx.protocol(cell.protocol)
    config = proto.make_config(cell.config)
    data = runner._protocol_inputs(cell, ctx, proto)
    if proto.needs.startswith("model+"):
        preds = proto.run(ctx.adapter(cell.model, cell.precision), data, config, seed=cell.seed, shots=cell.shots)
    else:
        preds = proto.run(data, config, seed=cell.seed, shots=cell.shots)
    if preds.val_scores is None:
        raise InputError(f"{cell.label()}: protocol '{cell.protocol}' returns no validation probabilities")
    task = runner.metric_task(ctx.dataset(cell.dataset, data_dir).card)
    stored_auc = record.metrics.get("auroc")
    now = point_metric("auroc", data.test_y, preds.test_scores, task)
    return RunPredictions(
        np.asarray(data.val_y), np.asarray(preds.val_scores, dtype=np.float64), np.asarray(data.test_y),
        np.asarray(preds.test_scores, dtype=np.float64), "recomputed",
        None if stored_auc is None else float(stored_auc.value), now,
    )


def calibrate_run(
    run: str | Path,
    out: str | Path,
    cfg: CalibrationConfig | None = None,
    *,
    data_dir: str | None = None,
    models: Sequence[str] = (),
    protocols: Sequence[str] = (),
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> CalibrationRun:
    """Calibrate every single-label record of a bench run (see the module docstring)."""
    cfg = cfg or CalibrationConfig()
    spec, records = read_results(results_path(run))
    chosen = [
        r for r in records
        if (not models or r.model in models) and (not protocols or r.protocol in protocols)
    ]
    if not chosen:
        raise InputError(f"{run}: no records match --model {list(models)} --protocol {list(protocols)}")
    out_dir = prepare_out_dir(out, force=force)
    done = CalibrationRun(out=out_dir, records=[], results=[])
    for r in chosen:
        if not is_calibratable(r):
            done.skipped.append(f"{_label(r)}: not a single-label task with two or more classes (calibration here is for those)")
            continue
        t0 = time.perf_counter()
        try:
            preds = predictions_for(r, data_dir=data_dir)
            res = calibrate(preds.val_y, preds.val_scores, preds.test_y, preds.test_scores, cfg)
        except MedfmError as exc:
            done.skipped.append(f"{_label(r)}: {exc}")
            continue
        rec = _record(r, res, preds, cfg, time.perf_counter() - t0)
        done.records.append(rec)
        done.results.append(res)
        write_results(out_dir / "results.json", done.records, {"calibration": to_dict(cfg), "bench_spec": spec})
        if progress:
            row = summary_row(res)
            progress(f"{_label(r)}: T={res.temperature:.2f} ECE {row['ece_before']:.3f} -> {row['ece_after']:.3f}, "
                     f"coverage {row['conformal_coverage']:.3f} (target {row['target_coverage']:.2f})")
    if not done.records:
        raise InputError(f"{run}: no record could be calibrated: " + "; ".join(done.skipped[:3]))
    done.report = out_dir / "report.html"
    atomic_write_text(done.report, render_calibration_page(done.records, done.results, cfg, done.skipped))
    note = store_records(done.records, out_dir, "calibration")
    if note:
        done.skipped.append(note)
    return done


def is_calibratable(r: Record) -> bool:
    """Whether calibration applies to a bench record: a single-label task with at least two classes."""
    card = r.provenance.get("dataset_card") or {}
    return int(r.extra.get("n_classes", 2) or 2) >= 2 and card.get("task") != "multilabel"


def _label(r: Record) -> str:
    shots = "all" if r.shots is None else f"{r.shots}-shot"
    return f"{r.model} {r.protocol} {shots} seed {r.seed}"


def _record(src: Record, res: CalibrationResult, preds: RunPredictions, cfg: CalibrationConfig, seconds: float) -> Record:
    prov = dict(src.provenance)
    prov["trust"] = {
        "analysis": "calibration", "config": to_dict(cfg), "predictions": preds.source,
        "test_auroc_stored": preds.test_auroc_stored, "test_auroc_recomputed": preds.test_auroc_now,
        "fitted_on": "val",
    }
    extra = {
        "temperature": res.temperature, "conformal_q": res.conformal_q, "alpha": res.alpha,
        "n_val": res.n_val, "reliability_before": res.reliability_before, "reliability_after": res.reliability_after,
        "risk_coverage": res.risk_coverage, "selective_risk": res.conformal["selective_risk"],
        "coverage_ci_exact": [res.conformal.get("coverage_ci_low"), res.conformal.get("coverage_ci_high")],
        "coverage_calibration_sd": res.conformal.get("coverage_calibration_sd"),
        "temperature_nll_fit": res.extra.get("nll_temperature"), "kept_t1_on_val_ece": res.extra.get("kept_t1_on_val_ece"),
        "set_size_hist": res.extra.get("set_size_hist"), "source_metrics": {k: to_dict(v) for k, v in src.metrics.items()},
    }
    return Record(
        dataset=src.dataset, split="test", model=src.model, protocol=src.protocol, metrics=dict(res.metrics),
        shots=src.shots, seed=src.seed, n=res.n_test, seconds=round(seconds, 3), provenance=prov, extra=to_dict(extra),
    )


# --------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------
def _esc(x: Any) -> str:
    return html.escape(str(x))


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}"


def _png_uri(fig: Any) -> str:
    import base64
    import io

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(w: float, h: float, ncols: int = 1) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=90)
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def calibration_figure(records: Sequence[Record]) -> str:
    """Reliability (before dashed, after solid) and risk-coverage curves of full-data seed-0 records."""
    rows = [r for r in records if r.shots is None and r.seed == 0] or list(records)[:6]
    fig, (ax1, ax2) = _figure(11, 4.2, 2)
    ax1.plot([0, 1], [0, 1], color="#999", lw=0.8)
    for i, r in enumerate(rows):
        color = f"C{i % 10}"
        name = f"{r.model} · {r.protocol}"
        for key, style in (("reliability_before", "--"), ("reliability_after", "-")):
            rel = r.extra.get(key) or {}
            pts = [(c, a) for c, a in zip(rel.get("confidence", []), rel.get("accuracy", []), strict=False) if c is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax1.plot(xs, ys, style, color=color, marker=".", label=name if style == "-" else None)
        rc = r.extra.get("risk_coverage", {})
        for key, style in (("raw", "--"), ("scaled", "-")):
            c = rc.get(key) or {}
            if c.get("coverage"):
                ax2.plot(c["coverage"], c["risk"], style, color=color, label=name if style == "-" else None)
    ax1.set(xlabel="confidence", ylabel="accuracy", title="reliability (dashed: before, solid: after scaling)")
    ax2.set(xlabel="coverage", ylabel="selective risk (error)", title="risk-coverage")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    return _png_uri(fig)


def calibration_table(records: Sequence[Record], results: Sequence[CalibrationResult]) -> str:
    """One row per cell: T, ECE/MCE/Brier before -> after (CIs on ECE), conformal coverage and abstention."""
    head = ("model", "protocol", "shots", "seed", "T", "ECE before", "ECE after", "MCE before", "MCE after",
            "Brier before", "Brier after", "coverage [exact 95% CI] (target)", "set size", "predicted (not abstained)",
            "risk when predicted", "AURC before → after")
    out = ["<table><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>"]
    for r, res in zip(records, results, strict=True):
        m = r.metrics
        worse = m["ece_after"].value > m["ece_before"].value + 1e-12
        off = abs(res.coverage_gap) > 0.02
        ece_after = m["ece_after"].text(3, 2)
        cells = [
            r.model, r.protocol, "all" if r.shots is None else r.shots, r.seed, _fmt(res.temperature, 2),
            m["ece_before"].text(3, 2),
            f"<span class='{'bad' if worse else ''}'>{_esc(ece_after)}</span>",
            _fmt(m["mce_before"].value), _fmt(m["mce_after"].value), _fmt(m["brier_before"].value), _fmt(m["brier_after"].value),
            f"<span class='{'bad' if off else ''}'>{_fmt(m['coverage'].value)}</span> "
            f"[{_fmt(res.conformal.get('coverage_ci_low'), 2)}, {_fmt(res.conformal.get('coverage_ci_high'), 2)}] ({1 - res.alpha:.2f})",
            _fmt(m["set_size"].value, 2), _fmt(m["singleton_rate"].value, 2), _fmt(res.conformal["selective_risk"]),
            f"{_fmt(m['aurc_before'].value)} → {_fmt(m['aurc_after'].value)}",
        ]
        out.append("<tr>" + "".join(f"<td>{c if str(c).startswith('<span') else _esc(c)}</td>" for c in cells) + "</tr>")
    return "".join(out) + "</table>"


def calibration_section(records: Sequence[Record], results: Sequence[CalibrationResult], cfg: CalibrationConfig) -> str:
    """The calibration section (for a standalone page or a bench report's ``extra_sections``)."""
    n_worse = sum(r.metrics["ece_after"].value > r.metrics["ece_before"].value + 1e-12 for r in records)
    n_off = sum(abs(res.coverage_gap) > 0.02 for res in results)
    n_out = sum(not (res.conformal.get("coverage_ci_low", 0) <= 1 - res.alpha <= res.conformal.get("coverage_ci_high", 1))
                for res in results)
    sd = [res.conformal.get("coverage_calibration_sd") for res in results if res.conformal.get("coverage_calibration_sd")]
    n_val = sorted({res.n_val for res in results})
    return (
        "<section id='calibration'><h2>Calibration and abstention</h2>"
        f"<p class='note'>Temperature and the split-conformal threshold (LAC score, alpha = {cfg.alpha}) are fitted on "
        "the validation split; every number is on the test split. The selective classifier predicts only when the "
        "conformal set holds exactly one class. "
        f"ECE rose after scaling in {n_worse} of {len(records)} cells; test coverage is more than 2 points from the "
        f"target in {n_off} of {len(records)}, and the target lies outside the coverage's exact 95% binomial CI in "
        f"{n_out} of {len(records)}. Temperature: fitted by NLL on val and kept only when it does not raise the val "
        "ECE (else T = 1), so a rise on test is a val/test disagreement, reported as it is. Finite samples: with "
        f"{n_val} calibration (val) samples, the coverage a single calibration set gives has sd "
        f"{(max(sd) if sd else float('nan')) * 100:.1f} points (Beta law), before the test set's own binomial noise; "
        "'within 2 points' cannot be guaranteed at this size, the marginal guarantee (>= 1 - alpha on average) "
        "is what split conformal promises.</p>"
        + calibration_table(records, results)
        + f"<img alt='reliability and risk-coverage' src='{calibration_figure(records)}'></section>"
    )


def render_calibration_page(
    records: Sequence[Record], results: Sequence[CalibrationResult], cfg: CalibrationConfig, skipped: Sequence[str] = ()
) -> str:
    """A self-contained HTML page for ``calibrate_run``."""
    notes = "".join(f"<li>{_esc(s)}</li>" for s in skipped)
    prov = records[0].provenance if records else {}
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>medfm calibration report</title>"
        f"<style>{_CSS}</style></head><body><h1>medfm calibration report</h1>"
        + calibration_section(records, results, cfg)
        + (f"<h2>Skipped</h2><ul>{notes}</ul>" if notes else "")
        + f"<h2>Provenance</h2><pre>{_esc(prov.get('versions'))}\ngit {_esc(prov.get('git_commit'))}</pre></body></html>\n"
    )


# --------------------------------------------------------------------------------------
# drift monitoring
# --------------------------------------------------------------------------------------
def monitor_page(report: Any) -> str:
    """A self-contained HTML page for a ``MonitorReport``: verdict, reasons, tests, inputs."""
    verdict = _esc(report.verdict.upper())
    color = "#b00" if report.drift else "#070"
    rows = "".join(
        f"<tr><td>{_esc(t.name)}</td><td>{_fmt(t.statistic, 4)}</td><td>{t.p_value:.3g}</td><td>{t.p_adjusted:.3g}</td>"
        f"<td>{'ALARM' if t.alarm else ''}</td><td>{_esc(json_text(t.detail))}</td></tr>"
        for t in report.tests
    )
    reasons = "".join(f"<li>{_esc(r)}</li>" for r in report.reasons) or "<li>none</li>"
    hist = report.inputs.get("histogram")
    fig = ""
    if hist:
        f, (ax,) = _figure(6, 3.2)
        edges = np.asarray(hist["edges"])
        centers = (edges[1:] + edges[:-1]) / 2
        ax.plot(centers, hist["reference"], label="reference")
        ax.plot(centers, hist["incoming"], label="incoming")
        ax.set(xlabel="intensity", ylabel="share of pixels", title="intensity histogram")
        ax.legend()
        fig = f"<img alt='intensity histogram' src='{_png_uri(f)}'>"
    inputs = {k: v for k, v in report.inputs.items() if k != "histogram"}
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>medfm drift report</title>"
        f"<style>{_CSS}</style></head><body><h1>medfm drift report</h1>"
        f"<p style='font-size:1.4em;color:{color};font-weight:700'>{verdict}</p>"
        f"<p class='note'>{report.n_reference} reference vs {report.n_incoming} incoming samples, {report.dim}-dimensional "
        f"embeddings; family-wise alpha {report.alpha} (Bonferroni over the tests below).</p>"
        f"<h2>Reasons</h2><ul>{reasons}</ul>"
        "<h2>Tests</h2><table><tr><th>test</th><th>statistic</th><th>p</th><th>p adjusted</th><th></th><th>detail</th></tr>"
        f"{rows}</table><h2>Inputs</h2><pre>{_esc(json_text(inputs, indent=1))}</pre>{fig}</body></html>\n"
    )


def json_text(obj: Any, indent: int | None = None) -> str:
    import json

    return json.dumps(to_dict(obj), indent=indent, default=str)


def write_monitor_report(report: Any, out: str | Path, force: bool = False) -> Path:
    """``out/drift.json`` (the report as JSON) and ``out/drift.html``; returns the folder."""
    out_dir = prepare_out_dir(out, force=force)
    atomic_write_text(out_dir / "drift.json", json_text(report, indent=1))
    atomic_write_text(out_dir / "drift.html", monitor_page(report))
    return out_dir


# --------------------------------------------------------------------------------------
# explanations
# --------------------------------------------------------------------------------------
def overlay_rgb(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """(C, H, W) image and a (h, w) map -> (H, W, 3) uint8: the map, resized (bilinear) and
    min-max scaled, in the 'jet' colour map over the grey image."""
    import torch
    import torch.nn.functional as F
    from matplotlib import colormaps

    img = np.asarray(image, dtype=np.float64)
    grey = img.mean(axis=0) if img.ndim == 3 else img
    lo, hi = float(grey.min()), float(grey.max())
    grey = (grey - lo) / (hi - lo) if hi > lo else np.zeros_like(grey)
    h = F.interpolate(torch.as_tensor(heat, dtype=torch.float32)[None, None], size=grey.shape, mode="bilinear",
                      align_corners=False)[0, 0].numpy()
    h = (h - h.min()) / (h.max() - h.min()) if h.max() > h.min() else np.zeros_like(h)
    rgb = colormaps["jet"](h)[..., :3]
    out = (1 - alpha) * grey[..., None] + alpha * rgb
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def explanation_records(expl: Any, cfg: Any) -> list[Record]:
    """One Record per method with the sanity numbers as metrics (for results.json / the store)."""
    from medfm.results import MetricValue, make_provenance

    out = []
    for m, s in expl.sanity.items():
        metrics = {
            "randomisation_rank_corr": MetricValue(s.rank_corr),
            "deletion_auc": MetricValue(s.deletion_auc), "deletion_auc_random": MetricValue(s.deletion_auc_random),
            "insertion_auc": MetricValue(s.insertion_auc), "insertion_auc_random": MetricValue(s.insertion_auc_random),
        }
        prov = make_provenance({"explain": to_dict(cfg), "method": m, "probe": expl.probe}, seed=cfg.seed)
        out.append(Record(dataset=expl.dataset, split=cfg.split, model=expl.model, protocol=f"explain/{m}", metrics=metrics,
                          n=len(expl.images), provenance=prov,
                          extra={"randomisation_passed": s.randomisation_passed, "rank_corr_per_image": s.rank_corr_per_image}))
    return out


def _volume(image: np.ndarray) -> np.ndarray:
    """(C, Z, Y, X) or (Z, Y, X) -> (Z, Y, X) float (channels averaged)."""
    a = np.asarray(image, dtype=np.float32)
    return a.mean(axis=0) if a.ndim == 4 else a


def resize_map(heat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A 2D / 3D map resized (bilinear / trilinear) to ``shape``, the input's own grid."""
    import torch
    import torch.nn.functional as F

    if tuple(heat.shape) == tuple(shape):
        return np.asarray(heat, dtype=np.float32)
    mode = "trilinear" if len(shape) == 3 else "bilinear"
    t = torch.as_tensor(np.asarray(heat, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(shape), mode=mode, align_corners=False)[0, 0].numpy()


def write_nifti_map(heat: np.ndarray, image: np.ndarray, path: Path, source: Any = None) -> Path:
    """A 3D map as NIfTI on the input's voxel grid, with the input file's geometry (affine) when
    ``source`` (its ``medfm.io.Image``) is given, else a 1 mm identity grid (dataset volumes)."""
    from medfm.io.image import Image
    from medfm.io.nifti import write_nifti

    vol = _volume(image)
    full = resize_map(heat, vol.shape)[None]
    img = source.with_array(full) if source is not None else Image(array=full, spacing=(1.0, 1.0, 1.0))
    return write_nifti(img, path, overwrite=True)


def _overlay_and_nifti(expl: Any, i: int, m: str, out_dir: Path) -> tuple[np.ndarray, str]:
    """The PNG overlay of image ``i``'s map (for 3D: the axial slice with the most map mass, and
    the whole map written as NIfTI) and a caption."""
    heat = expl.maps[m][i]
    if heat.ndim == 2:
        return overlay_rgb(expl.images[i], heat), ""
    src = expl.sources[i] if getattr(expl, "sources", None) else None
    write_nifti_map(heat, expl.images[i], out_dir / m / f"{expl.names[i]}.nii.gz", src)
    vol = _volume(expl.images[i])
    full = resize_map(heat, vol.shape)
    k = int(full.reshape(full.shape[0], -1).sum(axis=1).argmax())
    return overlay_rgb(vol[k], full[k]), f" (slice {k} of {vol.shape[0]})"


def _thumb(rgb: np.ndarray, size: int = 112) -> str:
    import base64
    import io

    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(rgb).resize((size, size), PILImage.NEAREST).save(buf, format="PNG")
    return f"data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"


def write_explanations(expl: Any, cfg: Any, out: str | Path, force: bool = False) -> Path:
    """``out/<method>/<name>.png`` overlays (3D: also ``<name>.nii.gz``, the map on the input's grid
    and affine), ``out/maps.npz`` (raw maps), ``out/results.json`` (sanity numbers as Records)
    and ``out/explain.html`` (grid + sanity table)."""
    from PIL import Image as PILImage

    out_dir = prepare_out_dir(out, force=force)
    grid_rows = []
    for i, name in enumerate(expl.names):
        cells = [f"<td>{_esc(name)}<br>{_esc(expl.label_names[int(expl.target[i])])} ({expl.prob[i].max():.2f})</td>"]
        for m in expl.maps:
            (out_dir / m).mkdir(exist_ok=True)
            rgb, caption = _overlay_and_nifti(expl, i, m, out_dir)
            PILImage.fromarray(rgb).save(out_dir / m / f"{name}.png")
            cells.append(f"<td><img alt='{_esc(m)}' src='{_thumb(rgb)}'>{_esc(caption)}</td>")
        grid_rows.append("<tr>" + "".join(cells) + "</tr>")
    np.savez_compressed(out_dir / "maps.npz", **{m: v for m, v in expl.maps.items()})
    records = explanation_records(expl, cfg)
    if records:
        write_results(out_dir / "results.json", records, {"explain": to_dict(cfg)})
        store_records(records, out_dir, "explain")
    sanity_rows = "".join(
        f"<tr><td>{_esc(m)}</td><td>{_fmt(s.rank_corr)}</td><td>{'pass' if s.randomisation_passed else '<b>FAIL</b>'}</td>"
        f"<td>{_fmt(s.deletion_auc)} / {_fmt(s.deletion_auc_random)}</td><td>{_fmt(s.insertion_auc)} / {_fmt(s.insertion_auc_random)}</td></tr>"
        for m, s in expl.sanity.items()
    )
    head = "".join(f"<th>{_esc(m)}</th>" for m in expl.maps)
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>medfm explanations</title>"
        f"<style>{_CSS}</style></head><body><h1>Explanations: {_esc(expl.model)} on {_esc(expl.dataset)}</h1>"
        f"<p class='note'>Classifier: the model's image tower + a linear probe (C = {expl.probe.get('C')}, val AUROC "
        f"{_fmt(expl.probe.get('val_auroc'))}); maps explain the predicted class.</p>"
        + (("<h2>Sanity checks</h2><table><tr><th>method</th><th>rank corr. with randomised model</th><th>randomisation test</th>"
            "<th>deletion AUC (lower better) / random order</th><th>insertion AUC (higher better) / random order</th></tr>"
            f"{sanity_rows}</table>") if sanity_rows else "")
        + f"<h2>Maps</h2><table><tr><th>image / prediction</th>{head}</tr>{''.join(grid_rows)}</table></body></html>\n"
    )
    atomic_write_text(out_dir / "explain.html", page)
    return out_dir


def explanation_grid_section(expls: Sequence[Any], n_images: int = 4) -> str:
    """A bench-report section: per model, the first ``n_images`` maps of each method and its
    sanity numbers (for ``medfm.report.build_report(..., extra_sections=[...])``)."""
    from medfm.report.html import section

    rows = []
    for e in expls:
        for m, maps in e.maps.items():
            cells = []
            for i in range(min(n_images, len(e.names))):
                heat = maps[i]
                if heat.ndim == 3:
                    vol = _volume(e.images[i])
                    full = resize_map(heat, vol.shape)
                    k = int(full.reshape(full.shape[0], -1).sum(axis=1).argmax())
                    rgb = overlay_rgb(vol[k], full[k])
                else:
                    rgb = overlay_rgb(e.images[i], heat)
                label = e.label_names[int(e.target[i])]
                cells.append(f"<td><img alt='{_esc(m)}' src='{_thumb(rgb, 96)}'><br>{_esc(label)} ({e.prob[i].max():.2f})</td>")
            s = e.sanity.get(m)
            check = "" if s is None else (
                f"rank corr. {_fmt(s.rank_corr)} ({'pass' if s.randomisation_passed else 'FAIL'}); deletion "
                f"{_fmt(s.deletion_auc)} vs random {_fmt(s.deletion_auc_random)}; insertion {_fmt(s.insertion_auc)} vs "
                f"random {_fmt(s.insertion_auc_random)}")
            rows.append(f"<tr><td>{_esc(e.model)}</td><td>{_esc(m)}</td>{''.join(cells)}<td>{_esc(check)}</td></tr>")
    body = (
        "<p class='note'>Each model's image tower + a linear probe fitted on the dataset's train embeddings (C on val); "
        "maps explain the predicted class (3D: the axial slice with the most map mass). Sanity: rank correlation with "
        "the weight-randomised model's maps (must be low) and deletion / insertion AUC against a random order.</p>"
        f"<table><tr><th>model</th><th>method</th>{'<th>sample</th>' * n_images}<th>sanity</th></tr>{''.join(rows)}</table>"
    )
    return section("explanations", "Explanations (sample grid per model)", body)


# --------------------------------------------------------------------------------------
# federated
# --------------------------------------------------------------------------------------
def federated_records(result: Any, dataset: str, checksum: str | None, dp_runs: Sequence[Any] = (), n_test: int = 0,
                      model: str = "medfm/small-cnn") -> list[Record]:
    """Records for the federated benchmark: one per arm (protocol ``federated/<strategy>``,
    ``centralised``, ``site_<i>``) and one per DP epsilon (``federated/<strategy>+dp(eps=E)``);
    ``model`` is the small CNN or the frozen encoder whose embeddings a linear head was trained on."""
    from medfm.results import make_provenance

    cfg = result.config
    out = []

    def rec(arm: Any, protocol: str, run_cfg: Any) -> Record:
        prov = make_provenance({"federated": to_dict(run_cfg), "arm": arm.name}, data_checksum=checksum, seed=run_cfg.seed,
                               site_sizes=result.site_sizes, site_label_counts=result.site_label_counts)
        extra = {"best_round": arm.best_round, "val_auroc_per_round": arm.val_auroc, "n_train": arm.n_train,
                 "epsilon_per_site": arm.epsilon, "noise_multiplier_per_site": arm.noise_multiplier,
                 "dp_epsilon_target": run_cfg.dp_epsilon if "+dp" in protocol else None,
                 "best_val_auroc": arm.best_val_auroc, "chosen": arm.chosen,
                 "head": "linear on frozen embeddings" if model != "medfm/small-cnn" else "small CNN"}
        return Record(dataset=dataset, split="test", model=model, protocol=protocol, metrics=dict(arm.metrics),
                      seed=run_cfg.seed, n=n_test, seconds=round(arm.seconds, 3), provenance=prov, extra=to_dict(extra))

    for name, arm in result.arms.items():
        protocol = f"federated/{cfg.strategy}" if name == "federated" else name
        dp = f"+dp(eps={cfg.dp_epsilon:g})" if name == "federated" and cfg.dp_epsilon else ""
        out.append(rec(arm, protocol + dp, cfg))
    for r in dp_runs:
        out.append(rec(r.arms["federated"], f"federated/{r.config.strategy}+dp(eps={r.config.dp_epsilon:g})", r.config))
    return out


def federated_page(records: Sequence[Record], goal: dict[str, Any] | None = None) -> str:
    """Table (AUROC with CIs per arm, per-site epsilon, the val-chosen settings), the goal with
    paired CIs, and the privacy-utility curve."""
    rows = []
    for r in records:
        m = r.metrics.get("auroc")
        eps = [e for e in (r.extra.get("epsilon_per_site") or []) if e is not None]
        rows.append(
            f"<tr><td>{_esc(r.protocol)}</td><td>{_fmt(m.value if m else None)} [{_fmt(m.ci_low if m else None, 2)}, "
            f"{_fmt(m.ci_high if m else None, 2)}]</td><td>{r.extra.get('n_train')}</td><td>{r.extra.get('best_round')}</td>"
            f"<td>{_esc(r.extra.get('dp_epsilon_target') or '')}</td><td>{_esc(', '.join(f'{e:.2f}' for e in eps))}</td>"
            f"<td>{_fmt(r.extra.get('best_val_auroc'))}</td><td>{_esc(r.extra.get('chosen') or '')}</td></tr>"
        )
    goal_html = ""
    for k, g in (goal or {}).items():
        ci = f" [{_fmt(g['ci'][0])}, {_fmt(g['ci'][1])}]" if g.get("ci") else ""
        cls = "" if g.get("met") else " class='bad'"
        goal_html += f"<li{cls}>{_esc(k)}: {_fmt(g['value'])}{ci} ({'met' if g.get('met') else 'not met'})</li>"
    if goal_html:
        goal_html = f"<h2>Goal (paired bootstrap 95% CIs over the test set)</h2><ul>{goal_html}</ul>"
    dp = sorted((r.extra["dp_epsilon_target"], r.metrics["auroc"].value) for r in records if r.extra.get("dp_epsilon_target"))
    fig = ""
    if dp:
        f, (ax,) = _figure(5.5, 3.4)
        ax.plot([e for e, _ in dp], [v for _, v in dp], "o-", label="federated + DP-SGD")
        for r in records:
            if r.protocol in ("centralised",) or (r.protocol.startswith("federated/") and "+dp" not in r.protocol):
                ax.axhline(r.metrics["auroc"].value, ls="--", lw=1, color="C1" if r.protocol == "centralised" else "C2",
                           label=f"{r.protocol} (no DP)")
        ax.set(xscale="log", xlabel="epsilon per site", ylabel="test AUROC", title="privacy-utility")
        ax.legend(fontsize=8)
        fig = f"<img alt='privacy-utility' src='{_png_uri(f)}'>"
    prov = records[0].provenance if records else {}
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>medfm federated report</title>"
        f"<style>{_CSS}</style></head><body><h1>Federated training</h1>"
        f"<p class='note'>Sites (label counts): {_esc(prov.get('site_label_counts'))}. Every arm keeps its best round by "
        "validation AUROC and its settings from the grid by validation AUROC (test is scored once, for the chosen "
        "settings); test AUROC with 95% bootstrap CI. Epsilon is per training run: choosing among k DP runs on "
        "validation composes their privacy (at most k times epsilon per site in the worst case).</p>"
        "<table><tr><th>arm</th><th>test AUROC [95% CI]</th><th>training images</th><th>best round</th>"
        "<th>target epsilon</th><th>epsilon per site (accountant)</th><th>val AUROC</th><th>chosen on val</th></tr>"
        f"{''.join(rows)}</table>{goal_html}{fig}</body></html>\n"
    )


def store_records(records: Sequence[Record], out_dir: str | Path, kind: str) -> str | None:
    """Add ``records`` to the SQLite results store as run ``<kind>-<timestamp>``; the store's
    failure (read-only home, locked file) is returned as a note, never raised."""
    import datetime as _dt
    import sqlite3
    import uuid

    from medfm.bench.store import ResultsStore

    run_id = f"{kind}-{_dt.datetime.now(_dt.UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    try:
        ResultsStore().add(run_id, list(records), out_dir=out_dir)
    except (OSError, sqlite3.Error) as exc:
        return f"results store not written ({exc})"
    return None
