"""The steps of `Preprocessing.to_transform()` that torchvision's v2 does not have in the exact form
(core/models/preprocessing.py): each as a small callable with a readable `repr`, for summary.json."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torchvision.transforms import v2


class ResizeToCover:
    """Keep the aspect ratio and scale so the image just covers `size` (H, W), each side rounded: timm's
    ResizeKeepRatio (longest=0) with its arithmetic, so the centre crop after it matches timm's. Takes
    PIL images and (stacked) tensors, like v2.Resize."""

    def __init__(self, size: tuple[int, int], interpolation: v2.InterpolationMode, antialias: bool = True):
        self.size, self.interpolation, self.antialias = tuple(size), interpolation, antialias

    def __call__(self, image):
        from torchvision.transforms import v2

        height, width = v2.functional.get_size(image)
        ratio = min(height / self.size[0], width / self.size[1])
        size = [round(height / ratio), round(width / ratio)]
        return v2.functional.resize(image, size, self.interpolation, antialias=self.antialias)

    def __repr__(self) -> str:
        return f"ResizeToCover(size={list(self.size)}, interpolation={self.interpolation.value})"


class ToFloat:
    """uint8 image -> float32 in 0-1 by division, as torchvision's presets and timm compute it
    (v2.ToDtype multiplies by 1/255, which differs in the last bit for some values)."""

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        import torch

        return image.to(torch.float32) / 255

    def __repr__(self) -> str:
        return "ToFloat(divide by 255)"


class ReverseChannels:
    """RGB -> BGR (the channel order some models were trained with)."""

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image.flip(-3)

    def __repr__(self) -> str:
        return "ReverseChannels()"


class Multiply:
    def __init__(self, factor: float):
        self.factor = factor

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image * self.factor

    def __repr__(self) -> str:
        return f"Multiply({self.factor:g})"
