"""An S3-compatible HTTP server on loopback for tests: moto's ThreadedMotoServer (``moto[server]``).

``s3_server()`` yields s3fs storage options (endpoint, dummy keys) with one bucket created; the
options travel with a ``CellCache``/``ResultsStore`` to Ray workers on this machine.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

BUCKET = "medfm-test"


@contextlib.contextmanager
def s3_server() -> Iterator[dict[str, Any]]:
    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # eu-west-1: an explicit region that S3 accepts as a bucket LocationConstraint
    opts = {"key": "testing", "secret": "testing", "endpoint_url": f"http://{host}:{port}",
            "client_kwargs": {"region_name": "eu-west-1"}, "skip_instance_cache": True}
    try:
        try:
            s3fs.S3FileSystem(**opts).mkdir(BUCKET)
        except FileExistsError:  # moto keeps its buckets per process, across server restarts
            pass
        yield opts
    finally:
        server.stop()


def bucket_url() -> str:
    """A fresh prefix in the test bucket."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"
