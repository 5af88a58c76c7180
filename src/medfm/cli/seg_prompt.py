"""``medfm seg-prompt-eval``: a promptable segmenter (SAM family) on a dataset with simulated prompts.

MedSAM / SAM-Med2D style evaluation: each case and label gets a prompt made from its reference
mask (a jittered bounding box or N positive points; 3D volumes by default one jittered box on the
largest slice, propagated through the volume), or fixed boxes from ``--prompts``. Scored with the
``seg-eval`` metrics; writes ``cases.csv`` and a ``results.json`` like ``medfm bench``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from medfm.cli._common import DataDir, Device, Json
from medfm.errors import ConfigError


def register(app: typer.Typer) -> None:
    app.command("seg-prompt-eval")(seg_prompt_eval_command)


def seg_prompt_eval_command(
    model: str = typer.Option(..., "--model", "-m", help="Zoo segmenter id (e.g. medsam/vit-base) or a saved model folder."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Registered segmentation dataset name."),
    folder: Path = typer.Option(None, "--folder", help="A dataset folder (images/ + masks/, imagesTr/ + labelsTr/) instead of a name."),
    split: str = typer.Option("test", "--split", help="Split to evaluate."),
    prompt: str = typer.Option(None, "--prompt", help="box (jittered GT box per image / slice), points (N positive points per "
                               "image / slice) or propagate (3D: one box on the largest slice, propagated). Default: box for "
                               "2D data, propagate for 3D."),
    n_points: int = typer.Option(1, "--n-points", min=1, help="Points per prompt (--prompt points)."),
    jitter: int = typer.Option(5, "--jitter", min=0, help="Box sides moved by up to this many pixels (seeded)."),
    margin: float = typer.Option(3.0, "--margin", min=0, help="3D propagation: pixels added around the previous slice's mask box."),
    prompts_file: Path = typer.Option(None, "--prompts", help="CSV of fixed boxes (case,x0,y0,x1,y1[,label][,z]) instead of simulated prompts."),
    labels: str = typer.Option(None, "--labels", help="Label values to prompt, e.g. 1,2 (default: those in the evaluated masks)."),
    seed: int = typer.Option(0, "--seed", help="Seed for prompt simulation and the bootstrap."),
    limit: int = typer.Option(None, "--limit", min=1, help="Evaluate only the first N cases of the split."),
    tolerance_mm: float = typer.Option(1.0, "--tolerance-mm", help="Normalised surface Dice tolerance (mm)."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for CIs over cases."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: cases.csv and results.json."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty --out."),
    data_dir: DataDir = None,
    device: Device = None,
    json_out: Json = False,
) -> None:
    """Evaluate a promptable segmenter with prompts simulated from the reference masks (or given
    boxes): Dice, IoU, HD95, ASSD, NSD per case and label, with bootstrap CIs over cases."""
    from medfm._runtime import configure_threads, default_device
    from medfm.cli._common import err_console, out_console, print_json, progress
    from medfm.tasks.segmentation.pipeline import nan_to_none
    from medfm.tasks.segmentation.promptable import SegPromptEvalConfig, run_prompt_eval

    if (dataset is None) == (folder is None):
        raise ConfigError("give exactly one of --dataset NAME or --folder DIR")
    try:
        lab = tuple(int(v) for v in (labels or "").split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--labels: expected comma-separated integers, got '{labels}'") from None
    configure_threads()
    cfg = SegPromptEvalConfig(
        model=model, dataset=str(dataset if dataset is not None else folder), split=split, prompt=prompt,
        n_points=n_points, jitter=jitter, margin=margin, seed=seed, limit=limit, labels=lab,
        prompts_file=str(prompts_file) if prompts_file is not None else None, tolerance_mm=tolerance_mm, n_boot=n_boot,
    )
    run = run_prompt_eval(cfg, out, force=force, data_dir=data_dir, device=device or default_device(),
                          progress=lambda it, total: progress(it, total=total, desc="cases", unit="case"))
    res = run.result
    doc = nan_to_none({"out": str(run.out), "model": run.model, "dataset": run.dataset, "split": run.split,
                       "protocol": run.protocol, "n_cases": res.n_cases, "labels": list(res.labels),
                       "seconds": run.seconds, "summary": res.summary, "cases": res.rows, "notes": res.notes})
    if json_out:
        print_json(doc)
        return
    from rich.table import Table

    table = Table("group", "Dice", "IoU", "HD95 mm", "NSD", "n",
                  title=f"{run.model} on {run.dataset}/{run.split}, {run.protocol} ({res.n_cases} cases)")
    for group, vals in res.summary.items():
        def fmt(m: str, nd: int = 4) -> str:
            return vals[m].text(nd)
        table.add_row(group, fmt("dice"), fmt("iou"), fmt("hd95_mm", 2), fmt("nsd"), str(vals["dice"].n))
    out_console.print(table)
    out_console.print(f"wrote {run.out / 'results.json'} and {run.out / 'cases.csv'}")
    for note in res.notes:
        err_console.print(f"note: {note}")
