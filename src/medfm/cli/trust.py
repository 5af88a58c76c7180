"""``medfm calibrate / monitor / explain / federated``: trust analyses (see ``medfm.tasks.trust``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from medfm.cli._common import DataDir, Force, Json, OptionalOutDir, OutDir


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_command)
    app.command("monitor")(monitor_command)
    app.command("explain")(explain_command)
    app.command("federated")(federated_command)


def _split_list(values: list[str] | None) -> list[str]:
    return [v.strip() for item in (values or []) for v in item.split(",") if v.strip()]


def calibrate_command(
    run: Path = typer.Argument(..., help="A 'medfm bench' output folder (or its results.json)."),
    alpha: float = typer.Option(0.1, "--alpha", help="Conformal miscoverage: sets cover the truth with prob. >= 1 - alpha."),
    conformal: str = typer.Option("lac", "--conformal", help="Conformal sets: 'lac' (deterministic; over-covers when "
                                  "scores tie) or 'smoothed' (seeded tie-breaking: coverage 1 - alpha on average)."),
    model: list[str] = typer.Option(None, "--model", "-m", help="Only these models (comma-separated or repeated)."),
    protocol: list[str] = typer.Option(None, "--protocol", "-p", help="Only these protocols."),
    n_boot: int = typer.Option(1000, "--n-boot", min=0, help="Bootstrap resamples for the CIs."),
    data_dir: DataDir = None,
    out: OptionalOutDir = None,  # default: RUN/calibration
    force: Force = False,
    json_out: Json = False,
) -> None:
    """Temperature scaling, conformal prediction sets and abstention for every cell of a bench run (fitted on val)."""
    from medfm._runtime import configure_threads
    from medfm.cli._common import err_console, out_console, print_json
    from medfm.report.trust import calibrate_run
    from medfm.tasks.trust.calibrate import CalibrationConfig, summary_row

    cfg = CalibrationConfig(alpha=alpha, n_boot=n_boot, conformal=conformal)
    base = run if run.is_dir() else run.parent
    configure_threads()
    res = calibrate_run(
        run, out or base / "calibration", cfg, data_dir=str(data_dir) if data_dir else None,
        models=_split_list(model), protocols=_split_list(protocol), force=force,
        progress=lambda line: err_console.print(line, highlight=False, markup=False),
    )
    rows = []
    for rec, r in zip(res.records, res.results, strict=True):
        rows.append({"model": rec.model, "protocol": rec.protocol, "shots": rec.shots, "seed": rec.seed, **summary_row(r)})
    summary = {
        "out": str(res.out), "report": str(res.report), "cells": len(rows), "skipped": res.skipped,
        "ece_worse_after_scaling": sum(r["ece_after"] > r["ece_before"] + 1e-12 for r in rows),
        "coverage_off_by_more_than_2_points": sum(abs(r["conformal_coverage"] - r["target_coverage"]) > 0.02 for r in rows),
        "target_outside_coverage_ci": sum(not (r["conformal_coverage_ci_low"] <= r["target_coverage"] <= r["conformal_coverage_ci_high"])
                                          for r in rows),
        "rows": rows,
    }
    if json_out:
        print_json(summary)
        return
    out_console.print("model\tprotocol\tshots\tseed\tT\tECE before\tECE after\tcoverage\tset size\tpredicted", markup=False)
    for r in rows:
        out_console.print(
            f"{r['model']}\t{r['protocol']}\t{'all' if r['shots'] is None else r['shots']}\t{r['seed']}\t{r['temperature']:.2f}\t"
            f"{r['ece_before']:.3f}\t{r['ece_after']:.3f}\t{r['conformal_coverage']:.3f}\t{r['conformal_set_size']:.2f}\t"
            f"{r['conformal_singleton_rate']:.2f}", markup=False, highlight=False,
        )
    err_console.print(
        f"ECE rose after scaling in {summary['ece_worse_after_scaling']} of {len(rows)} cells; coverage off target by "
        f">2 points in {summary['coverage_off_by_more_than_2_points']}, target outside the coverage's exact 95% CI in "
        f"{summary['target_outside_coverage_ci']}; wrote {res.report}", highlight=False, markup=False,
    )


def monitor_command(
    reference: str = typer.Option(..., "--reference", "-r", help="Embeddings .npy, a 'medfm embed --out' folder, a bench run, or a dataset name."),
    incoming: str = typer.Option(..., "--incoming", "-i", help="A folder of images, a dataset name, or embeddings .npy."),
    model: str | None = typer.Option(None, "--model", "-m", help="Encoder for images (default: the reference's)."),
    reference_split: str = typer.Option("test", "--reference-split", help="Split of a reference dataset / run."),
    incoming_split: str = typer.Option("test", "--incoming-split", help="Split of an incoming dataset."),
    alpha: float = typer.Option(0.05, "--alpha", help="Family-wise false-alarm rate."),
    n_perm: int = typer.Option(500, "--n-perm", min=19, help="MMD permutations."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N samples of each side."),
    seed: int = typer.Option(0, "--seed", help="Seed of permutations and folds."),
    data_dir: DataDir = None,
    out: OptionalOutDir = None,  # drift.json + drift.html
    force: Force = False,
    json_out: Json = False,
) -> None:
    """Is the incoming data distributed like the reference? Embedding and input-statistics tests, one verdict."""
    from medfm._runtime import configure_threads
    from medfm.cli._common import err_console, out_console, output_folder, print_json
    from medfm.models.embed import EmbeddingCache
    from medfm.report.trust import write_monitor_report
    from medfm.tasks.trust.monitor import MonitorConfig, load_incoming, load_reference, monitor_sources

    cfg = MonitorConfig(alpha=alpha, n_perm=n_perm, seed=seed)
    configure_threads()
    dd = str(data_dir) if data_dir else None
    with output_folder(out, force=force):  # refuses a non-empty folder before any work; removed again on bad input
        ref = load_reference(reference, reference_split, model, dd, limit)
        inc = load_incoming(incoming, incoming_split, model or ref.model, dd, limit)
        report = monitor_sources(ref, inc, cfg, cache=EmbeddingCache())
        if out is not None:
            write_monitor_report(report, out, force=True)
    if json_out:
        print_json(report)
        return
    out_console.print(f"verdict: {report.verdict}", markup=False)
    for t in report.tests:
        flag = "ALARM" if t.alarm else ""
        out_console.print(f"{t.name}\tstatistic {t.statistic:.4g}\tp {t.p_value:.3g}\tadjusted {t.p_adjusted:.3g}\t{flag}", markup=False)
    for r in report.reasons:
        err_console.print(f"reason: {r}", markup=False, highlight=False)
    if out is not None:
        err_console.print(f"wrote {out / 'drift.html'}", markup=False, highlight=False)


def explain_command(
    model: str = typer.Option(..., "--model", "-m", help="Model id or folder, or a 'medfm bench' run (its first encoder and dataset)."),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Dataset the probe is fitted on (and images come from)."),
    input_: list[Path] = typer.Option(None, "--input", "-i", help="Image file(s) to explain (default: the first --n of --split)."),
    method: list[str] = typer.Option(None, "--method", help="gradcam, integrated_gradients, occlusion, attention_rollout (comma-separated)."),
    n: int = typer.Option(8, "--n", min=1, help="Dataset images to explain when no --input is given."),
    split: str = typer.Option("test", "--split", help="Split the images come from."),
    sanity: bool = typer.Option(True, "--sanity/--no-sanity", help="Model-randomisation and deletion/insertion checks."),
    all_models: bool = typer.Option(False, "--all-models", help="With a bench run as --model: explain every encoder of the "
                                    "run (OUT/<model>/) and write OUT/report.html, the run's report with a sample grid per model."),
    steps: int = typer.Option(16, "--steps", min=2, help="Deletion / insertion steps."),
    data_dir: DataDir = None,
    out: OutDir = ...,  # PNG overlays (NIfTI for 3D), maps.npz, results.json, explain.html
    force: Force = False,
    json_out: Json = False,
) -> None:
    """Heat maps of a probed classifier's predictions, with sanity checks (randomisation, deletion/insertion)."""
    import numpy as np

    from medfm._runtime import configure_threads
    from medfm.cli._common import err_console, out_console, output_folder, print_json
    from medfm.errors import ConfigError, InputError
    from medfm.io import read_image
    from medfm.report.trust import explanation_grid_section, write_explanations
    from medfm.tasks.trust.explain import ExplainConfig, explain_images

    methods = tuple(_split_list(method)) or ("gradcam", "integrated_gradients")
    cfg = ExplainConfig(methods=methods, n=n, split=split, sanity=sanity, steps=steps)
    with output_folder(out, force=force):  # removed again when the inputs are bad
        run, run_models = Path(model).expanduser(), []
        if run.is_dir() and (run / "results.json").is_file():
            from medfm.results import read_results

            _, records = read_results(run / "results.json")
            encoders = [r for r in records if not r.model.startswith("scratch/")]
            if not encoders:
                raise ConfigError(f"{run}: the run holds only from-scratch models, which bench does not save; name an encoder")
            model, dataset = encoders[0].model, dataset or encoders[0].dataset
            run_models = list(dict.fromkeys(r.model for r in encoders if r.dataset == dataset)) if all_models else []
        elif all_models:
            raise ConfigError("--all-models needs a 'medfm bench' output folder as --model")
        if dataset is None:
            raise ConfigError("medfm explain: name the dataset the linear probe is fitted on (--dataset)")
        images = names = sources = None
        if input_:
            images, names, sources = [], [], []
            for p in input_:
                if not p.exists():
                    raise InputError(f"{p}: file not found")
                img = read_image(p)  # 2D images, or 3D volumes for 3D models (maps then also as NIfTI)
                images.append(np.asarray(img.array))
                names.append(p.name.split(".")[0])
                sources.append(img)
            if len({a.ndim for a in images}) > 1:
                raise InputError("medfm explain: mix of 2D images and 3D volumes in --input; pass one kind")
        configure_threads()
        dd = str(data_dir) if data_dir else None
        if all_models:
            from medfm.report import build_report

            expls = []
            for mid in run_models:
                err_console.print(f"explaining {mid} ...", markup=False, highlight=False)
                expls.append(explain_images(mid, dataset, images, names, cfg, dd, sources))
                write_explanations(expls[-1], cfg, out / mid.replace("/", "__"), force=True)
            build_report(run / "results.json", out / "report.html", extra_sections=[explanation_grid_section(expls)])
            expl = expls[0]
        else:
            expl = explain_images(model, dataset, images, names, cfg, dd, sources)
            write_explanations(expl, cfg, out, force=True)
    summary = {
        "out": str(out), "model": expl.model, "dataset": dataset, "images": len(expl.images), "probe": expl.probe,
        "models": run_models if all_models else [expl.model], "report": str(out / "report.html") if all_models else None,
        "sanity": {m: {"rank_corr": s.rank_corr, "randomisation_passed": s.randomisation_passed,
                       "deletion_auc": s.deletion_auc, "deletion_auc_random": s.deletion_auc_random,
                       "insertion_auc": s.insertion_auc, "insertion_auc_random": s.insertion_auc_random}
                   for m, s in expl.sanity.items()},
    }
    if json_out:
        print_json(summary)
        return
    for m, s in summary["sanity"].items():
        out_console.print(
            f"{m}\trank corr {s['rank_corr']:.3f} ({'pass' if s['randomisation_passed'] else 'FAIL'})\t"
            f"deletion {s['deletion_auc']:.3f} vs random {s['deletion_auc_random']:.3f}\t"
            f"insertion {s['insertion_auc']:.3f} vs random {s['insertion_auc_random']:.3f}", markup=False, highlight=False)
    err_console.print(f"wrote {out / 'explain.html'}", markup=False, highlight=False)


