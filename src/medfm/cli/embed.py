"""``medfm embed``: image embeddings of a dataset split with a model, cached and resumable."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

DATA_DIR_HELP = "Data location (default: $MEDFM_DATA, else ~/.cache/medfm/data)."


def register(app: typer.Typer) -> None:
    app.command("embed")(embed_command)


def split_arrays(split: Any) -> Any:
    """(N, C, H, W) array of a split (``images()`` when the split has it, else sample by sample)."""
    if hasattr(split, "images"):
        return split.images()
    return [s.image.array for s in split]


def embed_command(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset name or folder (see `medfm datasets list`)."),
    model: str = typer.Option(..., "--model", "-m", help="Model id or saved model folder (see `medfm models list`)."),
    split: list[str] = typer.Option(None, "--split", "-s", help="Split(s) to embed (default: all)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per forward pass."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 where fast) | bf16 | fp32."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: CUDA when present)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N images of each split."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write <split>.npy + manifest.json here."),
    force: bool = typer.Option(False, "--force", help="Overwrite files in a non-empty --out."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the embedding cache."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
) -> None:
    """Embed every image of a dataset split; embeddings are cached by weights + preprocessing + data."""
    import numpy as np

    from medfm import __version__
    from medfm._paths import atomic_path, atomic_write_text, prepare_out_dir
    from medfm._provenance import versions
    from medfm._runtime import check_precision, configure_threads
    from medfm.cli._common import err_console, out_console, print_json
    from medfm.data import load_dataset
    from medfm.models import create_model
    from medfm.models.embed import EmbeddingCache, compute_dtype, embed_arrays, embed_cached

    check_precision(precision, "--precision")
    out_dir = prepare_out_dir(out, force=force) if out is not None else None
    configure_threads()
    ds = load_dataset(dataset, data_dir)
    names = list(split) if split else list(ds.splits)
    adapter = create_model(model, device=device, precision=precision)
    adapter.require("image_encoder", "medfm embed")
    cache = None if no_cache else EmbeddingCache()
    manifest: dict[str, Any] = {
        "medfm_version": __version__, "dataset": dataset, "model": adapter.card.id, "model_arg": model,
        "weights_hash": adapter.weights_hash, "weights_source": adapter.weights_source,
        "device": adapter.device, "dtype": compute_dtype(adapter), "batch_size": batch_size, "limit": limit,
        "versions": versions(), "splits": {},
    }
    for name in names:
        sd = ds.split(name)
        images = split_arrays(sd)
        labels = np.asarray(sd.labels)
        key = sd.checksum()
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
            key = f"{key}:first{limit}"
        t0 = time.perf_counter()
        if cache is None:
            emb = embed_arrays(adapter, images, batch_size=batch_size, desc=f"embed {name}")
            cached = None
        else:
            emb = embed_cached(adapter, images, key, cache=cache, batch_size=batch_size, desc=f"embed {name}")
            cached = {"hit": cache.last.chunks_hit, "computed": cache.last.chunks_computed, "entry": cache.last.path}
        sec = time.perf_counter() - t0
        info: dict[str, Any] = {
            "n": int(emb.shape[0]), "dim": int(emb.shape[1]) if emb.ndim == 2 else 0, "data_checksum": key,
            "seconds": round(sec, 3), "images_per_s": round(emb.shape[0] / sec, 1) if sec > 0 else None,
            "cache": cached,
        }
        if out_dir is not None:
            for fname, arr in ((f"{name}.npy", emb), (f"{name}_labels.npy", labels)):
                with atomic_path(out_dir / fname) as tmp:
                    with open(tmp, "wb") as f:
                        np.save(f, arr)
            info["file"], info["labels_file"] = f"{name}.npy", f"{name}_labels.npy"
        manifest["splits"][name] = info
        err_console.print(f"{name}: {info['n']} x {info['dim']} in {sec:.1f}s")
    if out_dir is not None:
        import json

        atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2, default=str))
        manifest["out"] = str(out_dir)
    if json_out:
        print_json(manifest)
    else:
        for name, info in manifest["splits"].items():
            out_console.print(f"{name}\t{info['n']}\t{info['dim']}\t{info.get('images_per_s')} img/s")
