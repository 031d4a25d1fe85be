"""What BatchLens takes as an image: the file extensions it reads, the Pillow formats it opens them
with, and the pixel and memory bounds it holds images to. At the bottom of core/, so every room
(inputs, models, outputs) can read them. core/image_guard.py opens images under these rules."""

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

# The Pillow plugins an image is opened with (Image.open(..., formats=PILLOW_FORMATS)), whatever its
# name says. Pillow picks a plugin by the file's content: without this list a PostScript file named
# photo.jpg opens as EPS, whose load() runs Ghostscript. None of these runs a program or decodes
# without a size declared in its header. A JPEG with a Multi-Picture extension opens as "MPO" through
# the JPEG plugin (Pillow has no separate opener for MPO); only its first picture is decoded. TGA has
# no magic number, so it is tried last.
PILLOW_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM", "ICO", "TGA")
FORMAT_NAMES = "JPEG, PNG, BMP, GIF, TIFF, WebP, PPM/PGM/PBM, ICO and TGA"  # the same, for people

# The memory a decode may take: the decoded picture and the copies its conversion to RGB or grey
# makes, estimated from the header before anything is decoded. At most DECODE_BYTES_PER_PIXEL bytes
# a pixel of the pixel bound (the most any mode's conversion needs, so an image within the bound is
# never refused for its mode alone), and never more than the memory free at the time.
DECODE_BYTES_PER_PIXEL = 40
