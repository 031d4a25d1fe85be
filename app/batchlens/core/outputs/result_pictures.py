"""The pictures of one finished result, made again from an output folder: the same previews a run shows
(the task adapters draw them: boxes, mask overlays, output images), for the results browser.

Qt-free. When the input folder is not on this computer, the result is drawn on a plain canvas of the
image's recorded shape (boxes, masks) or comes from the output file alone (image-to-image).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from batchlens.core.image_guard import open_image
from batchlens.core.inputs.images import ImageError, load_image, open_input
from batchlens.core.tasks import ADAPTERS, TaskAdapter, TaskResult, make_adapter
from batchlens.core.tasks.base import PREVIEW_SIZE, thumbnail

CANVAS_GREY = (96, 96, 96)  # the stand-in for a missing input picture


def task_of(fields: dict, default: str | None = None) -> str | None:
    """The task whose shape a result has (the data decides; the run's recorded task as a fallback)."""
    if "top" in fields:
        return "classification"
    if "detections" in fields:
        return "detection"
    if "classes" in fields:
        return "segmentation"
    if "output" in fields:
        return "image_to_image"
    return default


@functools.cache
def _adapter(task: str) -> TaskAdapter:
    # Previews use only the result's own fields (labels, indices, boxes), never the model's transform.
    return make_adapter(task, transform=None)


@dataclass(frozen=True)
class ResultPictures:
    input: Image.Image | None  # the input image, reduced (None: not found here)
    result: Image.Image | None  # the result drawn by the task (None: the fields say it all)
    note: str | None = None  # why a picture is missing, in a sentence


def _fit(size: tuple[int, int], longest: int, enlarge: bool = False) -> tuple[int, int]:
    scale = longest / max(size) if enlarge else min(1.0, longest / max(size))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _open_output(output_dir: Path, rel) -> Image.Image | None:
    """An output file (mask, output picture) named in the result, relative to the output folder."""
    if not isinstance(rel, str):
        return None
    path = (output_dir / rel).resolve()
    if not path.is_relative_to(output_dir.resolve()):
        return None  # a hand-edited line must not make us read files outside the folder
    try:  # through the guarded opener: a named pipe put in the output folder must not hang a tile
        with open_input(path) as f, open_image(f) as im:
            im.load()
            return im.copy()
    except Exception:  # Pillow raises many types on bad files; a missing picture is not an error here
        return None


def render(
    fields: dict,
    input_path: Path | None,
    output_dir: Path,
    size: int = PREVIEW_SIZE,
    task: str | None = None,
) -> ResultPictures:
    """The input and result pictures of one predictions.jsonl line, `size` pixels at most."""
    output_dir = Path(output_dir)
    image, note = None, None
    if input_path is not None:
        try:
            # A reduced-scale decode of large JPEGs: the pictures are small and boxes scale by the
            # recorded original size, not by the pixels decoded.
            image = load_image(input_path, reduce_to=lambda shape: _fit(shape, size)).image
        except ImageError as exc:
            note = f"The input {input_path.name} {exc}."
    else:
        note = "The input folder is not on this computer."
    task = task_of(fields, task)
    if fields.get("status") != "ok" or task is None:
        return ResultPictures(thumbnail(image, size) if image else None, None, note)
    adapter_type = ADAPTERS.get(task)  # (an unknown task: no picture, and the preview says why below)
    kind = adapter_type.picture_field if adapter_type else None
    extra = _open_output(output_dir, fields.get(kind)) if kind else None
    if kind and adapter_type.picture_required and extra is None:  # the mask or output file itself is missing
        name = fields.get(kind)
        return ResultPictures(thumbnail(image, size) if image else None, None, f"The file {name} is missing.")
    canvas = image
    if canvas is not None and max(canvas.size) * 2 <= size:
        # A small image shown large: draw on an enlarged copy (pixels kept sharp), so box labels stay
        # in proportion instead of being blown up with the picture.
        canvas = canvas.resize(_fit(canvas.size, size, enlarge=True), Image.Resampling.NEAREST)
    if canvas is None:
        shape = fields.get("size")
        shape = tuple(shape) if isinstance(shape, list) and len(shape) == 2 else (size, size)
        canvas = Image.new("RGB", _fit(shape, size), CANVAS_GREY)
    try:
        result = _adapter(task).preview(canvas, TaskResult(dict(fields), image=extra), size)
    except Exception as exc:  # a hand-edited or foreign line: show the input, say why there is no result
        shown = thumbnail(image, size) if image else None
        return ResultPictures(shown, None, f"Cannot draw the result: {exc}")
    return ResultPictures(thumbnail(image, size) if image else None, result, note)
