"""A folder on local disk or behind an fsspec URL (``s3://``, ``gs://``, ``file://``, ``memory://``),
for the cell cache and the results store that every worker of a cluster must reach.

Writes are whole objects and atomic enough for a cache: on a local or mounted filesystem the
bytes go to a temporary file renamed over the target; on an object store one PUT is atomic
(a reader sees the old object or the new one, never half of one). Credentials and endpoints
come from ``storage_options`` or the usual places (``AWS_*``, ``FSSPEC_S3_ENDPOINT_URL``, an
instance role), which is what each node of a cluster reads too.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from medfm import _paths
from medfm.errors import ConfigError, OutputError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
# protocols whose filesystems rename atomically (a temporary file, then a rename)
_RENAMING = {"file", "local"}


_COLLAPSED = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/(?!/)")


def is_url(location: str | Path | None) -> bool:
    """True for ``scheme://...`` strings (a ``Path`` never is: see :func:`as_location`)."""
    return isinstance(location, str) and bool(_URL.match(location))


def as_location(root: str | Path) -> str | Path:
    """``root``, with a URL that went through ``Path`` (``s3:/bucket/x``, as a path-typed command
    line option gives it) turned back into ``s3://bucket/x`` when fsspec knows the scheme."""
    if isinstance(root, Path):
        m = _COLLAPSED.match(str(root))
        if m:
            try:
                from fsspec.registry import known_implementations
            except ImportError:  # pragma: no cover
                return root
            scheme, rest = m.group(1).lower(), str(root)[m.end():]
            if scheme in _RENAMING:
                return f"file:///{rest}"  # Path turned file:///abs/path into file:/abs/path
            if scheme in known_implementations:
                return f"{m.group(1)}://{rest}"
    return root


class Folder:
    """Relative names under a root that is a local path or an fsspec URL; see the module docstring."""

    def __init__(self, root: str | Path, storage_options: dict[str, Any] | None = None) -> None:
        root = as_location(root)
        self.url = str(root).rstrip("/") if is_url(root) else None
        self.local = None if self.url else Path(root).expanduser()
        self.storage_options = dict(storage_options or {})
        self._fs: Any = None
        self._root = ""

    def __getstate__(self) -> dict[str, Any]:  # travels to Ray workers without a live client
        return {**self.__dict__, "_fs": None}

    def __str__(self) -> str:
        return self.url or str(self.local)

    @property
    def fs(self) -> Any:
        """The fsspec filesystem of a URL root (created on first use, in each process)."""
        if self._fs is None:
            try:
                import fsspec
            except ImportError as exc:  # pragma: no cover - fsspec comes with huggingface_hub
                raise ConfigError(f"{self.url}: URLs need fsspec; pip install 'medfm[scale]'") from exc
            try:
                self._fs, self._root = fsspec.core.url_to_fs(self.url, **self.storage_options)
            except ImportError as exc:
                raise ConfigError(f"{self.url}: no filesystem for this URL ({exc}); pip install 'medfm[scale]' "
                                  "(s3fs), or gcsfs for gs://") from exc
            except ValueError as exc:
                raise ConfigError(f"{self.url}: {exc}") from exc
            self._root = self._root.rstrip("/")
        return self._fs

    def where(self, rel: str) -> str | Path:
        """The full location of ``rel`` (for messages)."""
        return f"{self.url}/{rel}" if self.url else self.local / rel  # type: ignore[operator]

    def _full(self, rel: str) -> str:
        self.fs  # noqa: B018 - sets _root
        return f"{self._root}/{rel}" if self._root else rel

    def ensure(self) -> None:
        """Create the root folder where that means anything (local disk, file://)."""
        if self.local is not None:
            self.local.mkdir(parents=True, exist_ok=True)
        elif set(_protocols(self.fs)) & _RENAMING:
            self.fs.makedirs(self._root, exist_ok=True)

    def read(self, rel: str) -> bytes | None:
        """The bytes of ``rel``, or None when it does not exist (other errors propagate)."""
        if self.local is not None:
            p = self.local / rel
            return p.read_bytes() if p.is_file() else None
        try:
            return self.fs.cat_file(self._full(rel))
        except FileNotFoundError:
            return None

    def write(self, rel: str, data: bytes) -> None:
        """Write ``rel`` whole and atomically (see the module docstring)."""
        if self.local is not None:
            with _paths.atomic_path(self.local / rel) as tmp:
                Path(tmp).write_bytes(data)
            return
        try:
            self._write_url(rel, data)
        except OSError as exc:  # no bucket, no permission, endpoint down: one line naming the place
            raise OutputError(f"{self.where(rel)}: cannot write ({type(exc).__name__}: {exc})") from exc

    def _write_url(self, rel: str, data: bytes) -> None:
        fs, target = self.fs, self._full(rel)
        if set(_protocols(fs)) & _RENAMING:
            fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            tmp = f"{target}.tmp-{uuid.uuid4().hex[:12]}"
            fs.pipe_file(tmp, data)
            try:
                fs.mv(tmp, target)
            finally:
                if fs.exists(tmp):
                    fs.rm_file(tmp)
        else:
            fs.pipe_file(target, data)  # one PUT (multipart above the part size: still all or nothing)

    def delete(self, rel: str) -> None:
        if self.local is not None:
            (self.local / rel).unlink(missing_ok=True)
            return
        try:
            self.fs.rm_file(self._full(rel))
        except FileNotFoundError:
            pass

    def list(self, prefix: str = "") -> list[str]:
        """Relative names of the files under ``prefix`` (recursively), sorted."""
        if self.local is not None:
            base = self.local / prefix
            if not base.is_dir():
                return []
            return sorted(str(p.relative_to(self.local)) for p in base.rglob("*") if p.is_file() and not p.name.endswith(".part"))
        fs, base = self.fs, self._full(prefix).rstrip("/")
        fs.invalidate_cache(base)  # another process may have written since the last listing
        try:
            found = fs.find(base)
        except FileNotFoundError:
            return []
        head = f"{self._root}/" if self._root else ""
        return sorted(p[len(head):] for p in found if p.startswith(head) and ".tmp-" not in p.rsplit("/", 1)[-1])

    def read_many(self, rels: list[str]) -> dict[str, bytes | None]:
        """``read`` for many names (concurrent requests on object stores)."""
        if self.local is not None or not rels:
            return {r: self.read(r) for r in rels}
        full = {self._full(r): r for r in rels}
        got = self.fs.cat(list(full), on_error="return")
        return {rel: (got.get(f) if isinstance(got.get(f), bytes) else None) for f, rel in full.items()}


def _protocols(fs: Any) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)
