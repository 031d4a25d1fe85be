"""Segmentation (DeepLabV3, FCN, LRASPP...): a class-index mask PNG per image at the original size,
mirroring the input tree, the fraction of pixels per class, and a colour overlay preview."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from batchlens.core.files import OutputFolder
from batchlens.core.tasks.base import (
    PREVIEW_SIZE,
    ImageMeta,
    TaskAdapter,
    TaskResult,
    check_entries,
    label_image,
    thumbnail,
)
from batchlens.core.tasks.kinds import KINDS
from batchlens.core.tasks.palette import palette_array, tint

CLASSES_FILE = "mask_classes.json"
OVERLAY_ALPHA = 0.5


def class_mask(output) -> torch.Tensor:
    """Per-pixel class indices (H x W) from one image's output: torchvision's {"out": C x H x W logits},
    plain C x H x W logits (one channel: a binary mask from logits), or H x W indices."""
    logits = output["out"] if isinstance(output, Mapping) else output
    if logits.dim() == 2:
        return logits.long()
    if logits.shape[0] == 1:
        return (logits[0] > 0).long()
    return logits.argmax(0)


class SegmentationAdapter(TaskAdapter):
    task = "segmentation"
    kind = KINDS[task]
    picture_field = "mask"
    end_files = (CLASSES_FILE,)

    def postprocess(self, output, meta: ImageMeta) -> TaskResult:
        width, height = meta.original_size
        image = label_image(class_mask(output), (width, height))
        counts = np.bincount(np.asarray(image).reshape(-1))
        total = counts.sum()
        classes = [
            {"label": self.label(i), "index": i, "fraction": round(float(counts[i] / total), 5)}
            for i in np.argsort(-counts, kind="stable").tolist()
            if counts[i]
        ]
        return TaskResult({"size": [width, height], "classes": classes}, image=image)

    def check_fields(self, record: dict) -> str | None:
        return check_entries(record, "classes", {"label": str, "index": int, "fraction": float})

    def write(self, result: TaskResult, meta: ImageMeta, output_dir: Path) -> None:
        self.write_image(result, meta, output_dir, "mask")

    def preview(self, image: Image.Image, result: TaskResult, size: int = PREVIEW_SIZE) -> Image.Image | None:
        """The image with each class but 0 (background) tinted in its colour."""
        thumb = thumbnail(image, size)
        mask = np.asarray(result.image.resize(thumb.size, Image.Resampling.NEAREST)).astype(np.int64)
        return tint(thumb, palette_array()[mask % 256], mask > 0, OVERLAY_ALPHA)

    def finish(self, output_dir: Path | OutputFolder, records: list[dict]) -> list[Path]:
        """mask_classes.json: what each mask value means, and the colour the previews use for it."""
        seen = {c["index"] for r in records if r.get("status") == "ok" for c in r.get("classes", [])}
        count = max(len(self.labels or []), max(seen, default=-1) + 1)
        palette = palette_array()
        classes = [
            {"index": i, "label": self.label(i), "colour": [int(v) for v in palette[i % 256]]}
            for i in range(count)
        ]
        text = json.dumps({"classes": classes}, indent=1, ensure_ascii=False) + "\n"
        return [OutputFolder.at(output_dir).write_text(CLASSES_FILE, text)]
