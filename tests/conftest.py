"""Shared fixtures. Qt runs headless in every test run (no display needed)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
import torch

from tests.helpers import make_denoise_folder, make_shapes_folder

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _own_tuning_cache(tmp_path_factory, monkeypatch):
    """Runs remember their batch size in the user's cache folder (core/run/tuning_cache.py): each test
    gets an empty one of its own, so no test reads another's choice or writes into ~/.cache."""
    monkeypatch.setenv("BATCHLENS_CACHE_DIR", str(tmp_path_factory.mktemp("batchlens-cache")))


@pytest.fixture(autouse=True)
def _own_data_folder(tmp_path_factory, monkeypatch):
    """The app's data folder (stored sidecars, crash reports: core/data_dir.py) is a fresh one per
    test, never the developer's own."""
    monkeypatch.setenv("BATCHLENS_DATA_DIR", str(tmp_path_factory.mktemp("batchlens-data")))


@pytest.fixture(autouse=True)
def _empty_hugging_face_cache(tmp_path_factory, monkeypatch):
    """The model list shows the Hugging Face models cached on this computer: each test sees an empty
    cache of its own (tests that need one fill it), so a developer's own models change no test."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-hub-cache")))


@pytest.fixture
def shapes_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "shapes"
    make_shapes_folder(folder, 12)
    return folder


@pytest.fixture
def denoise_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "noisy"
    make_denoise_folder(folder, 6, size=120)
    return folder


@pytest.fixture
def fake_hub(monkeypatch, tmp_path: Path):
    """A Hugging Face hub on 127.0.0.1 (tests/fake_hub.py) and an empty cache at tmp_path/hf-cache."""
    from tests.fake_hub import FakeHub

    hub = FakeHub()
    hub.use(monkeypatch, tmp_path / "hf-cache")
    yield hub
    hub.close()
