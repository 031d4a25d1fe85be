"""The torchvision catalogue read without torch (core/models/catalogue_index.py) is what torchvision
lists today, and says which weights are already in the torch hub cache."""

from __future__ import annotations

import sys

import pytest
import torch.hub

from batchlens.core.errors import BatchLensError
from batchlens.core.models import check_model_id, list_models
from batchlens.core.models.catalogue_data import CATALOGUE
from batchlens.core.models.catalogue_index import generate, hub_dir, is_downloaded, list_catalogue
from batchlens.core.models.info import TASKS
from batchlens.core.tasks import ADAPTERS


def test_the_stored_catalogue_is_what_the_installed_torchvision_lists():
    # After a torchvision upgrade this fails until `python scripts/make_catalogue.py` is run again.
    assert CATALOGUE == generate(), "run scripts/make_catalogue.py: torchvision's catalogue changed"


def test_the_task_names_are_the_adapters():
    assert set(TASKS) == set(ADAPTERS)


def test_hub_dir_without_torch_follows_torch_hub(monkeypatch, tmp_path):
    for torch_home, xdg in ((str(tmp_path / "th"), None), (None, str(tmp_path / "xdg")), (None, None)):
        for name, value in (("TORCH_HOME", torch_home), ("XDG_CACHE_HOME", xdg)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        expected = torch.hub.get_dir()
        with monkeypatch.context() as m:
            m.delitem(sys.modules, "torch.hub")  # as in a process that has not imported torch
            assert str(hub_dir()) == expected


def test_the_list_says_which_weights_need_a_download_and_how_big(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    resnet = next(m for m in list_catalogue("classification") if m.id == "resnet50")
    assert resnet.downloaded is False
    assert resnet.download_note() == "needs a 97.8 MiB download"
    file_name = CATALOGUE["resnet50"]["weights"][CATALOGUE["resnet50"]["default"]][0]
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / file_name).write_bytes(b"")
    resnet = next(m for m in list_models("classification") if m.id == "resnet50")
    assert resnet.downloaded is True and resnet.download_note() == ""
    assert is_downloaded("resnet50") and not is_downloaded("resnet50:IMAGENET1K_V1")
    demo = next(m for m in list_models() if m.id == "demo-shapes")
    assert demo.download_note() == ""  # nothing to download for a built-in model


def test_an_unknown_model_or_weights_name_is_one_sentence(tmp_path):
    with pytest.raises(BatchLensError, match="Unknown model 'resnet5'"):
        check_model_id("resnet5")
    with pytest.raises(BatchLensError, match="does not exist"):
        check_model_id(str(tmp_path / "missing.pt"))
    check_model_id("resnet50:IMAGENET1K_V2")  # known: no error
    with pytest.raises(BatchLensError, match="resnet50 has no weights 'V9'; it has IMAGENET1K_V1"):
        is_downloaded("resnet50:V9")
