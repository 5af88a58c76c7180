"""Where medfm reads and writes: data location, cache folder, atomic writes, output folders."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from medfm.errors import OutputError


def home() -> Path:
    """medfm's cache root: ``MEDFM_HOME`` or ``~/.cache/medfm``."""
    return Path(os.environ.get("MEDFM_HOME") or Path.home() / ".cache" / "medfm").expanduser()


def data_dir(explicit: str | Path | None = None) -> tuple[Path, bool]:
    """Resolve the data location: ``--data-dir`` > ``MEDFM_DATA`` > ``<home>/data``.

    Returns (path, downloadable): downloads only go into the cache location, never into
    a folder the user named (it may be a read-only shared copy).
    """
    if explicit:
        return Path(explicit).expanduser(), False
    env = os.environ.get("MEDFM_DATA")
    if env:
        return Path(env).expanduser(), False
    return home() / "data", True


def file_hash(path: str | Path, algo: str = "sha256", chunk: int = 1 << 20) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success fsync it, rename it onto ``target``
    and fsync the folder, so a crash leaves either the old file or the complete new one."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files; give the result the usual umask mode
            umask = os.umask(0)
            os.umask(umask)
            tmp_path.chmod(0o666 & ~umask)
            _fsync_path(tmp_path)
        os.replace(tmp_path, target)
        _fsync_path(target.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _fsync_path(path: Path) -> None:
    """fsync a file, or a folder after a rename in it (skipped where the OS or file system can't)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_durably(target: str | Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically and durably (see ``atomic_path``)."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def prepare_out_dir(out: str | Path, force: bool = False, resume: bool = False) -> Path:
    """Create ``out``; refuse a non-empty folder unless ``force`` (overwrite) or ``resume``.

    Nothing is deleted here: with ``force`` files are overwritten one by one as they are
    rewritten, so a failed run never loses earlier results that it did not replace.
    """
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (force or resume):
        raise OutputError(f"{out}: folder is not empty; pass --force to overwrite or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".medfm-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"{out}: cannot write there ({exc.strerror or exc})") from exc
    return out
