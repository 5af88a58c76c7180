"""``medfm pretrain`` and ``medfm distill``: build an encoder from unlabelled images."""

from __future__ import annotations

from pathlib import Path

import typer

from medfm.cli._common import DataDir, Json


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain_command)
    app.command("distill")(distill_command)


def _images(dataset: str | None, folder: Path | None, split: str, data_dir: Path | None, image_size: int | None):  # noqa: ANN202
    from medfm.errors import ConfigError
    from medfm.tasks.pretrain.inputs import dataset_images, folder_images

    if (dataset is None) == (folder is None):
        raise ConfigError("give exactly one of --dataset NAME or --folder DIR")
    if folder is not None:
        return folder_images(folder, image_size), str(folder)
    return dataset_images(dataset, split, data_dir), f"{dataset}:{split}"


def _prepare(out: Path, force: bool, marker: str) -> Path:
    """A folder with ``checkpoint.pt`` resumes; a finished one needs --force."""
    from medfm._paths import prepare_out_dir
    from medfm.errors import OutputError

    if (out / marker / "model_card.json").is_file() and not force:
        raise OutputError(f"{out}: already holds a finished model ({out / marker}); pass --force or choose another --out")
    return prepare_out_dir(out, force=force, resume=(out / "checkpoint.pt").is_file())


def pretrain_command(
    out: Path = typer.Option(..., "--out", help="Output folder (checkpoints, encoder/, report.html)."),
    dataset: str | None = typer.Option(None, "--dataset", help="Registered dataset name (its training split)."),
    folder: Path | None = typer.Option(None, "--folder", help="A folder of unlabelled images instead."),
    split: str = typer.Option("train", "--split", help="Split of --dataset to pretrain on."),
    method: str = typer.Option("simclr", "--method", help="dino | simclr | mae (mae: ViT only)."),
    arch: str = typer.Option("resnet18", "--arch", help="resnet18 | vit-tiny | vit-small."),
    epochs: int = typer.Option(100, "--epochs"),
    minutes: float | None = typer.Option(15.0, "--minutes", help="Wall-time budget; stops at an epoch end."),
    batch_size: int = typer.Option(128, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr"),
    image_size: int | None = typer.Option(None, "--image-size", help="Resize to this size (default: native)."),
    seed: int = typer.Option(0, "--seed"),
    model_id: str | None = typer.Option(None, "--id", help="Id recorded in the model card."),
    precision: str = typer.Option("auto", "--precision", help="auto | bf16 | fp32."),
    data_dir: DataDir = None,
    force: bool = typer.Option(False, "--force", help="Overwrite a finished run in --out."),
    json_out: Json = False,
) -> None:
    """Self-supervised pretraining (labels are never read); resumes from OUT/checkpoint.pt."""
    from medfm._config import from_dict
    from medfm.cli._common import err_console, out_console, print_json
    from medfm.report.pretrain import write_pretrain_report
    from medfm.tasks.pretrain import PretrainConfig, pretrain

    cfg = from_dict(PretrainConfig, dict(
        method=method, arch=arch, epochs=epochs, minutes=minutes, batch_size=batch_size, lr=lr,
        image_size=image_size, seed=seed, precision=precision,
    ), where="pretrain options")
    images, source = _images(dataset, folder, split, data_dir, image_size)
    out = _prepare(out, force, "encoder")
    if (out / "checkpoint.pt").is_file():
        err_console.print(f"resuming from {out / 'checkpoint.pt'}")
    result = pretrain(images, cfg, out, model_id=model_id or f"pretrained/{method}-{arch}", source=source)
    write_pretrain_report(result.history, out / "report.html", title=f"Pretraining {method} / {arch} on {source}")
    summary = {
        "encoder": str(result.folder), "epochs": result.epochs_done, "final_loss": result.losses[-1],
        "seconds": round(result.seconds, 1), "stopped": result.stopped, "resumed_from_epoch": result.resumed_from,
    }
    if json_out:
        print_json(summary)
    else:
        out_console.print(
            f"encoder saved to {result.folder} ({result.epochs_done} epochs, final loss {result.losses[-1]:.4f}, "
            f"stopped by {result.stopped}); use it with --model {result.folder}"
        )


def distill_command(
    teacher: str = typer.Option(..., "--teacher", help="Teacher model id or folder."),
    out: Path = typer.Option(..., "--out", help="Output folder (student/, distill.json, report.html)."),
    student: str = typer.Option("resnet18", "--student", help="resnet18 | vit-tiny | vit-small."),
    dataset: str | None = typer.Option(None, "--dataset"),
    folder: Path | None = typer.Option(None, "--folder"),
    split: str = typer.Option("train", "--split"),
    epochs: int = typer.Option(60, "--epochs"),
    minutes: float | None = typer.Option(15.0, "--minutes"),
    batch_size: int = typer.Option(128, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr"),
    image_size: int | None = typer.Option(None, "--image-size"),
    seed: int = typer.Option(0, "--seed"),
    model_id: str | None = typer.Option(None, "--id"),
    precision: str = typer.Option("auto", "--precision"),
    data_dir: DataDir = None,
    force: bool = typer.Option(False, "--force"),
    json_out: Json = False,
) -> None:
    """Feature distillation of a large encoder into a small student (labels are never read)."""
    from medfm._config import from_dict
    from medfm.cli._common import out_console, print_json
    from medfm.models import create_model
    from medfm.report.pretrain import write_pretrain_report
    from medfm.tasks.pretrain import DistillConfig
    from medfm.tasks.pretrain.distill import distill

    cfg = from_dict(DistillConfig, dict(
        student=student, epochs=epochs, minutes=minutes, batch_size=batch_size, lr=lr,
        image_size=image_size, seed=seed, precision=precision,
    ), where="distill options")
    images, source = _images(dataset, folder, split, data_dir, image_size)
    teacher_model = create_model(teacher, precision=precision)
    out = _prepare(out, force, "student")
    result = distill(teacher_model, images, cfg, out, model_id=model_id or f"distilled/{student}", source=source)
    history = {"losses": result.train_losses, "val_losses": result.val_losses, "config": cfg.__dict__, "seconds": result.seconds}
    write_pretrain_report(history, out / "report.html", title=f"Distillation {teacher} -> {student} on {source}")
    summary = {"student": str(result.folder), "best_epoch": result.best_epoch, "val_loss": min(result.val_losses),
               "seconds": round(result.seconds, 1), "stopped": result.stopped}
    if json_out:
        print_json(summary)
    else:
        out_console.print(f"student saved to {result.folder} (best epoch {result.best_epoch}); use it with --model {result.folder}")
