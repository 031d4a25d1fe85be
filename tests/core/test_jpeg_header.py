"""The JPEG header reader that --gpu-decode uses instead of Pillow: the same size, colour mode and
EXIF orientation as Pillow's Image.open + getexif() on every kind of file, and None (the Pillow path)
for anything it is not sure of, damaged files included."""

from __future__ import annotations

import io
import random
import struct

import numpy as np
import pytest
from PIL import Image

from batchlens.core.inputs.jpeg_header import read_jpeg_header

MODES = {1: "L", 3: "RGB", 4: "CMYK"}


def pillow_view(data: bytes):
    """(size, mode, orientation) as Pillow reads them; None when Pillow does not see a plain JPEG."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG":
                return None
            return im.size, im.mode, im.getexif().get(0x0112, 1)
    except Exception:
        return None


def ours(data: bytes):
    header = read_jpeg_header(data)
    if header is None:
        return None
    return (header.width, header.height), MODES.get(header.components), header.orientation


def jpeg(mode="RGB", size=(40, 24), exif: bytes | None = None, **save) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(out, "JPEG", exif=exif or b"", **save)
    return out.getvalue()


def exif_block(orientation: int, order: str = "II", kind: int = 3) -> bytes:
    """A TIFF-structured EXIF block with one IFD0 entry: the orientation, as `kind` (3 SHORT, 4 LONG)."""
    fmt = "<" if order == "II" else ">"
    value = struct.pack(fmt + "HH", orientation, 0) if kind == 3 else struct.pack(fmt + "I", orientation)
    ifd = struct.pack(fmt + "H", 1) + struct.pack(fmt + "HHI", 0x0112, kind, 1) + value + b"\0\0\0\0"
    return b"Exif\x00\x00" + order.encode() + struct.pack(fmt + "HI", 42, 8) + ifd


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("order", ["II", "MM"])
def test_orientation_as_pillow_reads_it(orientation, order):
    data = jpeg(exif=exif_block(orientation, order))
    assert ours(data) == pillow_view(data) == ((40, 24), "RGB", orientation)


@pytest.mark.parametrize(
    ("mode", "save"),
    [("RGB", {}), ("L", {}), ("CMYK", {}), ("RGB", {"progressive": True}), ("RGB", {"quality": 5})],
)
def test_size_and_mode_as_pillow_reads_them(mode, save):
    data = jpeg(mode, (123, 45), **save)
    assert ours(data) == pillow_view(data)
    assert ours(data)[:2] == ((123, 45), mode)


def test_a_long_orientation_an_exif_without_one_and_xmp():
    long = jpeg(exif=exif_block(6, kind=4))
    assert ours(long) == pillow_view(long) == ((40, 24), "RGB", 6)
    none = jpeg(exif=b"Exif\x00\x00II" + struct.pack("<HIH", 42, 8, 0) + b"\0\0\0\0")
    assert ours(none) == pillow_view(none) == ((40, 24), "RGB", 1)
    xmp = b'<x:xmpmeta><rdf:Description tiff:Orientation="8"/></x:xmpmeta>'
    out = io.BytesIO()
    Image.new("RGB", (40, 24)).save(out, "JPEG", xmp=xmp)
    assert ours(out.getvalue()) == pillow_view(out.getvalue()) == ((40, 24), "RGB", 8)


def test_other_files_and_multi_picture_jpegs_go_to_pillow():
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    mpo = io.BytesIO()
    Image.new("RGB", (8, 8)).save(mpo, "MPO", save_all=True, append_images=[Image.new("RGB", (8, 8))])
    for data in (png.getvalue(), mpo.getvalue(), b"", b"\xff\xd8", b"\xff\xd8\xff\xd9", b"GIF89a"):
        assert read_jpeg_header(data) is None


def test_damaged_files_never_raise_and_never_disagree_with_pillow():
    """Cut short anywhere, or with bytes changed in the header: the reader gives None or what Pillow
    gives (never another size or orientation, which would turn a picture on the GPU path only). A
    file Pillow refuses but this reader takes goes to the GPU decoder, which either decodes it or
    refuses it too (then the Pillow path gives the usual error)."""
    data = jpeg(exif=exif_block(6, "MM"), size=(64, 48))
    header_end = data.index(b"\xff\xda")  # the scan starts here; what matters is before it
    rng = random.Random(0)
    cases = [data[:cut] for cut in range(0, header_end + 8)]
    for _ in range(1500):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            damaged[rng.randrange(2, header_end)] = rng.randrange(256)
        cases.append(bytes(damaged))
    agreed = 0
    for case in cases:
        mine, pillows = ours(case), pillow_view(case)
        if mine is not None and pillows is not None:
            assert mine == pillows, case[:header_end].hex()
            agreed += 1
        if len(case) <= header_end:  # cut before the scan: never taken
            assert mine is None
    assert agreed > 100  # most damage to other segments leaves a header both read the same way
