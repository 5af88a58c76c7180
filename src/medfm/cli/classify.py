"""``medfm train-cls`` (save a linear-probe head on a frozen encoder) and ``medfm classify`` (apply it to images).

Classification embeds with the encoder's own preprocessing (``medfm.models.embed.embed_arrays``, as
``medfm embed`` does), so training and inference see the same input. ``classify`` takes files, folders,
DICOM series or a PACS series (dicomweb://), and ``--store-to`` sends a DICOM SR with the probabilities back.
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from medfm.cli._common import DataDir, Device, Force, Json, OptionalOutDir, OutDir


def register(app: typer.Typer) -> None:
    app.command("train-cls")(train_cls_command)
    app.command("classify")(classify_command)


def _shots(text: str | None) -> int | None:
    from medfm.errors import ConfigError

    if text is None or text.lower() == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"--shots must be a positive integer or 'all', got {text!r}")
    return n


def train_cls_command(
    model: str = typer.Option(..., "--model", "-m", help="Zoo encoder id or saved model folder (see `medfm models list`)."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Classification dataset name or folder (train/val/test splits)."),
    out: OutDir = ...,  # type: ignore[assignment]
    data_dir: DataDir = None,
    shots: str = typer.Option("all", "--shots", help="Training images per class (k-shot subset, seeded) or 'all'."),
    seed: int = typer.Option(0, "--seed", help="Seed for the shot subset, the probe and the bootstrap CIs."),
    device: Device = None,
    force: Force = False,
    json_out: Json = False,
) -> None:
    """Fit a linear-probe head (C chosen on val) on frozen embeddings; save classifier.json + head.safetensors."""
    from medfm.cli._common import err_console, out_console, output_folder, print_json
    from medfm.tasks.classification.head import train_head

    k = _shots(shots)
    with output_folder(out, force=force) as folder:
        assert folder is not None
        doc = train_head(model, dataset, folder, data_dir=str(data_dir) if data_dir else None, shots=k, seed=seed,
                         device=device, log=lambda line: err_console.print(line, highlight=False))
    if json_out:
        print_json(doc)
        return
    t = doc["metrics"]["test"]
    auc = t.get("auroc", {})
    out_console.print(f"{doc['encoder']['id']} on {dataset}: C={doc['hyperparameters']['C']:g}; test AUROC "
                      f"{auc.get('value', float('nan')):.3f} [{auc.get('ci_low') or float('nan'):.3f}, "
                      f"{auc.get('ci_high') or float('nan'):.3f}], accuracy {t.get('accuracy', {}).get('value', float('nan')):.3f}; "
                      f"saved in {doc['out']}")


def classify_command(
    model: Annotated[Path, typer.Option("--model", "-m", help="A classifier folder written by `medfm train-cls`.")],
    input: str = typer.Option(..., "--input", "-i", help="Image file, folder of images, DICOM series folder, or a PACS series "
                              "dicomweb://HOST:PORT/dicom-web/studies/UID/series/UID."),
    store_to: str = typer.Option(None, "--store-to", help="Store a DICOM SR with the class probabilities (referencing the source "
                                 "series) in this PACS: dicomweb://HOST:PORT/dicom-web or AET@HOST:PORT. DICOM input only."),
    out: OptionalOutDir = None,
    force: Force = False,
    device: Device = None,
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Images per forward pass."),
    json_out: Json = False,
) -> None:
    """Class probabilities per image (table, --json; predictions.csv in --out) from a trained head."""
    from medfm.cli._common import out_console, output_folder, print_json
    from medfm.cli.pacs import check_address, pacs_input, store
    from medfm.io.pacs import is_dicomweb_url
    from medfm.tasks.classification.head import LinearHead

    head = LinearHead.load(model)
    if store_to:
        check_address(store_to)  # a bad address fails before the work, not after
    adapter = _encoder(head, device)
    with output_folder(out, force=force) as folder, pacs_input(input) as in_path:
        rows, sources = classify_path(head, adapter, in_path, batch_size)
        if store_to:  # refuse before anything is written or sent
            from medfm.errors import InputError

            for r in rows:
                if r["case"] not in sources:
                    raise InputError(f"{r['input']}: not DICOM; an SR can only reference a DICOM source (nothing was stored)")
        if folder is not None:
            _write_csv(rows, head.class_names, folder / "predictions.csv")
        if store_to:
            with tempfile.TemporaryDirectory(prefix="medfm_sr_") as tmp:
                sr_dir = folder / "dicom_sr" if folder is not None else Path(tmp)
                files = _write_srs(rows, sources, head, model, sr_dir, overwrite=force)
                res = store(store_to, files)
            for r in rows:
                r["stored_to"] = res["node"]
    for r in rows:
        if is_dicomweb_url(input):  # fetched into a temp folder (gone now): name the address
            r["input"] = input
        if folder is None:  # SRs were written to a temp folder, now removed
            r.pop("dicom_sr", None)
    if json_out:
        print_json(rows)
        return
    for r in rows:
        probs = "  ".join(f"{k}={v:.4f}" for k, v in r["probabilities"].items())
        out_console.print(f"{r['case']}\t{r['predicted']}\t{probs}" + (f"\t-> {r['stored_to']}" if r.get("stored_to") else ""))


def _encoder(head: Any, device: str | None) -> Any:
    """The head's encoder, checked to be the same weights it was trained on."""
    from medfm._runtime import configure_threads
    from medfm.errors import InputError
    from medfm.models import create_model

    configure_threads()
    enc = head.meta.get("encoder") or {}
    ref = enc.get("model_arg") or enc.get("id")
    if not ref:
        raise InputError("the classifier names no encoder (classifier.json: encoder.id)")
    adapter = create_model(ref, device=device)
    adapter.require("image_encoder", "medfm classify")
    if enc.get("weights_hash") and adapter.weights_hash != enc["weights_hash"]:
        raise InputError(f"encoder {ref}: weights {adapter.weights_hash[:12]} differ from the ones the head was trained on "
                         f"({str(enc['weights_hash'])[:12]})")
    return adapter


