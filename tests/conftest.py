"""Shared fixtures. Qt runs headless in every test run (no display needed)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
import torch

from tests.helpers import make_denoise_folder, make_shapes_folder

torch.set_num_threads(min(2, torch.get_num_threads()))


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
