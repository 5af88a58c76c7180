"""``medfm pacs``: echo, search, retrieve and store against a PACS over DICOMweb or DIMSE.

An ADDRESS is a DICOMweb root (``dicomweb://HOST:PORT/dicom-web``, ``http(s)://...``; it may go on with
``/studies/UID/series/UID``) or a DIMSE node (``AET@HOST:PORT``). A PACS that is down, answers an
error or refuses: one line and exit 2.
"""

from __future__ import annotations

from pathlib import Path

import typer

from medfm.cli._common import Json
from medfm.errors import InputError

pacs_app = typer.Typer(help="Talk to a PACS (DICOMweb or DIMSE): echo, search, retrieve, store.", no_args_is_help=True)

ADDRESS_HELP = "dicomweb://HOST:PORT/dicom-web, optionally followed by /studies/UID and /series/UID (or http(s)://...), or AET@HOST:PORT (DIMSE)."
TIMEOUT_HELP = "Seconds to wait for the PACS per request (connect, answer)."


def register(app: typer.Typer) -> None:
    app.add_typer(pacs_app, name="pacs")


def _target(address: str):
    """(DicomWebLocation, None) or (None, DimseNode) for an ADDRESS."""
    from medfm.io.pacs import is_dicomweb_url, parse_dicomweb_url, parse_dimse_address

    if is_dicomweb_url(address):
        return parse_dicomweb_url(address), None
    return None, parse_dimse_address(address)


def check_address(address: str) -> None:
    """Raise InputError now when ADDRESS is neither a DICOMweb root nor AET@HOST:PORT."""
    _target(address)


@pacs_app.command("echo")
def echo_command(
    address: str = typer.Argument(..., help=ADDRESS_HELP),
    calling_aet: str = typer.Option("MEDFM", "--calling-aet", help="Our AE title (DIMSE)."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.1, help=TIMEOUT_HELP),
    json_out: Json = False,
) -> None:
    """C-ECHO a DICOM node; for a DICOMweb address, one QIDO-RS query (is the server there and answering?)."""
    import time

    from medfm.cli._common import out_console, print_json
    from medfm.io.pacs import DicomWeb, echo

    web, node = _target(address)
    if node is not None:
        res = echo(node, calling_aet=calling_aet, timeout=timeout)
    else:
        t0 = time.perf_counter()
        DicomWeb(web, timeout=timeout).search_studies(limit=1)
        res = {"node": web.base, "status": "success", "seconds": round(time.perf_counter() - t0, 4)}
    if json_out:
        print_json(res)
    else:
        out_console.print(f"{res['node']}: {res['status']} ({res['seconds'] * 1000:.0f} ms)")


