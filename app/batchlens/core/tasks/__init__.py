"""Task adapters, one module per task, looked up by the task name a model declares."""

from __future__ import annotations

from batchlens.core.errors import BatchLensError
from batchlens.core.tasks.base import ImageMeta, TaskAdapter, TaskResult
from batchlens.core.tasks.classification import ClassificationAdapter
from batchlens.core.tasks.detection import DetectionAdapter
from batchlens.core.tasks.image_to_image import ImageToImageAdapter
from batchlens.core.tasks.segmentation import SegmentationAdapter

ADAPTERS: dict[str, type[TaskAdapter]] = {
    ClassificationAdapter.task: ClassificationAdapter,
    ImageToImageAdapter.task: ImageToImageAdapter,
    DetectionAdapter.task: DetectionAdapter,
    SegmentationAdapter.task: SegmentationAdapter,
}


def make_adapter(task: str, **kwargs) -> TaskAdapter:
    try:
        cls = ADAPTERS[task]
    except KeyError:
        raise BatchLensError(
            f"Unknown task {task!r}: BatchLens knows {', '.join(sorted(ADAPTERS))}."
        ) from None
    return cls(**kwargs)


__all__ = ["ADAPTERS", "ImageMeta", "TaskAdapter", "TaskResult", "make_adapter"]
