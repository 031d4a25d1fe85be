"""What BatchLens takes as an image: the file extensions it reads and the pixel bound it holds
images to. At the bottom of core/, so every room (inputs, models, outputs) can read them."""

from __future__ import annotations

IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".bmp",
        ".gif",
        ".tif",
        ".tiff",
        ".webp",
        ".ppm",
        ".pgm",
        ".pbm",
        ".pnm",
        ".tga",
        ".ico",
    }
)
DEFAULT_MAX_PIXELS = 150_000_000  # about 12,000 x 12,000; a 30,000 x 30,000 "bomb" is refused
