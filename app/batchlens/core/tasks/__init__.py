"""Task adapters, one module per task, looked up by the task name a model declares.

What each task is (`kinds.py`) needs no torch and is imported at once; the adapters (torch,
torchvision) are imported when `ADAPTERS`, `make_adapter` or one of the base classes is first asked
for, so that the window can ask about a task before PyTorch loads (tests/ui/test_startup_imports.py).
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING

from batchlens.core.errors import BatchLensError
from batchlens.core.tasks.kinds import KINDS, TaskKind, kind_of

if TYPE_CHECKING:
    from batchlens.core.tasks.base import ImageMeta, TaskAdapter, TaskResult

_FROM_BASE = ("ImageMeta", "TaskAdapter", "TaskResult")


@functools.cache
def _adapters() -> dict[str, type[TaskAdapter]]:
    from batchlens.core.tasks.classification import ClassificationAdapter
    from batchlens.core.tasks.detection import DetectionAdapter
    from batchlens.core.tasks.image_to_image import ImageToImageAdapter
    from batchlens.core.tasks.segmentation import SegmentationAdapter

    return {
        ClassificationAdapter.task: ClassificationAdapter,
        ImageToImageAdapter.task: ImageToImageAdapter,
        DetectionAdapter.task: DetectionAdapter,
        SegmentationAdapter.task: SegmentationAdapter,
    }


def __getattr__(name: str):
    if name == "ADAPTERS":
        return _adapters()
    if name in _FROM_BASE:
        return getattr(importlib.import_module("batchlens.core.tasks.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_adapter(task: str, **kwargs) -> TaskAdapter:
    adapters = _adapters()
    try:
        cls = adapters[task]
    except KeyError:
        raise BatchLensError(
            f"Unknown task {task!r}: BatchLens knows {', '.join(sorted(adapters))}."
        ) from None
    return cls(**kwargs)


__all__ = [
    "ADAPTERS",
    "KINDS",
    "ImageMeta",
    "TaskAdapter",
    "TaskKind",
    "TaskResult",
    "kind_of",
    "make_adapter",
]
