"""``medfm embed``: image embeddings of a dataset split with a model, cached and resumable.

One library call (:func:`medfm.models.embed.embed_dataset`); ``--executor ray`` spreads shards
over Ray actors (``--workers`` of them, ``--gpus-per-worker 1`` for one per GPU).
"""

from __future__ import annotations

from pathlib import Path

import typer

from medfm.cli._common import DataDir, Device, Json


def register(app: typer.Typer) -> None:
    app.command("embed")(embed_command)


def embed_command(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset name or folder (see `medfm datasets list`), or a PACS "
                                "study/series dicomweb://HOST:PORT/dicom-web/studies/UID, optionally /series/UID (one sample per series)."),
    model: str = typer.Option(..., "--model", "-m", help="Model id or saved model folder (see `medfm models list`)."),
    split: list[str] = typer.Option(None, "--split", "-s", help="Split(s) to embed (default: all)."),
    data_dir: DataDir = None,
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per forward pass."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 where fast) | bf16 | fp32."),
    device: Device = None,
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N images of each split."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write <split>.npy + manifest.json here."),
    force: bool = typer.Option(False, "--force", help="Overwrite files in a non-empty --out."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the embedding cache."),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Embedding cache folder (default: MEDFM_HOME/embeddings)."),
    executor: str = typer.Option("local", "--executor", help="local (this process) or ray (actors over shards; needs medfm[scale])."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster: auto, HOST:PORT or ray://HOST:PORT (default: start one here)."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Ray actors holding the model (default: CPUs / --cpus-per-worker, or GPUs)."),
    cpus_per_worker: float = typer.Option(1.0, "--cpus-per-worker", help="CPUs (torch threads) per Ray actor."),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="GPUs per Ray actor (1 = one actor per GPU)."),
    shard_size: int = typer.Option(2048, "--shard-size", min=1, help="Images per shard (cache chunk; the unit of resume)."),
    json_out: Json = False,
) -> None:
    """Embed every image of a dataset split; embeddings are cached by weights + preprocessing + data."""
    from medfm.cli._common import err_console, out_console, print_json
    from medfm.errors import ConfigError
    from medfm.models.embed import EmbedJob, embed_dataset

    if executor == "local" and (address or workers or gpus_per_worker):
        raise ConfigError("--address, --workers and --gpus-per-worker need --executor ray")
    from medfm.cli.pacs import pacs_input
    from medfm.io.pacs import is_dicomweb_url

    from_pacs = is_dicomweb_url(dataset)
    with pacs_input(dataset, dataset=True) as ds_path:  # a dicomweb:// study/series: fetched into a temp folder
        job = EmbedJob(
            dataset=str(ds_path) if from_pacs else dataset, model=model, splits=list(split or []), data_dir=str(data_dir) if data_dir else None,
            batch_size=batch_size, precision=precision, device=device, limit=limit, out=out, force=force,
            use_cache=not no_cache, cache_dir=cache_dir, executor=executor, address=address, workers=workers,
            cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker, shard_size=shard_size,
        )
        manifest = embed_dataset(job, log=lambda line: err_console.print(line, highlight=False))
    if from_pacs:
        manifest = _name_address(manifest, str(ds_path), dataset, out)
    if json_out:
        print_json(manifest)
    else:
        for name, info in manifest["splits"].items():
            out_console.print(f"{name}\t{info['n']}\t{info['dim']}\t{info.get('images_per_s')} img/s")


def _name_address(manifest: dict, fetched: str, address: str, out: Path | None) -> dict:
    """A dataset fetched from a PACS is named by its address (not the removed temp folder) in the manifest(s)."""
    import json

    fix = json.dumps(manifest, default=str).replace(json.dumps(fetched)[1:-1], address)
    if out is not None and (out / "manifest.json").is_file():
        on_disk = (out / "manifest.json").read_text()
        (out / "manifest.json").write_text(on_disk.replace(json.dumps(fetched)[1:-1], address))
    return json.loads(fix)
