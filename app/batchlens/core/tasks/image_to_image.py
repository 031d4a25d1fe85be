"""Image-to-image (denoising, super-resolution, ...): one PNG per input, mirroring the input tree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from batchlens.core.tasks.base import PREVIEW_SIZE, ImageMeta, TaskAdapter, TaskResult, thumbnail
from batchlens.core.tasks.kinds import KINDS


def tensor_to_image(output: torch.Tensor) -> Image.Image:
    """A CHW float tensor in [0, 1] (1 or 3 channels) -> an 8-bit PIL image."""
    if output.dim() == 2:
        output = output.unsqueeze(0)
    array = (output.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        return Image.fromarray(np.ascontiguousarray(array[:, :, 0]), mode="L")
    return Image.fromarray(np.ascontiguousarray(array[:, :, :3]), mode="RGB")


class ImageToImageAdapter(TaskAdapter):
    task = "image_to_image"
    kind = KINDS[task]
    tileable = True
    full_resolution = True
    picture_field = "output"

    def postprocess(self, output: torch.Tensor, meta: ImageMeta) -> TaskResult:
        image = tensor_to_image(output)
        width, height = image.size
        scale = round(width / meta.input_size[0], 4) if meta.input_size[0] else 1.0
        return TaskResult({"size": [width, height], "scale": scale}, image=image)

    def write(self, result: TaskResult, meta: ImageMeta, output_dir: Path) -> None:
        self.write_image(result, meta, output_dir, "output")

    def preview(self, image: Image.Image, result: TaskResult, size: int = PREVIEW_SIZE) -> Image.Image | None:
        return thumbnail(result.image, size) if result.image is not None else None
