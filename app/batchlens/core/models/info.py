"""What the model list needs before any model loads, without importing torch: `ModelInfo`, the task
names, and the prefixes that say where a model id comes from. The window and `batchlens models` read
only this (and catalogue_index.py), so they answer before PyTorch is loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from batchlens.core.machine.memory import format_bytes

#: the tasks BatchLens has an adapter for (core/tasks ADAPTERS; a test keeps the two the same)
TASKS = ("classification", "image_to_image", "detection", "segmentation")
HF_PREFIX = "hf:"
TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class ModelInfo:
    """One entry of `batchlens models` and of the window's model picker."""

    id: str
    task: str
    source: str  # "built-in", "torchvision", "file"
    description: str = ""
    size_bytes: int | None = None
    downloaded: bool | None = None  # catalogue weights already in the torch hub cache (None: not applicable)

    def download_note(self) -> str:
        """ "needs a 97.8 MiB download" for catalogue weights not in the torch hub cache yet; "" when
        nothing is downloaded before a run."""
        if self.downloaded is not False:
            return ""
        if not self.size_bytes:
            return "needs a download"
        return f"needs a {format_bytes(self.size_bytes)} download"


def is_timm_model(model: str) -> bool:
    return model.startswith(TIMM_PREFIX)


def is_hf_model(model: str) -> bool:
    """`hf:ORG/NAME`, or a folder holding a config.json."""
    return model.startswith(HF_PREFIX) or (Path(model).expanduser() / "config.json").is_file()