@pacs_app.command("search")
def search_command(
    address: str = typer.Argument(..., help=ADDRESS_HELP),
    study: str = typer.Option(None, "--study", help="List the series of this StudyInstanceUID instead of studies."),
    patient_id: str = typer.Option(None, "--patient-id", help="PatientID (wildcards * ? allowed)."),
    patient_name: str = typer.Option(None, "--patient-name", help="PatientName (wildcards * ? allowed)."),
    date: str = typer.Option(None, "--date", help="StudyDate: YYYYMMDD or a range YYYYMMDD-YYYYMMDD."),
    modality: str = typer.Option(None, "--modality", help="Studies: ModalitiesInStudy; series: Modality (e.g. CT)."),
    accession: str = typer.Option(None, "--accession", help="AccessionNumber."),
    limit: int = typer.Option(None, "--limit", min=1, help="At most N results (DICOMweb)."),
    calling_aet: str = typer.Option("MEDFM", "--calling-aet", help="Our AE title (DIMSE)."),
    timeout: float = typer.Option(30.0, "--timeout", min=0.1, help=TIMEOUT_HELP),
    json_out: Json = False,
) -> None:
    """Search studies (QIDO-RS or C-FIND) with filters, or the series of one study (--study)."""
    from medfm.cli._common import out_console, print_json
    from medfm.errors import ConfigError
    from medfm.io.pacs import DicomWeb, find

    web, node = _target(address)
    study = study or (web.study if web is not None else None)
    if study:
        if any(v for v in (patient_id, patient_name, date, accession)):
            raise ConfigError("with --study only --modality filters the series")
        filters = {"Modality": modality}
    else:
        filters = {"PatientID": patient_id, "PatientName": patient_name, "StudyDate": date,
                   "ModalitiesInStudy": modality, "AccessionNumber": accession}
    if node is not None:
        rows = find(node, "SERIES" if study else "STUDY", filters, study=study, calling_aet=calling_aet, timeout=timeout)
        if limit:
            rows = rows[:limit]
    else:
        client = DicomWeb(web, timeout=timeout)
        rows = client.search_series(study, filters, limit=limit) if study else client.search_studies(filters, limit=limit)
    if json_out:
        print_json(rows)
        return
    cols = (["SeriesInstanceUID", "Modality", "SeriesNumber", "NumberOfSeriesRelatedInstances", "SeriesDescription"] if study else
            ["StudyInstanceUID", "PatientID", "StudyDate", "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "StudyDescription"])
    # tab-separated, never truncated: UIDs are copied from here into retrieve commands
    out_console.print(f"# {len(rows)} {'series' if study else 'studies'}")
    out_console.print("\t".join(cols))
    for r in rows:
        out_console.print("\t".join(str(r.get(c) or "") for c in cols), overflow="ignore", crop=False)


@pacs_app.command("retrieve")
def retrieve_command(
    address: str = typer.Argument(..., help=ADDRESS_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the instances (<SOPInstanceUID>.dcm; a study: one subfolder per series)."),
    study: str = typer.Option(None, "--study", help="StudyInstanceUID (or in a dicomweb:// address)."),
    series: str = typer.Option(None, "--series", help="SeriesInstanceUID (default: every series of the study)."),
    via: str = typer.Option("get", "--via", help="DIMSE only: get (C-GET) or move (C-MOVE to --move-aet on --move-port here)."),
    move_aet: str = typer.Option("MEDFM", "--move-aet", help="C-MOVE destination AE title (the PACS must know it)."),
    move_port: int = typer.Option(11113, "--move-port", help="C-MOVE: port of the storage SCP started here."),
    deid: bool = typer.Option(False, "--deid", help="De-identify the retrieved files in place (PS3.15 basic profile; needs medfm.io.deid)."),
    force: bool = typer.Option(False, "--force", help="Replace files that already exist in --out."),
    calling_aet: str = typer.Option("MEDFM", "--calling-aet", help="Our AE title (DIMSE)."),
    timeout: float = typer.Option(60.0, "--timeout", min=0.1, help=TIMEOUT_HELP),
    json_out: Json = False,
) -> None:
    """Retrieve a series (or a whole study) into a local folder: WADO-RS, C-GET or C-MOVE. All or nothing per series."""
    from medfm.cli._common import out_console, print_json
    from medfm.errors import ConfigError

    web, _node = _target(address)
    study = study or (web.study if web is not None else None)
    series = series or (web.series if web is not None else None)
    if not study:
        raise ConfigError("give the study: --study UID or an address .../studies/UID[/series/UID]")
    if via not in ("get", "move"):
        raise ConfigError(f"--via must be get or move, got {via}")
    if deid:  # identified files go to a temp folder only; --out receives the de-identified copies
        import tempfile

        with tempfile.TemporaryDirectory(prefix="medfm_pacs_") as tmp:
            files = retrieve(address, study, series, Path(tmp) / "in", via=via, move_aet=move_aet, move_port=move_port,
                             calling_aet=calling_aet, timeout=timeout)
            deid_report = _deidentify(Path(tmp) / "in", out, force)
        files = [out / e["output"] for e in deid_report["entries"]]
    else:
        deid_report = None
        files = retrieve(address, study, series, out, via=via, move_aet=move_aet, move_port=move_port, overwrite=force,
                         calling_aet=calling_aet, timeout=timeout)
    doc = {"study": study, "series": series, "out": str(out), "files": len(files),
           "deid": None if deid_report is None else {k: v for k, v in deid_report.items() if k != "entries"}}
    if json_out:
        print_json(doc)
    else:
        out_console.print(f"{len(files)} instance(s) -> {out}" + ("; de-identified" if deid_report is not None else ""))


def retrieve(address: str, study: str, series: str | None, out: Path, via: str = "get", move_aet: str = "MEDFM",
             move_port: int = 11113, overwrite: bool = False, calling_aet: str = "MEDFM", timeout: float = 60.0) -> list[Path]:
    """Retrieve one series (or every series of a study, into subfolders) from ADDRESS; returns the files."""
    from medfm.errors import InputError
    from medfm.io.pacs import DicomWeb, find, get_series, move_series

    web, node = _target(address)
    if web is not None:
        client = DicomWeb(web, timeout=timeout)
        return client.retrieve_series(study, series, out, overwrite) if series else client.retrieve_study(study, out, overwrite)

    def one(sr: str, folder: Path) -> list[Path]:
        if via == "move":
            return move_series(node, study, sr, folder, move_aet, move_port, overwrite=overwrite, calling_aet=calling_aet, timeout=timeout)
        return get_series(node, study, sr, folder, overwrite=overwrite, calling_aet=calling_aet, timeout=timeout)

    if series:
        return one(series, out)
    rows = find(node, "SERIES", study=study, calling_aet=calling_aet, timeout=timeout)
    if not rows:
        raise InputError(f"{node}: study {study}: not found on the PACS (no series)")
    files: list[Path] = []
    for r in rows:
        files += one(r["SeriesInstanceUID"], out / r["SeriesInstanceUID"])
    return files


def _deidentify(src: Path, out: Path, force: bool) -> dict:
    """De-identify the retrieved folder ``src`` into ``out`` (PS3.15 basic profile, ``medfm.io.deid``); the audit record."""
    from medfm.io.deid import deidentify_folder

    return deidentify_folder(src, out, force=force)


@pacs_app.command("store")
def store_command(
    address: str = typer.Argument(..., help=ADDRESS_HELP),
    paths: list[Path] = typer.Argument(..., help="DICOM files or folders (searched recursively)."),
    calling_aet: str = typer.Option("MEDFM", "--calling-aet", help="Our AE title (DIMSE)."),
    timeout: float = typer.Option(60.0, "--timeout", min=0.1, help=TIMEOUT_HELP),
    json_out: Json = False,
) -> None:
    """Send DICOM files to the PACS: STOW-RS (DICOMweb address) or C-STORE (AET@HOST:PORT)."""
    from medfm.cli._common import out_console, print_json

    res = store(address, paths, calling_aet=calling_aet, timeout=timeout)
    if json_out:
        print_json(res)
    else:
        out_console.print(f"stored {res['stored']} instance(s) in {len(res['studies'])} study(ies) at {res['node']}")


def store(address: str, paths: list[Path], calling_aet: str = "MEDFM", timeout: float = 60.0) -> dict:
    """STOW-RS or C-STORE files/folders to ADDRESS (every file is read first: a bad file stores nothing)."""
    from medfm.io.pacs import DicomWeb, c_store, read_dicom_files

    web, node = _target(address)
    datasets = read_dicom_files(paths)
    if web is not None:
        res = DicomWeb(web, timeout=timeout).store(datasets)
        res["node"] = web.base
    else:
        res = c_store(node, datasets, calling_aet=calling_aet, timeout=timeout)
        res["node"] = str(node)
    return res


# ---------------------------------------------------------------------------------------------
# Jobs straight from / back to a PACS (used by `medfm segment --input dicomweb://... --store-to ...`)
# ---------------------------------------------------------------------------------------------


class pacs_input:  # used as a context manager, like open()
    """``with pacs_input(text) as path``: a dicomweb:// series fetched into a temp folder (removed after), else ``Path(text)``.

    ``dataset=True``: the folder holds one subfolder per series (a study URL: each image series), as
    ``medfm embed --dataset`` reads a folder of DICOM series. A MedfmError raised inside names the address.
    """

    # series that hold no images (reports, segmentations, presentation states): left out of a study's dataset
    NON_IMAGE = frozenset({"SR", "SEG", "PR", "KO", "DOC", "RTSTRUCT", "RTPLAN", "REG"})

    def __init__(self, text: str | Path, timeout: float = 60.0, dataset: bool = False) -> None:
        self.text, self.timeout, self.dataset = str(text), timeout, dataset
        self._tmp, self.folder = None, None

    def __enter__(self) -> Path:
        import tempfile

        from medfm.errors import ConfigError
        from medfm.io.pacs import DicomWeb, is_dicomweb_url, parse_dicomweb_url

        if not is_dicomweb_url(self.text):
            return Path(self.text)
        loc = parse_dicomweb_url(self.text)
        if not loc.study or not (loc.series or self.dataset):
            raise ConfigError(f"{self.text}: give one series: dicomweb://HOST:PORT/ROOT/studies/UID/series/UID")
        self._tmp = tempfile.TemporaryDirectory(prefix="medfm_pacs_")
        root = Path(self._tmp.name)
        try:
            client = DicomWeb(loc, timeout=self.timeout)
            if loc.series:
                series = [loc.series]
            else:  # a study as a dataset: one sample per image series
                rows = client.search_series(loc.study)
                series = [r["SeriesInstanceUID"] for r in rows if (r.get("Modality") or "") not in self.NON_IMAGE]
                if not series:
                    raise InputError(f"{self.text}: the study has no image series on the PACS")
            for uid in series:
                client.retrieve_series(loc.study, uid, root / uid)
        except BaseException:
            self._tmp.cleanup()
            raise
        # a dataset is a folder of DICOM series folders; a single input is the series folder itself
        self.folder = root if self.dataset else root / loc.series
        return self.folder

    def __exit__(self, exc_type, exc, tb) -> None:
        from medfm.errors import MedfmError

        if self._tmp is None:
            return
        self._tmp.cleanup()
        if isinstance(exc, MedfmError) and self.folder and str(self.folder) in str(exc):
            exc.args = (str(exc).replace(str(self.folder), self.text),) + exc.args[1:]


def store_results(rows: list[dict], destination: str, out_dir: Path, overwrite: bool = False,
                  timeout: float = 60.0) -> dict:
    """Write a TID 1500 SR (segment volumes) beside each row's DICOM-SEG and store SEG + SR at ``destination``.

    Everything is written and read back first, then sent; a row without a DICOM-SEG (non-DICOM input) is an error.
    """
    from medfm.io.dicom_sr import write_segment_volume_sr

    files: list[Path] = []
    for r in rows:
        if not r.get("dicom_seg"):
            raise InputError(f"{r.get('input')}: no DICOM-SEG was written (not a DICOM series); nothing to store to {destination}")
        sr = write_segment_volume_sr(r["dicom_seg"], r["input"], out_dir / "dicom_sr" / f"{r['case']}.dcm", overwrite=overwrite)
        r["dicom_sr"] = str(sr)
        files += [Path(r["dicom_seg"]), sr]
    res = store(destination, files, timeout=timeout)
    for r in rows:
        r["stored_to"] = res["node"]
    return res
