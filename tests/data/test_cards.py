"""Dataset cards and the registry: every MedMNIST subset and size, built-in folder cards."""

from __future__ import annotations

import re

import pytest

from medfm.data import DATASETS, DatasetCard, get_card, list_cards, register_card
from medfm.errors import ConfigError

MEDMNIST_2D = ("pathmnist", "chestmnist", "dermamnist", "octmnist", "pneumoniamnist", "retinamnist",
               "breastmnist", "bloodmnist", "tissuemnist", "organamnist", "organcmnist", "organsmnist")
MEDMNIST_3D = ("organmnist3d", "nodulemnist3d", "adrenalmnist3d", "fracturemnist3d", "vesselmnist3d",
               "synapsemnist3d")


def test_every_medmnist_subset_and_size_has_a_card() -> None:
    names = set(DATASETS.names())
    for key in MEDMNIST_2D:
        assert {key, f"{key}_64", f"{key}_128", f"{key}_224"} <= names
    for key in MEDMNIST_3D:
        assert {key, f"{key}_64"} <= names
        assert f"{key}_128" not in names  # 3D comes in 28 and 64 only
    for card in list_cards():
        if card.options.get("family") != "medmnist":
            continue
        (entry,) = card.files
        assert entry.path == f"{card.name}.npz"
        assert re.fullmatch(r"[0-9a-f]{32}", entry.md5 or "")
        assert entry.url == f"https://zenodo.org/records/10519652/files/{card.name}.npz?download=1"
        assert card.folder == card.name.split("_")[0]
        assert sum(card.options["n_samples"].values()) > 0
        assert card.ndim == (3 if card.folder.endswith("3d") else 2)
        assert "MedMNIST v2" in card.citation


def test_medmnist_card_details() -> None:
    assert get_card("breastmnist").files[0].md5 == "750601b1f35ba3300ea97c75c52ff8f6"
    assert get_card("adrenalmnist3d_64").files[0].md5 == "17721accfe9fb005146a47d33bc54b2f"
    chest = get_card("chestmnist_224")
    assert chest.task == "multilabel" and len(chest.labels) == 14
    assert get_card("retinamnist").task == "ordinal"
    assert get_card("breastmnist").labels == ("malignant", "normal, benign")
    assert get_card("dermamnist_64").license == "CC BY-NC 4.0"
    assert get_card("pathmnist").license == "CC BY 4.0"
    assert get_card("pathmnist").options["channels"] == 3
    assert get_card("breastmnist").options["n_samples"] == {"train": 546, "val": 78, "test": 156}


def test_builtin_folder_cards() -> None:
    hc = get_card("hc18")
    assert hc.task == "segmentation" and hc.modality == "US" and hc.folder == "hc18_fetal_head"
    hip = get_card("msd_hippocampus")
    assert hip.labels == ("background", "anterior", "posterior") and hip.ndim == 3
    assert hip.license == "CC BY-SA 4.0"
    assert get_card("chase_db1").labels == ("background", "vessel")
    assert get_card("vqa_rad").task == "vqa"


def test_unknown_name_suggests_nearest() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'breastmnist'"):
        get_card("breastmnst")
    with pytest.raises(ConfigError, match="Did you mean 'msd_hippocampus'"):
        get_card("msd_hipocampus")


def test_register_card_refuses_duplicates() -> None:
    with pytest.raises(ConfigError, match="already registered"):
        register_card(DatasetCard(name="breastmnist", task="classification", modality="US"))