def _federated_data(dataset: str, data_dir: Path | None) -> tuple[Any, Any]:
    """The dataset and its train/val/test arrays as ImageSplits (2D single-label sets with stacked images)."""
    import numpy as np

    from medfm.data import load_dataset
    from medfm.errors import ConfigError
    from medfm.tasks.classification import ImageSplits

    ds = load_dataset(dataset, str(data_dir) if data_dir else None)
    if ds.card.task not in ("classification", "ordinal") or ds.card.ndim != 2:
        raise ConfigError(f"medfm federated: dataset '{dataset}' is not a 2D single-label classification dataset")
    sp = {s: ds.split(s) for s in ("train", "val", "test")}
    if any(v.images() is None for v in sp.values()):
        raise ConfigError(f"medfm federated: dataset '{dataset}' has no stacked image arrays (use a MedMNIST set)")
    arrays = [a for s in ("train", "val", "test") for a in (np.asarray(sp[s].images()), np.asarray(sp[s].labels).reshape(-1))]
    task = "binary" if len(ds.card.labels) == 2 else ("ordinal" if ds.card.task == "ordinal" else "multiclass")
    return ds, ImageSplits(*arrays, label_names=tuple(ds.card.labels), task=task)


def federated_command(
    dataset: str = typer.Option("breastmnist", "--dataset", "-d", help="A 2D single-label image dataset (e.g. a MedMNIST set)."),
    sites: int = typer.Option(5, "--sites", min=1, help="Number of sites."),
    alpha: float = typer.Option(0.5, "--alpha", help="Dirichlet label-skew concentration (small = more skew)."),
    size_skew: float | None = typer.Option(None, "--size-skew", help="Dirichlet concentration over site sizes (default: none)."),
    rounds: int = typer.Option(20, "--rounds", min=1, help="Federated rounds (the best round on val is kept)."),
    local_epochs: int = typer.Option(1, "--local-epochs", min=1, help="Local epochs per round."),
    strategy: str = typer.Option("fedavg", "--strategy", help="fedavg | fedprox | fedavgm (server momentum) | "
                                 "fedadam (server Adam)."),
    mu: float = typer.Option(0.01, "--mu", help="FedProx proximal weight."),
    server_lr: float = typer.Option(1.0, "--server-lr", help="Server step along the sites' mean update (1 = plain average)."),
    server_momentum: float = typer.Option(0.9, "--server-momentum", help="FedAvgM momentum / FedAdam beta1."),
    standardise: bool = typer.Option(False, "--standardise/--no-standardise", help="Standardise features with the "
                                     "sites' summed moments (frozen-feature head; off under DP)."),
    lr: float = typer.Option(1e-3, "--lr", help="Local learning rate."),
    optimizer: str = typer.Option("adam", "--optimizer", help="Local optimiser: adam | sgd."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Local batch size (expected size under DP's Poisson sampling)."),
    max_grad_norm: float = typer.Option(1.0, "--max-grad-norm", help="DP-SGD per-sample clipping norm."),
    encoder: str | None = typer.Option(None, "--encoder", help="Train a linear head on this frozen encoder's embeddings "
                                       "(e.g. imagenet/efficientnet-lite0) instead of a small CNN on the images."),
    grid: str | None = typer.Option(None, "--grid", help="Tune every arm on val over e.g. 'lr=1e-3,3e-3;local_epochs=1,2;"
                                    "standardise=false,true' (keys: rounds, strategy, server_lr, mu, batch_size, ...)."),
    dp_grid: str | None = typer.Option(None, "--dp-grid", help="Grid for the DP runs (default: --grid), e.g. "
                                       "'lr=0.1,0.5;max_grad_norm=0.1,1;batch_size=32,64'."),
    dp_epsilon: str | None = typer.Option(None, "--dp-epsilon", help="DP-SGD per-site epsilon(s), e.g. 1,3,8 (privacy-utility curve)."),
    dp_delta: float = typer.Option(1e-5, "--dp-delta", help="DP delta."),
    single_sites: bool = typer.Option(True, "--single-sites/--no-single-sites", help="Also train each site alone."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split and the training."),
    n_boot: int = typer.Option(1000, "--n-boot", min=0, help="Bootstrap resamples for the CIs."),
    data_dir: DataDir = None,
    out: OptionalOutDir = None,  # results.json + report.html
    force: Force = False,
    json_out: Json = False,
) -> None:
    """Federated (FedAvg/FedProx, optional DP-SGD) vs centralised vs single sites on non-IID splits."""
    import dataclasses

    import numpy as np

    from medfm._paths import atomic_write_text
    from medfm._runtime import configure_threads
    from medfm.cli._common import err_console, out_console, output_folder, print_json
    from medfm.errors import ConfigError
    from medfm.report.trust import federated_page, federated_records, store_records
    from medfm.results import write_results
    from medfm.tasks.trust.federated import FederatedConfig, embed_splits, goal_check, parse_grid, select_on_val

    try:
        eps = [float(e) for e in dp_epsilon.split(",")] if dp_epsilon else []
    except ValueError as exc:
        raise ConfigError(f"--dp-epsilon: expected numbers like 1,3,8, got {dp_epsilon!r}") from exc
    cfg = FederatedConfig(sites=sites, alpha=alpha, size_skew=size_skew, rounds=rounds, local_epochs=local_epochs,
                          strategy=strategy, mu=mu, server_lr=server_lr, server_momentum=server_momentum,
                          standardise=standardise, lr=lr, optimizer=optimizer, batch_size=batch_size, max_grad_norm=max_grad_norm,
                          dp_delta=dp_delta, single_sites=single_sites, n_boot=n_boot, seed=seed)
    for e in eps:
        FederatedConfig(dp_epsilon=e)  # validate before any work
    tune, dp_tune = parse_grid(grid), parse_grid(dp_grid or grid)

    def log(line: str) -> None:
        err_console.print(line, markup=False, highlight=False)

    configure_threads()
    with output_folder(out, force=force):  # removed again on bad input
        ds, data = _federated_data(dataset, data_dir)
        if encoder:
            data = embed_splits(data, encoder, dataset, {s: ds.split(s) for s in ("train", "val", "test")})
        log(f"{dataset}: {sites} sites, alpha {alpha}, {strategy}, {encoder or 'small CNN'}, up to {rounds} rounds; "
            f"tuned on val over {tune or 'nothing'}")
        result = select_on_val(data, cfg, tune, log=log)
        goal = goal_check(result, data.test_y, data.task, n_boot=n_boot, seed=seed)
        dp_runs = []
        for e in eps:
            log(f"DP-SGD at epsilon {e} per site, tuned on val over {dp_tune or 'nothing'} ...")
            dp_cfg = dataclasses.replace(result.config, dp_epsilon=e, centralised=False, single_sites=False)
            dp_runs.append(select_on_val(data, dp_cfg, dp_tune, log=log))
        model_name = encoder or "medfm/small-cnn"
        records = federated_records(result, dataset, str(ds.checksum()), dp_runs, n_test=len(data.test_y), model=model_name)
        if out is not None:
            write_results(out / "results.json", records, {
                "federated": dataclasses.asdict(cfg), "chosen": dataclasses.asdict(result.config), "grid": tune,
                "dp_grid": dp_tune, "dp_epsilon": eps, "dataset": dataset, "encoder": encoder, "goal": goal,
                "selection": result.selection, "dp_selection": {f"{r.config.dp_epsilon:g}": r.selection["federated"] for r in dp_runs},
            })
            atomic_write_text(out / "report.html", federated_page(records, goal))
            note = store_records(records, out, "federated")
            if note:
                log(note)
    singles = [a.metrics["auroc"].value for k, a in result.arms.items() if k.startswith("site_")]
    summary = {
        "dataset": dataset, "model": model_name, "site_sizes": result.site_sizes, "site_label_counts": result.site_label_counts,
        "arms": {r.protocol: {"auroc": r.metrics["auroc"].value, "ci": [r.metrics["auroc"].ci_low, r.metrics["auroc"].ci_high],
                              "val_auroc": r.extra.get("best_val_auroc"), "chosen": r.extra.get("chosen"),
                              "best_round": r.extra.get("best_round"), "dp_epsilon_target": r.extra.get("dp_epsilon_target"),
                              "epsilon_per_site": r.extra.get("epsilon_per_site")} for r in records},
        "federated_over_centralised": result.ratio_to_centralised(),
        "mean_single_site_auroc": float(np.mean(singles)) if singles else None,
        "goal": goal,
        "out": str(out) if out else None,
    }
    if json_out:
        print_json(summary)
        return
    for name, a in summary["arms"].items():
        eps_txt = "" if not a["dp_epsilon_target"] else f"\tepsilon/site {', '.join(f'{x:.2f}' for x in a['epsilon_per_site'] if x)}"
        out_console.print(f"{name}\tAUROC {a['auroc']:.3f} [{a['ci'][0]:.3f}, {a['ci'][1]:.3f}]\tval {a['val_auroc']:.3f}\t"
                          f"{a['chosen'] or ''}{eps_txt}", markup=False, highlight=False)
    for k, g in goal.items():
        ci = f" [{g['ci'][0]:.3f}, {g['ci'][1]:.3f}]" if g.get("ci") else ""
        out_console.print(f"{k}: {g['value']:.3f}{ci} ({'met' if g['met'] else 'NOT met'})", markup=False, highlight=False)
