"""Test-wide settings: offline hub, isolated cache, real-data fixtures, gpu skipping."""

from __future__ import annotations

import os
from pathlib import Path

# Before any hub library is imported: never touch the network, fail fast instead.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Caches (models, embeddings, downloads) go to a temp MEDFM_HOME, never ~/.cache."""
    os.environ["MEDFM_HOME"] = str(tmp_path_factory.mktemp("medfm_home"))
    os.environ["HF_HOME"] = str(tmp_path_factory.mktemp("hf_home"))


def _shared_data() -> Path | None:
    env = os.environ.get("MEDFM_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if cand.is_dir():
            return cand.resolve()
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (``MEDFM_DATA`` or ``../shared/data``); skips when absent."""
    p = _shared_data()
    if p is None:
        pytest.skip("real data folder not present (set MEDFM_DATA or provide ../shared/data)")
    return p


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    skip_net = pytest.mark.skip(reason="needs the internet; never run here")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "network" in item.keywords:
            item.add_marker(skip_net)


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory):
    """A real Orthanc PACS (Debian package) on loopback ports for the whole session (``tests/orthanc.py``).

    Attributes: ``url``, ``dicomweb_url``, ``host``, ``dicom_port``, ``aet``; methods ``upload``, ``clear``,
    ``rest``, ``add_modality(name, aet, port)``. Skips when the Orthanc binary or DICOMweb plugin is absent.
    """
    from tests.orthanc import orthanc_fixture

    yield from orthanc_fixture(tmp_path_factory)
