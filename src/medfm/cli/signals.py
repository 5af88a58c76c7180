"""``medfm signals detect / hrv / bench``: beat detection scored with EC57, heart rate and HRV,
and the beat-level encoder benchmark on physiological signals (WFDB, DICOM waveform, EDF)."""

from __future__ import annotations

from pathlib import Path

import typer

from medfm.cli._common import DataDir, Force, Json, OptionalOutDir

signals_app = typer.Typer(help="Physiological signals: beat detection (EC57), HRV, 1D encoder benchmark.",
                          no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(signals_app, name="signals")


def _pct(v: float) -> str:
    return "-" if v != v else f"{100 * v:.2f}%"


@signals_app.command("detect")
def detect_command(
    record: str = typer.Option(..., "--record", "-r",
                               help="WFDB record (path, or relative to the data location, e.g. ecg_physionet/mitdb/100)."),
    annotations: str = typer.Option("atr", "--annotations", "-a", help="Reference annotation extension (e.g. atr)."),
    lead: str | None = typer.Option(None, "--lead", help="Lead to detect on (default: the first channel)."),
    detector: str = typer.Option("neurokit", "--detector", help="Default detector (neurokit2 method)."),
    candidates: str = typer.Option(
        "neurokit,pantompkins1985,hamilton2002,elgendi2010,kalidas2017,rodrigues2021", "--candidates",
        help="Detectors compared on the first --dev-s seconds; the best (F1) is then scored on the rest."),
    dev_s: float = typer.Option(300.0, "--dev-s", help="Seconds at the start used to choose the detector (not scored)."),
    window_ms: float = typer.Option(150.0, "--window-ms", help="Matching window (EC57: 150 ms)."),
    data_dir: DataDir = None,
    out: OptionalOutDir = None,
    force: Force = False,
    json_out: Json = False,
) -> None:
    """Detect R-peaks and score them beat by beat against reference annotations (Se, +P, F1)."""
    from medfm.cli._common import err_console, out_console, output_folder, print_json
    from medfm.tasks.signals.detect import DetectConfig, detection_records, load_record, record_checksum, run_detection
    from medfm.tasks.signals.detect import summary as detect_summary

    cfg = DetectConfig(lead=lead, default=detector, candidates=tuple(c for c in candidates.split(",") if c),
                       dev_s=dev_s, window_s=window_ms / 1000.0)
    sig = load_record(record, data_dir, annotations)
    err_console.print(f"signals detect: {record}: {sig.n_channels} leads at {sig.fs:g} Hz, {sig.duration_s:.0f} s, "
                      f"{len(sig.annotations.beats()) if sig.annotations is not None else 0} reference beats")
    with output_folder(out, force=force) as folder:
        res = run_detection(sig, cfg)
        summ = detect_summary(res, cfg)
        if folder is not None:
            from medfm.report.signals import plot_beat_errors, plot_strip
            from medfm.results import write_results

            write_results(folder / "results.json", detection_records(res, cfg, record, record_checksum(sig)), cfg)
            m = res.test[res.chosen]
            summ["files"] = {
                "results": str(folder / "results.json"),
                "strip": str(plot_strip(sig, res.lead, m, folder / "strip.png", rows=3,
                                        title=f"{res.chosen} (chosen on dev), test part: {m.tp} matched, {m.fn} missed, {m.fp} false")),
                "beat_errors": str(plot_beat_errors(m, folder / "beat_errors.png",
                                                    title=f"{res.chosen}: per-beat timing error (test part)")),
            }
            if cfg.default != res.chosen:
                d = res.test[cfg.default]
                summ["files"]["strip_default"] = str(plot_strip(
                    sig, res.lead, d, folder / "strip_default.png", rows=3,
                    title=f"{cfg.default} (default), test part: {d.tp} matched, {d.fn} missed, {d.fp} false"))
    if json_out:
        print_json(summ)
        return
    from rich.table import Table

    t = Table("detector", "dev Se", "dev +P", "test Se", "test +P", "test F1", "test TP/FN/FP", "mean |err| ms", "s",
              title=f"{record} lead {res.lead}: dev = first {dev_s:g} s, test = rest, window {window_ms:g} ms")
    for name, row in summ["detectors"].items():
        d, te = row["dev"], row["test"]
        tag = (" (default)" if name == cfg.default else "") + (" (chosen on dev)" if name == res.chosen else "")
        t.add_row(name + tag, _pct(d["sensitivity"]), _pct(d["positive_predictivity"]), _pct(te["sensitivity"]),
                  _pct(te["positive_predictivity"]), _pct(te["f1"]), f"{te['tp']}/{te['fn']}/{te['fp']}",
                  f"{te['mean_abs_error_ms']:.1f}", f"{row['seconds']:.1f}")
    out_console.print(t)
    for name, path in summ.get("files", {}).items():
        out_console.print(f"{name}: {path}")


@signals_app.command("hrv")
def hrv_command(
    path: str = typer.Argument(..., help="Signal file or WFDB record (path, or relative to the data location)."),
    lead: str | None = typer.Option(None, "--lead", help="ECG lead (default: the first channel)."),
    detector: str = typer.Option("neurokit", "--detector", help="R-peak detector (neurokit2 method)."),
    data_dir: DataDir = None,
    json_out: Json = False,
) -> None:
    """Detect R-peaks and print heart rate and time-domain HRV (mean RR, SDNN, RMSSD, pNN50)."""
    from medfm.cli._common import out_console, print_json
    from medfm.data.signals import detect_rpeaks, hrv
    from medfm.tasks.signals.detect import load_record

    sig = load_record(path, data_dir, annotations=None)
    name = lead or sig.channels[0]
    peaks = detect_rpeaks(sig.channel(name), sig.fs, detector)
    res = {"lead": name, "beats": int(len(peaks)), **hrv(peaks, sig.fs)}
    if json_out:
        print_json(res)
        return
    for k, v in res.items():
        out_console.print(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}")


@signals_app.command("bench")
def bench_command(
    record: str = typer.Option("ecg_physionet/mitdb/100", "--record", "-r", help="Annotated WFDB record."),
    annotations: str = typer.Option("atr", "--annotations", "-a", help="Annotation extension with beat labels."),
    classes: str = typer.Option("N,A", "--classes", help="Beat codes, one class each (others dropped)."),
    encoders: str = typer.Option("signal/resnet1d-small,signal/transformer1d-tiny", "--encoders",
                                 help="1D encoders (medfm.models.signal)."),
    pretrain: str = typer.Option("simclr", "--pretrain", help="Self-supervised methods to add (simclr, dino; '' none)."),
    protocols: str = typer.Option("knn,linear_probe,prototype,finetune", "--protocols", help="Protocols to run."),
    shots: str = typer.Option("all,4", "--shots", help="Labelled beats per class for the embedding protocols."),
    seeds: int = typer.Option(1, "--seeds", help="Seeds 0..N-1."),
    pretrain_epochs: int = typer.Option(10, "--pretrain-epochs", help="Self-supervised epochs."),
    finetune_epochs: int = typer.Option(15, "--finetune-epochs", help="Fine-tuning epochs (early stopping on val)."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for the CIs (stratified by class)."),
    alarms: str = typer.Option("ecg_physionet/challenge2015/a103l,ecg_physionet/challenge2015/v102s", "--alarms",
                               help="Challenge-2015 records to summarise with pre-alarm features ('' none)."),
    data_dir: DataDir = None,
    out: OptionalOutDir = None,
    force: Force = False,
    json_out: Json = False,
) -> None:
    """Benchmark 1D encoders (random / self-supervised) with kNN, linear probe, few-shot and fine-tuning on beats."""
    from medfm.cli._common import err_console, out_console, output_folder, print_json
    from medfm.data.signals import BeatDatasetConfig
    from medfm.results import write_results
    from medfm.tasks.signals.bench import (
        SignalBenchConfig,
        SignalFinetuneConfig,
        alarm_feature_records,
        run_signal_bench,
    )
    from medfm.tasks.signals.pretrain import SignalPretrainConfig

    def split(s: str) -> tuple[str, ...]:
        return tuple(x.strip() for x in s.split(",") if x.strip())

    cfg = SignalBenchConfig(
        record=record, annotations=annotations, data=BeatDatasetConfig(classes=split(classes)),
        encoders=split(encoders), pretrain=split(pretrain), protocols=split(protocols),
        shots=tuple(None if s == "all" else int(s) for s in split(shots)), seeds=tuple(range(seeds)), n_boot=n_boot,
        pretrain_cfg=SignalPretrainConfig(epochs=pretrain_epochs), finetune=SignalFinetuneConfig(epochs=finetune_epochs),
    )
    with output_folder(out, force=force) as folder:
        records, summ = run_signal_bench(cfg, data_dir, log=lambda s: err_console.print(f"signals bench: {s}"))
        records += alarm_feature_records(list(split(alarms)), data_dir)
        if folder is not None:
            summ["results"] = str(write_results(Path(folder) / "results.json", records, cfg))
    if json_out:
        print_json({"summary": summ, "records": [
            {"model": r.model, "protocol": r.protocol, "shots": r.shots, "seed": r.seed, "n": r.n,
             "metrics": {k: [v.value, v.ci_low, v.ci_high] for k, v in r.metrics.items()}} for r in records]})
        return
    from rich.table import Table

    t = Table("model", "protocol", "shots", "seed", "AUROC [95% CI]", "balanced acc [95% CI]",
              title=f"{summ['dataset']}: test {summ['counts']['test']} (train {summ['counts']['train']}, val {summ['counts']['val']})")
    for r in records:
        if r.protocol == "alarm_features":
            continue
        t.add_row(r.model, r.protocol, str(r.shots or "all"), str(r.seed),
                  r.metrics["auroc"].text(3), r.metrics["balanced_accuracy"].text(3))
    out_console.print(t)
    for r in records:
        if r.protocol == "alarm_features":
            m = {k: round(v.value, 1) for k, v in r.metrics.items() if k.endswith(("beats", "hr_mean", "max_gap_s"))}
            out_console.print(f"{r.dataset}: alarm {r.extra['alarm']} ({'true' if r.extra['true_alarm'] else 'false'}); {m}")
    if "results" in summ:
        out_console.print(f"results: {summ['results']}")