def load_case_arrays(cases: list[Any], input_ndim: int, encoder: str) -> list[np.ndarray]:
    """Each case as the (C, H, W) or (C, D, H, W) array the encoder takes; a one-slice series counts as 2D."""
    from medfm.data.folder import read_any
    from medfm.errors import InputError

    arrays = []
    for c in cases:
        img = read_any(c.path)
        arr = np.asarray(img.array)
        if input_ndim == 2 and img.ndim == 3:
            if arr.shape[1] != 1:
                raise InputError(f"{c.path}: a 3D image ({arr.shape[1]} slices); encoder {encoder} takes 2D images")
            arr = arr[:, 0]
        elif input_ndim == 3 and img.ndim == 2:
            raise InputError(f"{c.path}: a 2D image; encoder {encoder} takes 3D volumes")
        arrays.append(arr)
    return arrays


def classify_path(head: Any, adapter: Any, path: Path, batch_size: int = 64) -> tuple[list[dict[str, Any]], dict[str, list[Path]]]:
    """Rows (case, input, probabilities, predicted) for every image under ``path``, and each DICOM case's source files."""
    from medfm.models.embed import embed_arrays
    from medfm.tasks.segmentation.pipeline import list_inputs

    cases = list_inputs(path)
    arrays = load_case_arrays(cases, adapter.card.input_ndim, adapter.card.id)
    emb = embed_arrays(adapter, arrays, batch_size=batch_size, desc=f"embed {adapter.card.id}")
    probs = head.predict_proba(emb)
    rows, sources = [], {}
    for c, p in zip(cases, probs, strict=True):
        pd = {name: float(v) for name, v in zip(head.class_names, p, strict=True)}
        if head.kind == "multilabel":
            predicted = ",".join(n for n, v in pd.items() if v >= 0.5)
        else:
            predicted = head.class_names[int(np.argmax(p))]
        rows.append({"case": c.case, "input": str(c.path), "probabilities": pd, "predicted": predicted})
        if c.dicom_series:
            sources[c.case] = sorted(q for q in c.path.iterdir() if q.is_file() and not q.name.startswith("."))
        elif c.path.suffix.lower() == ".dcm":
            sources[c.case] = [c.path]
    return rows, sources


def _write_csv(rows: list[dict[str, Any]], names: tuple[str, ...], path: Path) -> None:
    from medfm._paths import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "input", *[f"p_{n}" for n in names], "predicted"])
        for r in rows:
            w.writerow([r["case"], r["input"], *[f"{r['probabilities'][n]:.6g}" for n in names], r["predicted"]])


def _write_srs(rows: list[dict[str, Any]], sources: dict[str, list[Path]], head: Any, model: Path, out_dir: Path,
               overwrite: bool) -> list[Path]:
    from medfm.io.dicom_sr import write_classification_sr

    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for r in rows:
        algo = f"medfm {head.meta.get('protocol', 'linear_probe')} on {head.meta.get('encoder', {}).get('id', '?')}"
        sr = write_classification_sr(sources[r["case"]], r["probabilities"], out_dir / f"{r['case']}.dcm", algorithm=algo,
                                     overwrite=overwrite)
        r["dicom_sr"] = str(sr)
        files.append(sr)
    return files
