"""Class colours, and the tinting, shared by the detection and segmentation previews."""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image


def colour(index: int) -> tuple[int, int, int]:
    """The PASCAL VOC colour map: distinct, stable colours from the bits of the class index."""
    r = g = b = 0
    c = index + 1 if index == 0 else index  # class 0 is black in VOC; boxes of class 0 must show
    for shift in range(8):
        r |= ((c >> 0) & 1) << (7 - shift)
        g |= ((c >> 1) & 1) << (7 - shift)
        b |= ((c >> 2) & 1) << (7 - shift)
        c >>= 3
    return r, g, b


def tint(image: Image.Image, colours: np.ndarray, where: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """`image` (RGB) with the pixels where `where` is true blended with `colours` (H x W x 3)."""
    pixels = np.asarray(image).astype(np.float32)
    blended = pixels * (1 - alpha) + colours.astype(np.float32) * alpha
    return Image.fromarray(np.where(where[..., None], blended, pixels).round().astype(np.uint8))


@functools.cache
def palette_array(n: int = 256) -> np.ndarray:
    """An (n, 3) uint8 array of the colours of classes 0..n-1 (class 0, usually background, black)."""
    table = np.array([colour(i) for i in range(n)], dtype=np.uint8)
    table[0] = 0
    return table
