"""Where a dataset's files are, and the checksummed download into the cache.

Data location: ``--data-dir`` > ``MEDFM_DATA`` > ``<MEDFM_HOME>/data`` (``medfm._paths.data_dir``).
A card's file is looked for at ``<location>/<card.folder>/<file>``, ``<location>/<card.name>/<file>``
and ``<location>/<file>``. Only the cache location is ever downloaded into (never a folder the
user named); a download goes to a temporary file, is checked against the card's MD5/SHA-256 and
only then renamed into place. ``MEDFM_DATA_MIRROR`` (a base URL) replaces the official URLs,
for sites that keep their own copy.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from medfm._paths import atomic_write_text, data_dir, home
from medfm.data.card import DatasetCard, FileEntry
from medfm.errors import ChecksumError, MissingDataError

CONNECT_TIMEOUT_S = 5.0
_PERSIST_BYTES = 64 << 20
_memo: dict[tuple[str, int, int, str], str] = {}


@dataclass
class Located:
    """Where one dataset lies: its folder, each card file's path and verified checksum."""

    root: Path
    files: dict[str, Path] = field(default_factory=dict)  # FileEntry.path -> local path
    hashes: dict[str, str] = field(default_factory=dict)  # FileEntry.path -> "md5:<hex>" / "sha256:<hex>"


def _cache_file() -> Path:
    return home() / "checksums.json"


def checksum(path: str | Path, algo: str = "md5") -> str:
    """Hex digest of a file, remembered by (path, size, mtime) in memory and under MEDFM_HOME."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns, algo)
    if key in _memo:
        return _memo[key]
    persistent = st.st_size >= _PERSIST_BYTES  # only large files are worth a stored entry
    store_key = f"{algo}:{st.st_size}:{st.st_mtime_ns}:{p}"
    cache: dict[str, str] = {}
    if persistent:
        try:
            cache = json.loads(_cache_file().read_text())
        except (OSError, ValueError):
            cache = {}
    digest = cache.get(store_key)
    if digest is None:
        h = hashlib.new(algo)
        with open(p, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        digest = h.hexdigest()
        if persistent:
            cache[store_key] = digest
            try:
                atomic_write_text(_cache_file(), json.dumps(cache))
            except OSError:
                pass  # a read-only cache only costs time
    _memo[key] = digest
    return digest


def verify_file(path: Path, entry: FileEntry) -> str:
    """Check ``path`` against the entry's SHA-256 or MD5; return "algo:hex".

    Raises ChecksumError naming the file, the expected and the actual digest.
    Files without a declared checksum get an MD5 for provenance only.
    """
    algo, expected = ("sha256", entry.sha256) if entry.sha256 else ("md5", entry.md5)
    got = checksum(path, algo)
    if expected and got.lower() != expected.lower():
        raise ChecksumError(
            f"{path}: {algo} checksum mismatch (expected {expected}, got {got}); "
            "the file is corrupt or a different version: replace it with the official file"
        )
    return f"{algo}:{got}"


def candidate_dirs(card: DatasetCard, base: Path) -> list[Path]:
    """Folders that may hold the card's files, in the order they are tried."""
    out: list[Path] = []
    for d in (base / card.folder if card.folder else None, base / card.name, base):
        if d is not None and d not in out:
            out.append(d)
    return out


def _source_url(entry: FileEntry) -> str | None:
    mirror = os.environ.get("MEDFM_DATA_MIRROR")
    if mirror:
        return mirror.rstrip("/") + "/" + urllib.parse.quote(entry.path)
    return entry.url


