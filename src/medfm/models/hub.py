"""Where weights live and how they get there, without ever hanging on a missing network.

Lookup order for a card with a ``source``: medfm's model cache
(``<MEDFM_HOME>/models/<family>--<name>``, filled by ``pull`` or ``import_folder``), then the
Hugging Face cache (``snapshot_download(local_files_only=True)``, no network). Only when both
miss, the hub is not switched off (``HF_HUB_OFFLINE``) and the endpoint answers a TCP connect
within 2 s is anything downloaded; otherwise a ``MissingWeightsError`` says what to do.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from medfm._paths import home
from medfm.errors import InputError, MissingWeightsError
from medfm.models.card import ModelCard

MARKER = ".medfm_model.json"
CARD_FILE = "model_card.json"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def models_root() -> Path:
    return home() / "models"


def model_dir(model_id: str) -> Path:
    """medfm's cache folder for ``model_id`` (``family/name`` -> ``family--name``)."""
    return models_root() / model_id.replace("/", "--")


def repo_id(card: ModelCard) -> str | None:
    """The Hugging Face repo of a card (``hf-hub:`` prefix stripped), or None."""
    return _source_repo(card.source)


def _source_repo(source: str | None) -> str | None:
    """A card ``source`` as a hub repo id (``hf-hub:`` prefix stripped); None when empty."""
    if not source:
        return None
    return source.split(":", 1)[1] if source.startswith("hf-hub:") else source


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set to a true value."""
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _has_weights(folder: Path) -> bool:
    return any(p.name.endswith(_WEIGHT_SUFFIXES) for p in folder.iterdir() if p.is_file())


def _marker(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cached_folder(card: ModelCard) -> Path | None:
    """medfm's cache folder of ``card`` when it was pulled or imported and holds weights.

    A card pinning a ``revision`` only accepts a pulled folder of that revision (its commit or
    the revision name it was pulled at); imported folders carry no commit and are accepted."""
    d = model_dir(card.id)
    if not ((d / MARKER).is_file() and _has_weights(d)):
        return None
    info = _marker(d)
    if card.revision and info.get("how") == "pull" and card.revision not in (info.get("commit"), info.get("revision")):
        return None
    return d


def folder_commit(folder: Path | None) -> str | None:
    """The hub commit a local weights folder holds, when known: the commit ``pull`` recorded,
    the ``revision`` of a saved medfm card, or the snapshot name of a Hugging Face cache folder."""
    if folder is None or not folder.is_dir():
        return None
    commit = _marker(folder).get("commit")
    if commit:
        return str(commit)
    if (folder / CARD_FILE).is_file():
        try:
            rev = json.loads((folder / CARD_FILE).read_text()).get("revision")
        except (OSError, ValueError):
            rev = None
        if rev:
            return str(rev)
    name = folder.name
    if folder.parent.name == "snapshots" and len(name) == 40 and all(c in "0123456789abcdef" for c in name):
        return name
    return None


def hf_cache_folder(card: ModelCard) -> Path | None:
    """The Hugging Face cache snapshot of the card's repo when one with weights exists (no network)."""
    rid = repo_id(card)
    if rid is None:
        return None
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(rid, revision=card.revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure here means "not cached"
        return None
    return path if path.is_dir() and _has_weights(path) else None


def locate(card: ModelCard) -> Path | None:
    """A local folder with the card's weights, or None (never touches the network)."""
    return cached_folder(card) or hf_cache_folder(card)


def _token() -> str | None:
    tok = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if tok:
        return tok
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # noqa: BLE001
        return None


def missing_weights_error(card: ModelCard, why: str) -> MissingWeightsError:
    """The error users see when weights are absent: what is missing and the three ways out."""
    rid = repo_id(card)
    gated = (
        f" It is gated ({card.license}): accept its terms at https://huggingface.co/{rid} and set HF_TOKEN "
        "before pulling." if card.gated else ""
    )
    return MissingWeightsError(
        f"weights for '{card.id}' ({card.source}) are not on this machine ({why}). "
        f"On a connected machine run `medfm models pull {card.id}`; on an air-gapped machine copy the "
        f"downloaded folder here and run `medfm models import {card.id} PATH`.{gated}"
    )


def endpoint_reachable(timeout: float = 2.0) -> bool:
    """True when the hub endpoint accepts a TCP connection within ``timeout`` s (or a proxy is set)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    import threading

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    ok: list[bool] = []

    def probe() -> None:  # in a thread: a slow DNS lookup is not covered by the socket timeout
        try:
            with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok)


def _write_marker(folder: Path, card: ModelCard, how: str, origin: str, extra: dict[str, Any] | None = None) -> None:
    from medfm._paths import atomic_write_text

    info = {"id": card.id, "source": card.source, "revision": card.revision, "how": how, "origin": origin,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **(extra or {})}
    atomic_write_text(folder / MARKER, json.dumps(info, indent=2))


def resolve_revision(repo: str, revision: str | None, token: str | None) -> str:
    """The commit sha that ``revision`` (a branch, tag or sha; None = default branch) names now."""
    from huggingface_hub import HfApi

    return str(HfApi().model_info(repo, revision=revision, token=token).sha)


def pull(card: ModelCard, token: str | None = None, revision: str | None = None) -> Path:
    """Download the card's repo (and its ``extra_repos``) into medfm's cache; returns the folder.

    ``revision`` (else ``card.revision``, else the default branch) is resolved to a commit
    first and exactly that commit is downloaded; the commit is written to the folder's marker
    and to its ``model_card.json`` (``revision``), so results made with it can name it. When
    another card's pulled folder already holds that commit of the same repo, its files are
    hard-linked (or copied) instead of downloaded again. Fails fast (MissingWeightsError) when
    the hub is switched off or unreachable, and with a clear message when a gated repo refuses access.
    """
    rid = repo_id(card)
    if rid is None:
        raise InputError(f"model '{card.id}' has no hub source (random init or local only); nothing to pull")
    if hub_offline():
        raise missing_weights_error(card, "HF_HUB_OFFLINE is set, so nothing can be downloaded")
    if not endpoint_reachable():
        raise missing_weights_error(card, "the hub is not reachable from this machine")
    token = token or _token()
    wanted = revision or card.revision
    target = model_dir(card.id)
    part = target.with_name(target.name + ".partial")
    if part.exists():
        shutil.rmtree(part)  # what an interrupted pull left
    commit = _hub_call(card, rid, wanted, lambda: resolve_revision(rid, wanted, token))
    sibling = pulled_folder_of(rid, commit, exclude=target)
    extra = {"revision": wanted, "commit": commit}
    if sibling is not None:  # another card reads the same repo at this commit: no second download
        _link_tree(sibling, part)
        extra["copied_from"] = str(sibling)
    else:
        from huggingface_hub import snapshot_download

        _hub_call(card, rid, wanted, lambda: snapshot_download(rid, revision=commit, local_dir=str(part), token=token))
    extra["extra_repo_commits"] = _hub_call(card, rid, wanted, lambda: _download_extras(card, token))
    _write_marker(part, card, "pull", f"https://huggingface.co/{rid}", extra)
    _write_local_card(part, card, commit)
    if target.exists():
        shutil.rmtree(target)  # our own cache entry, replaced by the fresh download
    os.replace(part, target)
    return target


def pulled_folder_of(rid: str, commit: str, exclude: Path | None = None) -> Path | None:
    """A folder in medfm's cache that ``pull`` filled from hub repo ``rid`` at ``commit`` (any
    card's; cards that read one checkpoint differently share one download), or None."""
    root = models_root()
    if not root.is_dir():
        return None
    for d in sorted(root.iterdir()):
        if d == exclude or d.name.endswith(".partial") or not d.is_dir():
            continue
        info = _marker(d)
        same_repo = _source_repo(info.get("source")) == rid
        if info.get("how") == "pull" and info.get("commit") == commit and same_repo and _has_weights(d):
            return d
    return None


def _link_tree(src: Path, dst: Path) -> None:
    """Copy ``src``'s files (not medfm's marker and card) to ``dst``, hard-linked where the disk allows."""

    def link_or_copy(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link_or_copy, ignore=shutil.ignore_patterns(MARKER, CARD_FILE))


def _hub_call(card: ModelCard, rid: str, revision: str | None, fn: Any) -> Any:
    """``fn()`` with the hub's errors turned into MissingWeightsError messages that say what to do."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        return fn()
    except GatedRepoError as exc:
        raise MissingWeightsError(
            f"'{card.id}' is gated ({card.license}): accept its terms at https://huggingface.co/{rid} with your "
            "account and set HF_TOKEN (or `hf auth login`), then pull again"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise MissingWeightsError(f"'{card.id}': hub repo {rid} not found or not accessible ({exc})") from exc
    except HfHubHTTPError as exc:
        raise MissingWeightsError(f"'{card.id}': download from {rid} (revision {revision or 'default'}) failed ({exc})") from exc


def _download_extras(card: ModelCard, token: str | None) -> dict[str, str]:
    """The card's ``extra_repos`` into the Hugging Face cache (read at load time, e.g. a
    tokenizer); returns {extra repo: commit}."""
    from huggingface_hub import snapshot_download

    return {extra: Path(snapshot_download(extra, token=token)).name for extra in card.extra_repos}


def _write_local_card(folder: Path, card: ModelCard, commit: str) -> None:
    """The card as pulled, pinned to the downloaded commit (what ``medfm models show`` reports)."""
    from dataclasses import replace

    from medfm._paths import atomic_write_text
    from medfm.models.card import card_to_dict

    atomic_write_text(folder / CARD_FILE, json.dumps(card_to_dict(replace(card, revision=commit)), indent=2))


def _validate_backend_folder(card: ModelCard, folder: Path) -> None:
    """The folder holds the file its backend reads (``Backend.FOLDER_FILE``) and a weight file."""
    from medfm.models.zoo import backend_module

    files = {p.name for p in folder.iterdir()}
    need = backend_module(card.backend).FOLDER_FILE
    if need and need not in files:
        raise InputError(f"{folder}: no {need}; a {card.backend} model folder for '{card.id}' needs one")
    if not _has_weights(folder):
        raise InputError(f"{folder}: no weight file ({', '.join(_WEIGHT_SUFFIXES)}) for '{card.id}'")


def import_folder(card: ModelCard, path: Path, link: bool = False) -> Path:
    """Register a folder copied in by hand (air-gapped sites): copy (or symlink) it into the cache.

    The source folder is only read, never changed. The cache entry is built beside its final
    name and renamed into place, so an interrupted import leaves no half entry.
    """
    src = Path(path).expanduser().resolve()
    if not src.is_dir():
        raise InputError(f"{src}: not a folder")
    _validate_backend_folder(card, src)
    target = model_dir(card.id)
    if target.exists() and (src == target.resolve() or target.resolve() in src.parents):
        raise InputError(f"{src}: this is medfm's own cache entry for '{card.id}'; it is already imported")
    part = target.with_name(target.name + ".partial")
    if part.exists():
        shutil.rmtree(part)
    part.mkdir(parents=True)
    for item in sorted(src.iterdir()):
        if item.name in (MARKER,):
            continue
        dst = part / item.name
        if link:
            dst.symlink_to(item)
        elif item.is_dir():
            shutil.copytree(item, dst, symlinks=False)
        else:
            shutil.copy2(item, dst)
    if (src / CARD_FILE).is_file():  # a medfm folder: keep its card but under the imported id
        from medfm.models.card import card_from_dict, card_to_dict

        data = json.loads((src / CARD_FILE).read_text())
        data["id"] = card.id
        if link:
            (part / CARD_FILE).unlink()
        (part / CARD_FILE).write_text(json.dumps(card_to_dict(card_from_dict(data, str(src / CARD_FILE))), indent=2))
    _write_marker(part, card, "import-link" if link else "import", str(src))
    if target.exists():
        if target.is_symlink() or target.is_file():
            target.unlink()
        else:
            shutil.rmtree(target)
    os.replace(part, target)
    return target


def imported_cards() -> list[ModelCard]:
    """Cards of medfm folders imported under ids the registry does not know."""
    from medfm.models.card import card_from_dict

    root = models_root()
    out = []
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        f = d / CARD_FILE
        if (d / MARKER).is_file() and f.is_file():
            try:
                out.append(card_from_dict(json.loads(f.read_text()), where=str(f)))
            except Exception:  # noqa: BLE001 - a broken foreign entry must not break listing
                continue
    return out
