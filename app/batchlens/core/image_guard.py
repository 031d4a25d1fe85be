"""Open a file as an image the one way BatchLens does: only with the Pillow plugins of the formats it
reads (core/formats.py), and only once the headers say that every picture the file declares fits the
pixel bound and that the one to be decoded fits the memory budget.

Pillow picks a plugin by a file's content, not by its name, and some plugins do more than decode: the
EPS plugin's load() runs Ghostscript. A container also declares sizes in more than one place, and
Pillow trusts the picture inside: an .ico whose directory says 16x16 but whose embedded PNG is
20,000x20,000 was decoded whole (2.2 GB, 6.6 s). So each container's pictures are read from their own
headers (an icon's entries, a TIFF's pages, a GIF's frames, an APNG's frames) before anything is
decoded. Nothing here decodes pixels; it reads headers and skips over the data.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

import psutil
from PIL import Image, UnidentifiedImageError

from batchlens.core.errors import ImageError
from batchlens.core.formats import (
    DECODE_BYTES_PER_PIXEL,
    DEFAULT_MAX_PIXELS,
    FORMAT_NAMES,
    PILLOW_FORMATS,
)

# Containers with more pictures than this have the rest unchecked: only the first is ever decoded,
# and reading a million frames' headers would cost more than the decode they guard.
MAX_PICTURES_CHECKED = 4096
_MAX_BLOCKS = 2_000_000  # GIF sub-blocks or PNG chunks walked over, at most (about a second)

# What a file is, by its first bytes, when it is none of PILLOW_FORMATS (checked in this order).
_NOT_IMAGES = (
    (b"%!PS", "a PostScript file"),
    (b"\xc5\xd0\xd3\xc6", "a PostScript (EPS) file"),
    (b"%!", "a PostScript file"),
    (b"%PDF", "a PDF document, not an image"),
    (b"\x1f\x8b", "a gzip archive, not an image"),
    (b"PK\x03\x04", "a zip archive, not an image"),
    (b"icns", "a macOS icon (ICNS) file"),
    (b"8BPS", "a Photoshop (PSD) file"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "a JPEG 2000 file"),
    (b"\xffO\xffQ", "a JPEG 2000 file"),
    (b"DDS ", "a DirectDraw Surface (DDS) file"),
    (b"\xd7\xcd\xc6\x9a", "a Windows metafile (WMF)"),
    (b"gimp xcf", "a GIMP (XCF) file"),
    (b"\x76\x2f\x31\x01", "an OpenEXR file"),
)
_FTYP = {b"heic", b"heix", b"hevc", b"mif1", b"msf1", b"avif", b"avis"}  # HEIF/AVIF brands
_NOT_ALLOWED = (
    f"not one of the image formats BatchLens reads ({FORMAT_NAMES}); save it as PNG or JPEG to use it"
)

ICO_MAGIC = b"\x00\x00\x01\x00"
_SMALL_DECODE = 64 * 2**20  # bytes: decodes this small are within any budget worth having
# Bytes a pixel takes in Pillow: 1 for "1", "L", "P"; 2 for the 16-bit modes; 4 for the rest.
_ONE_BYTE = frozenset({"1", "L", "P"})


def open_image(fp: BinaryIO, max_pixels: int | None = DEFAULT_MAX_PIXELS, target: str = "RGB") -> Image.Image:
    """Open `fp` (a binary file, at its start) with the allowed Pillow plugins and check what it
    declares against `max_pixels`; nothing is decoded but an icon (Pillow decodes an icon as it
    opens it, so its entries are checked first, and its decode against the memory budget for
    `target`). Raises ImageError with the reason in plain words: another format, or a picture over
    the bound. The caller closes `fp`."""
    fp.seek(0)
    if fp.read(4) == ICO_MAGIC:
        _check_icon(fp, max_pixels, target)
    fp.seek(0)
    try:
        im = Image.open(fp, formats=PILLOW_FORMATS)
    except UnidentifiedImageError:
        raise ImageError(describe_unreadable(fp)) from None
    try:
        check_pictures(im, max_pixels)
    except BaseException:
        im.close()
        raise
    return im


def describe_unreadable(fp: BinaryIO) -> str:
    """What a file that none of the allowed plugins opens looks like, from its first bytes: never by
    opening it with another plugin (their accept() checks only compare bytes)."""
    try:
        fp.seek(0)
        head = fp.read(512)
    except (OSError, ValueError):
        return "is not an image BatchLens can read"
    if not head:
        return "is empty (0 bytes)"
    damaged = _allowed_kind(head)
    if damaged is not None:
        article = "an" if damaged[0] in "AEIOU" else "a"
        return f"looks like {article} {damaged} file, but its header could not be read (damaged or cut short)"
    what = _kind(head)
    if what is not None:
        return f"is {what}" if "not an image" in what else f"is {what}, {_NOT_ALLOWED}"
    lowered = head.lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<?xml", b"<svg")):
        return "is an HTML/XML document, not an image"
    try:
        head.decode("utf-8")
        return "is a text file, not an image"
    except UnicodeDecodeError:
        return "is not an image BatchLens can read (unknown or unsupported format)"


def _allowed_kind(head: bytes) -> str | None:
    """Which allowed format the first bytes say (its plugin then refused the file's header)."""
    for name in PILLOW_FORMATS:
        accept = Image.OPEN[name][1] if name in Image.OPEN else None
        try:
            if accept is not None and accept(head[:16]) is True:
                return name
        except Exception:  # an accept() that does not like short input says nothing
            continue
    return None


def _kind(head: bytes) -> str | None:
    for magic, what in _NOT_IMAGES:
        if head.startswith(magic):
            return what
    if head[4:8] == b"ftyp" and head[8:12] in _FTYP:
        return "a HEIF/AVIF file"
    Image.init()
    for name in Image.ID:  # Pillow's other plugins, asked only to compare the first bytes
        if name in PILLOW_FORMATS or name == "MPO":
            continue
        accept = Image.OPEN[name][1]
        try:
            if accept is not None and accept(head[:16]) is True:
                return f"a {name} file"
        except Exception:  # an accept() that does not like short input says nothing
            continue
    return None


# -- what a file declares ------------------------------------------------------------------------
def check_pictures(im: Image.Image, max_pixels: int | None) -> None:
    """Refuse the file (ImageError) when a picture it declares is over `max_pixels`: its own size,
    and each icon entry's, TIFF page's, GIF or APNG frame's, from that picture's own header."""
    for where, (width, height) in _pictures(im):
        if max_pixels and width * height > max_pixels:
            raise ImageError(over_bound(width, height, max_pixels, where))


def over_bound(width: int, height: int, max_pixels: int, where: str = "") -> str:
    picture = f"holds a picture ({where}) of" if where else "is"
    return (
        f"{picture} {width}×{height} pixels ({width * height / 1e6:.0f} megapixels), over the limit "
        f"of {max_pixels / 1e6:.0f} megapixels; refused without decoding it as a possible "
        "decompression bomb (raise the limit with --max-pixels if it is genuine)"
    )


def _check_icon(f: BinaryIO, max_pixels: int | None, target: str) -> None:
    """An icon's entries, each by its directory's word and by its picture's own header (a 16x16 entry
    may hold a 20,000x20,000 PNG, which Pillow would decode), and the decode of the entry Pillow
    picks (the largest the directory names; as RGBA) against the memory budget."""
    f.seek(4)
    head = f.read(2)
    if len(head) < 2:
        return  # no directory: Pillow's plugin refuses it
    (count,) = struct.unpack("<H", head)
    directory = [f.read(16) for _ in range(min(count, MAX_PICTURES_CHECKED))]
    entries = []  # (directory's square, colour depth, real size)
    for number, entry in enumerate(directory, 1):
        if len(entry) < 16:
            break
        claimed = (entry[0] or 256, entry[1] or 256)
        bpp, offset = struct.unpack("<H", entry[6:8])[0], struct.unpack("<I", entry[12:16])[0]
        real = _icon_entry_size(f, offset) or claimed
        where = f"icon entry {number} of {count}"
        if real != claimed:
            where += f", which the icon's directory calls {claimed[0]}×{claimed[1]}"
        for size in (claimed, real):
            if max_pixels and size[0] * size[1] > max_pixels:
                raise ImageError(over_bound(*size, max_pixels, where))
        entries.append((claimed[0] * claimed[1], bpp or entry[2] or 256, real))
    if entries:  # Pillow's choice: the largest the directory names, the fewest colours first
        chosen = sorted(sorted(entries, key=lambda e: e[1]), key=lambda e: e[0], reverse=True)[0]
        check_budget("RGBA", chosen[2], target, max_pixels)


def decoded_size(im: Image.Image) -> tuple[int, int]:
    """The size of the picture load() decodes (an icon's is decoded as it opens, at its real size)."""
    return im.size


def _pictures(im: Image.Image) -> Iterator[tuple[str, tuple[int, int]]]:
    yield "", im.size
    fmt = im.format
    if fmt == "GIF":
        yield from _restoring(im.fp, lambda f: list(_gif_frames(f, im.size)))
    elif fmt == "PNG" and getattr(im, "n_frames", 1) > 1:
        yield from _restoring(im.fp, lambda f: list(_apng_frames(f)))
    elif fmt == "TIFF":
        yield from _tiff_pages(im)


def _restoring(f: BinaryIO, read):
    """read(f), with the file put back where the plugin left it."""
    position = f.tell()
    try:
        return read(f)
    finally:
        f.seek(position)


def _icon_entry_size(f: BinaryIO, offset: int) -> tuple[int, int] | None:
    """An icon entry's size from its picture's header (a PNG's IHDR or a bitmap's info header)."""
    f.seek(offset)
    head = f.read(24)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        return struct.unpack(">II", head[16:24])
    if len(head) >= 12:
        (header_size,) = struct.unpack("<I", head[:4])
        if header_size == 12:  # BITMAPCOREHEADER
            width, height = struct.unpack("<HH", head[4:8])
        else:
            width, height = struct.unpack("<ii", head[4:12])
        return abs(width), abs(height) // 2  # the height counts the bitmap and its mask
    return None


def _sub_blocks(f: BinaryIO, budget: list[int]) -> None:
    """Skip a GIF data block (a chain of length-prefixed sub-blocks ending with a 0)."""
    while budget[0] > 0:
        budget[0] -= 1
        length = f.read(1)
        if not length or length == b"\x00":
            return
        f.seek(length[0], 1)


def _gif_frames(f: BinaryIO, canvas: tuple[int, int]) -> Iterator[tuple[str, tuple[int, int]]]:
    """The canvas at each frame: Pillow grows it to hold a frame that reaches past it."""
    f.seek(0)
    head = f.read(13)
    if len(head) < 13:
        return
    if head[10] & 0x80:
        f.seek(3 << ((head[10] & 7) + 1), 1)
    budget, number = [_MAX_BLOCKS], 0
    while budget[0] > 0 and number < MAX_PICTURES_CHECKED:
        kind = f.read(1)
        if kind == b"!":
            f.read(1)
            _sub_blocks(f, budget)
        elif kind == b",":
            descriptor = f.read(9)
            if len(descriptor) < 9:
                return
            x, y, width, height = struct.unpack("<HHHH", descriptor[:8])
            number += 1
            canvas = max(canvas[0], x + width), max(canvas[1], y + height)  # as Pillow grows it
            yield f"frame {number}", canvas
            if descriptor[8] & 0x80:
                f.seek(3 << ((descriptor[8] & 7) + 1), 1)
            f.read(1)  # the LZW code size
            _sub_blocks(f, budget)
        else:  # the trailer, the end of the file, or bytes Pillow stops at too
            return


def _apng_frames(f: BinaryIO) -> Iterator[tuple[str, tuple[int, int]]]:
    """Each APNG frame's size and reach (fcTL chunks), without reading the compressed data."""
    f.seek(8)
    number = 0
    for _ in range(_MAX_BLOCKS):
        chunk = f.read(8)
        if len(chunk) < 8:
            return
        length, kind = struct.unpack(">I4s", chunk)
        if kind == b"fcTL" and length >= 20:
            data = f.read(20)
            if len(data) < 20:
                return
            _, width, height, x, y = struct.unpack(">IIIII", data)
            number += 1
            yield f"frame {number}", (x + width, y + height)
            if number >= MAX_PICTURES_CHECKED:
                return
            f.seek(length - 20 + 4, 1)
        elif kind == b"IEND":
            return
        else:
            f.seek(length + 4, 1)


def _tiff_pages(im: Image.Image) -> Iterator[tuple[str, tuple[int, int]]]:
    """Each page's size, read from its directory (Pillow's seek reads tags, it decodes nothing)."""
    sizes = []
    try:
        for page in range(1, MAX_PICTURES_CHECKED):
            try:
                im.seek(page)
            except EOFError:
                break
            except Exception:  # a damaged later page is never decoded: the walk stops there
                break
            sizes.append((page + 1, im.size))
    finally:
        im.seek(0)
    for page, size in sizes:
        yield f"page {page}", size


# -- the memory a decode takes -----------------------------------------------------------------
def decode_bytes(mode: str, size: tuple[int, int], target: str = "RGB") -> int:
    """About the most memory decoding a picture of `mode` and `size` and converting it to `target`
    takes (core/inputs/images.py's convert_mode): the decoded picture and the copies on the way."""
    stored = 1 if mode in _ONE_BYTE else 2 if mode.startswith("I;16") else 4
    out = 1 if target == "L" else 4
    if mode.startswith("I") or mode == "F":
        per_pixel = 2 * stored + 3 * 8 + 1 + out  # scaled to 8 bits through float64 arrays
    elif mode in ("P", "RGBA", "LA", "PA", "RGBa", "La"):
        per_pixel = stored + 4 * 3 + out  # composited over white as RGBA
    else:
        per_pixel = stored + (0 if mode == target else out)
    return size[0] * size[1] * per_pixel


def available_memory() -> int | None:
    """The memory free now (bytes), or None where it cannot be read."""
    try:
        return int(psutil.virtual_memory().available)
    except Exception:  # psutil without support for this system
        return None


def decode_budget(max_pixels: int | None) -> int | None:
    """The bytes one decode may take: DECODE_BYTES_PER_PIXEL for each pixel of the bound, and no more
    than the memory free now. None: no budget (no bound and nothing known of the memory)."""
    limits = [n for n in (max_pixels and max_pixels * DECODE_BYTES_PER_PIXEL, available_memory()) if n]
    return min(limits) if limits else None


def check_budget(mode: str, size: tuple[int, int], target: str, max_pixels: int | None) -> None:
    """Refuse (ImageError) a decode whose memory, estimated from the header, is over the budget."""
    need = decode_bytes(mode, size, target)
    if need <= _SMALL_DECODE:  # a photo's decode: not worth reading the memory free (~50 µs)
        return
    budget = decode_budget(max_pixels)
    if budget is not None and need > budget:
        raise ImageError(
            f"would take about {need / 1e9:.1f} GB of memory to decode ({size[0]}×{size[1]} pixels in "
            f"mode {mode}), more than the {budget / 1e9:.1f} GB it may use now; refused without "
            "decoding it (free some memory, or make the picture smaller)"
        )
