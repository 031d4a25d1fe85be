"""The shared interface every task adapter implements.

An adapter owns everything task-specific: preprocessing (PIL image -> CPU tensor), turning the model's
per-image CPU output into plain data, writing output files, making a small preview, and any file
written at the end of a run. The runner and the UI never branch on the task.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from batchlens.core.files import OutputFolder, output_name_shortened, output_rel
from batchlens.core.tasks.kinds import UNKNOWN, TaskKind

PREVIEW_SIZE = 320  # longest side of preview images, in pixels


@dataclass(frozen=True)
class ImageMeta:
    """What the adapter needs to know about the image behind one output."""

    rel: str
    original_size: tuple[int, int]  # (width, height) of the decoded image
    input_size: tuple[int, int]  # (width, height) of the tensor given to the model


@dataclass
class TaskResult:
    """One image's result: JSON-ready fields, and an optional image to write (output, mask)."""

    fields: dict
    image: Image.Image | None = None


@dataclass
class TaskAdapter:
    """Base adapter. `transform` turns a decoded PIL image into a CPU tensor for the model."""

    transform: Callable[[Image.Image], torch.Tensor]
    labels: list[str] | None = None
    color_mode: str = "RGB"  # what the decoder converts images to: "RGB" or "L"
    options: dict = field(default_factory=dict)

    task = "base"
    #: what the task is, for the window: its name in words, one label or many classes (kinds.py)
    kind: ClassVar[TaskKind] = UNKNOWN
    #: the files `finish` writes at the top of the output folder (run.json lists them, so that
    #: --overwrite may delete them, and only them)
    end_files: ClassVar[tuple[str, ...]] = ()
    #: the output is an image of the input's shape (up to scale), so out-of-memory recovery may run
    #: the model on overlapping tiles and stitch them (core/run/recovery.py)
    tileable = False
    #: the model works on the image at its full resolution (no resize to a set size), so one more pixel
    #: of input costs memory at its first layer too (the outsized-image warning, core/run/recovery.py)
    full_resolution = False
    #: its results refer to no pixel position (scores for the whole image), so the image may be
    #: resized on the uint8 tensor (--fast-decode, core/inputs/fast_preprocess.py) and decoded and
    #: preprocessed on the device (--gpu-decode, core/inputs/gpu_decode.py)
    position_free = False
    #: the field naming the output file a preview draws on (a mask, an output image), and whether
    #: every ok line has one (the results browser, core/outputs/result_pictures.py)
    picture_field: ClassVar[str | None] = None
    picture_required = True

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    def decode_size(self, size: tuple[int, int]) -> tuple[int, int] | None:
        """The fewest pixels (width, height) preprocessing needs from an image of `size`, for tasks
        whose results never refer to the full-size pixels; None: decode the image in full."""
        return None

    def postprocess(self, output, meta: ImageMeta) -> TaskResult:
        """`output` is this image's share of the model output, already on the CPU, no autograd."""
        raise NotImplementedError

    #: A task whose model gives one tensor per batch (the batch first) may read the whole batch at
    #: once: `postprocess_batch(output, metas) -> list[TaskResult]`, the same results as
    #: `postprocess` image by image. None: image by image.
    postprocess_batch = None

    def result_options(self) -> dict:
        """The task options that change its results (in run.json; a resume must use the same)."""
        return {}

    def check_fields(self, record: dict) -> str | None:
        """Why an ok line read back for --resume does not hold this task's fields, or None. A line
        that fails is set aside and its image runs again (core/outputs/results.py, read_predictions)."""
        return None

    def write(self, result: TaskResult, meta: ImageMeta, output_dir: Path | OutputFolder) -> None:
        """Write this image's output files (atomically, through the run's OutputFolder: `output_dir`
        is that or a path) and record their paths in result.fields."""

    def write_image(
        self, result: TaskResult, meta: ImageMeta, output_dir: Path | OutputFolder, field_name: str
    ) -> None:
        """Save result.image as a PNG mirroring the input tree (atomically); record its path."""
        rel = output_rel(meta.rel)
        OutputFolder.at(output_dir).write_atomic(rel, lambda f: result.image.save(f, format="PNG"))
        result.fields[field_name] = rel
        if output_name_shortened(meta.rel):
            result.fields["output_note"] = (
                "output name shortened: the full name is longer than file systems allow (docs/outputs.md)"
            )

    def preview(self, image: Image.Image, result: TaskResult, size: int = PREVIEW_SIZE) -> Image.Image | None:
        """A picture of the result, `size` pixels at most on its longest side, for the window (None: the
        fields say it all). `image` may be a reduced copy of the input (the results browser's)."""
        return None

    def finish(self, output_dir: Path | OutputFolder, records: list[dict]) -> list[Path]:
        """Files made from the whole run (CSV, COCO json...; named in `end_files`), written through
        the run's OutputFolder. Returns the paths written."""
        return []

    def label(self, index: int) -> str:
        if self.labels and 0 <= index < len(self.labels):
            return self.labels[index]
        return str(index)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_entries(record: dict, key: str, fields: dict[str, type | tuple]) -> str | None:
    """Why `record[key]` is not a list of objects with `fields` of those types, or None (the check
    of a task's list field, e.g. classification's `top`, in a line read back for --resume)."""
    entries = record.get(key)
    if not isinstance(entries, list):
        return f"{key!r} is not a list"
    for entry in entries:
        if not isinstance(entry, dict):
            return f"an entry of {key!r} is not an object"
        for name, kind in fields.items():
            value = entry.get(name)
            if kind is float:
                ok = is_number(value)
            else:
                ok = isinstance(value, kind) and not isinstance(value, bool)
            if not ok:
                return f"an entry of {key!r} has no proper {name!r}"
    return None


def resize_target(transform, size: tuple[int, int]) -> tuple[int, int] | None:
    """(width, height) that `transform`'s leading resize makes of an image of `size`, when it shrinks
    it; None when the transform does not start with a resize we recognise, or does not shrink."""
    resize = getattr(transform, "resize_size", None)  # torchvision's ImageClassification preset
    if resize is None and isinstance(transform, v2.Compose) and transform.transforms:
        first = transform.transforms[0]
        if isinstance(first, v2.Resize) and first.max_size is None:
            resize = first.size
    if not resize:
        return None
    width, height = size
    if len(resize) == 1:  # the short side becomes resize[0], the aspect ratio is kept
        scale = resize[0] / min(width, height)
        target = (math.ceil(width * scale), math.ceil(height * scale))
    else:
        target = (resize[1], resize[0])
    return target if target[0] < width and target[1] < height else None


def label_image(labels: torch.Tensor, size: tuple[int, int]) -> Image.Image:
    """An integer map (H x W: class indices, instance numbers) as an 8-bit image (16-bit past 255) at
    `size`, the original image's; nearest-neighbour resizing, so every pixel keeps a real label."""
    array = labels.numpy().astype(np.uint8 if int(labels.max()) < 256 else np.uint16)
    image = Image.fromarray(array)
    if image.size != tuple(size):  # the model saw a resized image: back to the original pixels
        image = image.resize(tuple(size), Image.Resampling.NEAREST)
    return image


def thumbnail(image: Image.Image, size: int = PREVIEW_SIZE) -> Image.Image:
    """A small RGB copy for previews (never the full-size image)."""
    thumb = image.convert("RGB")
    thumb.thumbnail((size, size))
    return thumb
