"""``medfm listen``: a DICOM Storage SCP that runs a configured pipeline on each received series."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("listen")(listen_command)


def listen_command(
    aet: str = typer.Option("MEDFM", "--aet", help="This node's AE title (1-16 characters)."),
    port: int = typer.Option(11112, "--port", help="DICOM port to listen on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0: every interface)."),
    config: Path = typer.Option(..., "--config", help="Pipeline YAML (task, model, box_fraction, segment_name, sr, device)."),
    store_dir: Path = typer.Option(..., "--store-dir", help="Received instances, results and the journal (kept across restarts)."),
    deid: bool = typer.Option(False, "--deid", help="De-identify each instance (PS3.15 Basic Profile) before it is stored."),
    destination: str = typer.Option(None, "--destination", help="Send results by C-STORE to AET@HOST:PORT."),
    quiet: float = typer.Option(10.0, "--quiet", help="A series is complete after this many seconds without a new instance."),
    complete_on_release: bool = typer.Option(
        True, "--complete-on-release/--no-complete-on-release",
        help="Also count a series complete when the association that sent it is released (turn off for senders that "
             "split one series over parallel associations)."),
) -> None:
    """Receive DICOM series (C-STORE), run the pipeline on each complete series, send the results
    (DICOM-SEG + SR) to --destination. Every instance is on disk before it is acknowledged; a journal
    in --store-dir makes a restart process each received series exactly once. Ctrl-C stops."""
    from medfm._runtime import configure_threads
    from medfm.cli._common import err_console
    from medfm.serve.listen import ListenConfig, Listener, load_pipeline_config

    cfg = ListenConfig(ae_title=aet, port=port, host=host, store_dir=store_dir, pipeline=load_pipeline_config(config),
                       deid=deid, destination=destination, quiet_seconds=quiet, complete_on_release=complete_on_release)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("medfm.listen").setLevel(logging.INFO)
    logging.getLogger("pynetdicom").setLevel(logging.ERROR)  # its INFO/DEBUG lines can show dataset contents
    configure_threads()
    listener = Listener(cfg).start()
    err_console.print(f"listen: {aet} on {host}:{listener.port}, model {cfg.pipeline.model}; Ctrl-C stops")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        listener.stop()
    err_console.print(f"listen: stopped ({listener.summary()['done']} series done)")