def _resolve_host(url: str, timeout: float) -> None:
    """Resolve the URL's host within ``timeout`` s (name lookups ignore socket timeouts)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(socket.getaddrinfo, host, port).result(timeout=timeout)
    except concurrent.futures.TimeoutError as exc:
        raise OSError(f"name lookup of {host} timed out") from exc
    finally:
        pool.shutdown(wait=False)


def download(url: str, target: Path, entry: FileEntry, timeout: float | None = None) -> str:
    """Download ``url`` to ``target`` atomically and verify it; return "algo:hex".

    On a checksum mismatch the download is discarded (nothing is left at ``target``) and a
    ChecksumError names the file, the expected and the actual digest. A network failure is
    a MissingDataError saying where to place the file by hand. Folders created for the
    download are removed again when it fails. ``timeout`` (s, default ``CONNECT_TIMEOUT_S``)
    bounds the name lookup, the connection and each read.
    """
    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    created = [d for d in (target.parent, *target.parent.parents) if not d.exists()]
    try:
        return _download(url, target, entry, timeout)
    except BaseException:
        for d in created:  # innermost first; rmdir only removes folders that stayed empty
            try:
                d.rmdir()
            except OSError:
                break
        raise


def _download(url: str, target: Path, entry: FileEntry, timeout: float) -> str:
    from medfm._paths import atomic_path

    algo, expected = ("sha256", entry.sha256) if entry.sha256 else ("md5", entry.md5)
    where = target.parent
    with atomic_path(target) as tmp:
        h = hashlib.new(algo)
        start = time.perf_counter()
        try:
            _resolve_host(url, timeout)
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:  # noqa: S310
                total = int(resp.headers.get("Content-Length") or 0)
                size_txt = f" ({total / 1e6:.1f} MB)" if total else ""
                print(f"medfm: downloading {entry.path}{size_txt} from {url}", file=sys.stderr, flush=True)
                n = 0
                last = start
                while block := resp.read(1 << 20):
                    out.write(block)
                    h.update(block)
                    n += len(block)
                    now = time.perf_counter()
                    if now - last > 10:
                        last = now
                        of = f"/{total / 1e6:.1f}" if total else ""
                        print(f"medfm: {entry.path}: {n / 1e6:.1f}{of} MB", file=sys.stderr, flush=True)
        except (urllib.error.URLError, OSError, TimeoutError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise MissingDataError(
                f"cannot download {entry.path} from {url} ({reason}); download it yourself and place it at "
                f"{where / entry.path}, or point --data-dir / MEDFM_DATA at a folder that has it"
            ) from exc
        got = h.hexdigest()
        if expected and got.lower() != expected.lower():
            raise ChecksumError(
                f"{entry.path} downloaded from {url}: {algo} checksum mismatch (expected {expected}, got {got}); "
                "the download was discarded"
            )
    print(f"medfm: saved {target} ({time.perf_counter() - start:.1f}s)", file=sys.stderr, flush=True)
    return f"{algo}:{got}"


def find_local(card: DatasetCard, entry: FileEntry, base: Path) -> Path | None:
    for d in candidate_dirs(card, base):
        p = d / entry.path
        if p.exists():
            return p
    return None


def _missing_message(card: DatasetCard, base: Path, what: str) -> str:
    home_page = card.options.get("homepage") or ""
    get_it = f"Get it from {home_page} and put it" if home_page else "Put it"
    return (
        f"dataset {card.name}: {what} not found under {base}. {get_it} at {base / (card.folder or card.name)}, "
        "or pass --data-dir / set MEDFM_DATA to a folder that has it"
    )


def _missing_file_message(card: DatasetCard, entry: FileEntry, base: Path, url: str | None, downloadable: bool) -> str:
    target = base / (card.folder or card.name) / entry.path
    why = "" if downloadable else " (medfm downloads only into its cache, never into --data-dir / MEDFM_DATA)"
    get_it = f"Download it from {url} and place it at {target}" if url else f"Place it at {target}"
    return (
        f"dataset {card.name}: file {entry.path} not found under {base}{why}. {get_it}, "
        "or pass --data-dir / set MEDFM_DATA to a folder that has it"
    )


def locate(card: DatasetCard, data_dir_: str | Path | None = None, download_missing: bool = True) -> Located:
    """Find (and, in the cache location only, download) the card's files; verify checksums.

    Cards without files (folder datasets) are found by ``card.options['probe']``: a list of
    relative paths of which at least one must exist inside the dataset folder. Cards with
    neither are self-contained (``self_contained``): their root is the data location.
    """
    base, downloadable = data_dir(data_dir_)
    if card.files:
        located = Located(root=base)
        for entry in card.files:
            path = find_local(card, entry, base)
            if path is None:
                url = _source_url(entry)
                if not (download_missing and downloadable and url):
                    raise MissingDataError(_missing_file_message(card, entry, base, url, downloadable))
                path = base / (card.folder or card.name) / entry.path
                located.hashes[entry.path] = download(url, path, entry)
            else:
                located.hashes[entry.path] = verify_file(path, entry)
            located.files[entry.path] = path
        located.root = located.files[card.files[0].path].parent
        return located
    if self_contained(card):
        return Located(root=base)
    probes = list(card.options.get("probe", ()))
    for d in candidate_dirs(card, base):
        if d != base and d.is_dir() and (not probes or any((d / p).exists() for p in probes)):
            return Located(root=d)
    what = f"folder {card.folder or card.name}" + (f" (with {' or '.join(probes)})" if probes else "")
    raise MissingDataError(_missing_message(card, base, what))


def self_contained(card: DatasetCard) -> bool:
    """A card with neither files nor ``options['probe']``: its loader reads data bundled with an
    installed package (e.g. the survival tables of scikit-survival), so it is always present."""
    return not card.files and "probe" not in card.options


def present(card: DatasetCard, data_dir_: str | Path | None = None) -> bool:
    """True when the card's files (or folder) are under the data location; downloads nothing."""
    base, _ = data_dir(data_dir_)
    if self_contained(card):
        return True
    if card.files:
        return all(find_local(card, e, base) is not None for e in card.files)
    probes = list(card.options.get("probe", ()))
    return any(
        d != base and d.is_dir() and (not probes or any((d / p).exists() for p in probes))
        for d in candidate_dirs(card, base)
    )
