"""Data location and checksummed download, against a loopback HTTP server started here."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from medfm.data import fetch, load_dataset
from medfm.data.card import DatasetCard, FileEntry
from medfm.errors import ChecksumError, MissingDataError


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder it serves) on 127.0.0.1, a free port."""
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Use the cache location (the only one downloads go to): no MEDFM_DATA, fresh MEDFM_HOME."""
    home = tmp_path / "home"
    monkeypatch.setenv("MEDFM_HOME", str(home))
    monkeypatch.delenv("MEDFM_DATA", raising=False)
    monkeypatch.delenv("MEDFM_DATA_MIRROR", raising=False)
    return home / "data"


def _card(url: str, md5: str) -> DatasetCard:
    return DatasetCard(name="tinyset", task="classification", modality="OT", folder="tiny",
                       files=(FileEntry(path="tiny.bin", md5=md5, url=url),))


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def test_download_success_is_verified_and_atomic(server: tuple[str, Path], cache: Path) -> None:
    base, served = server
    payload = b"medfm" * 1000
    (served / "tiny.bin").write_bytes(payload)
    card = _card(f"{base}/tiny.bin", hashlib.md5(payload).hexdigest())
    located = fetch.locate(card)
    target = cache / "tiny" / "tiny.bin"
    assert located.files["tiny.bin"] == target
    assert target.read_bytes() == payload
    assert located.hashes["tiny.bin"] == f"md5:{hashlib.md5(payload).hexdigest()}"
    assert _tree(cache) == ["tiny", "tiny/tiny.bin"]  # no temporary file left behind
    # Second use: found locally, not downloaded again (the server no longer has it).
    (served / "tiny.bin").unlink()
    assert fetch.locate(card).files["tiny.bin"] == target


def test_download_checksum_mismatch_leaves_nothing(server: tuple[str, Path], cache: Path) -> None:
    base, served = server
    (served / "tiny.bin").write_bytes(b"not what the card says")
    card = _card(f"{base}/tiny.bin", "0" * 32)
    with pytest.raises(ChecksumError) as err:
        fetch.locate(card)
    msg = str(err.value)
    assert "tiny.bin" in msg and "0" * 32 in msg and hashlib.md5(b"not what the card says").hexdigest() in msg
    assert not (cache / "tiny").exists()  # not even the folder made for it


def test_server_down_is_a_fast_missing_data_error(cache: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    card = _card(f"http://127.0.0.1:{port}/tiny.bin", "0" * 32)
    start = time.perf_counter()
    with pytest.raises(MissingDataError) as err:
        fetch.locate(card)
    assert time.perf_counter() - start < 5
    msg = str(err.value)
    assert f"http://127.0.0.1:{port}/tiny.bin" in msg and str(cache / "tiny" / "tiny.bin") in msg
    assert not (cache / "tiny").exists()


def test_silent_server_times_out(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "CONNECT_TIMEOUT_S", 0.5)
    with socket.socket() as s:  # accepts connections (backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        card = _card(f"http://127.0.0.1:{s.getsockname()[1]}/tiny.bin", "0" * 32)
        start = time.perf_counter()
        with pytest.raises(MissingDataError, match="timed out"):
            fetch.locate(card)
        assert time.perf_counter() - start < 3
    assert not (cache / "tiny").exists()


def test_named_data_dir_is_never_downloaded_into(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDFM_DATA", str(tmp_path / "mine"))
    with pytest.raises(MissingDataError) as err:
        load_dataset("pathmnist_224")
    msg = str(err.value)
    assert "https://zenodo.org/records/10519652/files/pathmnist_224.npz?download=1" in msg
    assert str(tmp_path / "mine" / "pathmnist" / "pathmnist_224.npz") in msg
    assert not (tmp_path / "mine").exists()


def test_mirror_download_of_real_breastmnist(shared_data: Path, server: tuple[str, Path], cache: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    base, served = server
    shutil.copy(shared_data / "breastmnist" / "breastmnist.npz", served / "breastmnist.npz")
    monkeypatch.setenv("MEDFM_DATA_MIRROR", base)
    ds = load_dataset("breastmnist")
    assert ds.root == cache / "breastmnist"
    assert fetch.checksum(cache / "breastmnist" / "breastmnist.npz") == "750601b1f35ba3300ea97c75c52ff8f6"
    assert ds.counts() == {"train": 546, "val": 78, "test": 156}


def test_local_file_with_wrong_checksum_is_reported_and_kept(tmp_path: Path) -> None:
    folder = tmp_path / "breastmnist"
    folder.mkdir()
    bad = folder / "breastmnist.npz"
    bad.write_bytes(b"corrupt")
    with pytest.raises(ChecksumError) as err:
        load_dataset("breastmnist", data_dir=tmp_path)
    msg = str(err.value)
    assert str(bad) in msg and "750601b1f35ba3300ea97c75c52ff8f6" in msg and hashlib.md5(b"corrupt").hexdigest() in msg
    assert bad.read_bytes() == b"corrupt"  # the user's file is never deleted


def test_file_directly_under_data_dir_is_found(shared_data: Path, tmp_path: Path) -> None:
    (tmp_path / "breastmnist.npz").symlink_to(shared_data / "breastmnist" / "breastmnist.npz")
    ds = load_dataset("breastmnist", data_dir=tmp_path)
    assert ds.root == tmp_path
    assert len(ds.split("val")) == 78
