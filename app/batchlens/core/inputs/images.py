"""Find images in a folder (lazily, in a stable sorted order) and decode them safely with Pillow.

Every problem with one file becomes an ImageError whose message names the problem in plain words;
the caller adds the file name and carries on with the next image.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps

from batchlens.core.errors import BatchLensError, ImageError
from batchlens.core.formats import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS  # noqa: F401  (re-exported)
from batchlens.core.image_guard import check_budget, decoded_size, open_image
from batchlens.core.inputs.jpeg_header import read_jpeg_header

# We enforce our own, configurable pixel limit (checked from the header, before decoding), so
# Pillow's global bomb guard would only get in the way with a less helpful message.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Files operating systems leave in folders. Skipped silently and counted as skipped.
JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini", ".ds_store", "ehthumbs.db"})
# Opening a named pipe would wait forever for a writer; devices and sockets are no images.
_NOT_REGULAR = "is not a regular file (a named pipe, socket or device), so it was not opened"


__all__ = ["ImageError"]  # defined in core/errors.py (tasks and outputs below this room raise it too)


@dataclass
class ScanStats:
    """What the scan passed over: junk and hidden files, and files that are not images."""

    skipped_junk: int = 0
    skipped_not_image: int = 0
    skipped_dirs: list[str] = field(default_factory=list)  # symlink loops and unreadable folders

    @property
    def skipped(self) -> int:
        return self.skipped_junk + self.skipped_not_image


@dataclass(frozen=True)
class Candidate:
    """An image to process: its path relative to the input folder (with '/'), and its full path."""

    rel: str
    location: str  # as the scan found it: a Path for each of 10,000 files would cost the scan 30 ms

    @property
    def path(self) -> Path:
        return Path(self.location)


def is_junk(name: str) -> bool:
    return name.startswith(".") or name.lower() in JUNK_NAMES


def unlistable(folder: Path) -> str | None:
    """Why `folder` cannot be listed (a sentence for the user), or None when it can."""
    try:
        with os.scandir(folder) as it:
            next(it, None)
    except OSError as exc:
        reason = "permission denied" if isinstance(exc, PermissionError) else exc.strerror or str(exc)
        return (
            f"The input folder {folder} cannot be listed ({reason}), so no image in it can be read; "
            "check that it is a folder you may open."
        )
    return None


def scan_images(
    root: Path,
    recursive: bool = False,
    stats: ScanStats | None = None,
    exclude: Path | None = None,
) -> Iterator[Candidate]:
    """Yield image candidates under `root` in sorted order, one directory listing at a time.

    `exclude` is a folder to leave out (the output folder when it sits inside the input).
    Symbolic links to folders are followed once; a loop back to a folder already seen is skipped.
    The walk keeps its own stack (no recursion), so any depth the file system allows is walked; a
    subfolder that cannot be listed is recorded in `stats.skipped_dirs` and the walk goes on, while
    an input folder that cannot be listed raises BatchLensError (a run over it would find nothing).
    """
    stats = stats if stats is not None else ScanStats()
    root = Path(root)
    excluded = _key(exclude) if exclude is not None else None
    seen_dirs: set[tuple[int, int]] = set()

    def listing(directory: str, prefix: str) -> Iterator[os.DirEntry] | None:
        """The folder's entries, sorted; None (and a note) when it is a loop or cannot be listed."""
        key = _key(directory)
        try:
            if key is None:  # removed since its parent was listed, or unreadable
                raise FileNotFoundError(errno.ENOENT, "no such folder")
            if key in seen_dirs:
                stats.skipped_dirs.append(prefix)  # a symbolic link back to a folder already seen
                return None
            seen_dirs.add(key)
            with os.scandir(directory) as it:
                return iter(sorted(it, key=lambda e: e.name))
        except OSError:
            if not prefix:  # the input folder itself: a run over it would find nothing
                why = unlistable(root) or f"The input folder {root} cannot be listed."
                raise BatchLensError(why) from None
            stats.skipped_dirs.append(prefix)
            return None

    first = listing(str(root), "")
    stack: list[tuple[Iterator[os.DirEntry], str]] = [(first, "")] if first is not None else []
    while stack:
        entries, prefix = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        rel = f"{prefix}{entry.name}"
        if is_junk(entry.name):
            stats.skipped_junk += 1
            continue
        try:
            is_dir = entry.is_dir()  # follows symlinks; False for a broken link
        except OSError:
            is_dir = False
        if is_dir:
            if recursive and (excluded is None or _key(entry.path) != excluded):
                inner = listing(entry.path, rel + "/")
                if inner is not None:
                    stack.append((inner, rel + "/"))
            continue
        if os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
            yield Candidate(rel, entry.path)
        else:
            stats.skipped_not_image += 1


def _key(path) -> tuple[int, int] | None:
    """A folder's identity (device, inode), following links; None when it cannot be read."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def no_images_sentence(root: Path, recursive: bool, stats: ScanStats, exclude: Path | None = None) -> str:
    """Why a run over `root` has nothing to do, in one sentence: where it looked, what it passed over,
    and, when subfolders were left out, how many of them hold images (--recursive includes them)."""
    skipped = (
        f" ({stats.skipped} other file{'s' if stats.skipped != 1 else ''} skipped)" if stats.skipped else ""
    )
    if recursive:
        return f"There are no images in {root} or its subfolders{skipped}."
    folders = {c.rel.split("/", 1)[0] for c in scan_images(root, True, exclude=exclude) if "/" in c.rel}
    if folders:
        return (
            f"There are no images in {root} itself{skipped}, but {len(folders)} of its subfolder"
            f"{'s hold' if len(folders) != 1 else ' holds'} images: add --recursive to include them."
        )
    return (
        f"There are no images in {root}{skipped}; only its own files were looked at "
        "(--recursive also looks in its subfolders)."
    )


@dataclass
class DecodedImage:
    image: Image.Image | None  # None once preprocessed when no preview is wanted (core/run/pipeline.py)
    original_size: tuple[int, int]  # (width, height) after EXIF rotation
    note: str | None = None  # e.g. "first frame of 12 used"


def open_input(path: Path) -> BinaryIO:
    """Open an input file for reading: the one way BatchLens opens what it was pointed at (decoding,
    header probes, the GPU decoder's bytes). Only a regular file is opened, and never in a way that
    blocks: a named pipe would wait forever for a writer, a device may never end. Raises ImageError
    with the reason in plain words."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ImageError("is a broken symbolic link (its target does not exist)") from None
        raise ImageError("was removed before it could be read") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageError(
                "is a symbolic link that loops back on itself (too many levels of symbolic links)"
            ) from None
        raise ImageError(f"cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError("is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(_NOT_REGULAR)
    try:
        # O_NONBLOCK: a file swapped for a named pipe after the check above still does not block.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except PermissionError:
        raise ImageError("cannot be read: permission denied") from None
    except FileNotFoundError:
        raise ImageError("was removed before it could be read") from None
    except OSError as exc:
        raise ImageError(f"cannot be read ({exc.strerror or exc})") from None
    f = os.fdopen(fd, "rb")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        f.close()
        raise ImageError(_NOT_REGULAR if not stat.S_ISREG(st.st_mode) else "is empty (0 bytes)")
    return f


def _to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit integer and float images into 8 bits instead of clipping them."""
    arr = np.asarray(image)
    if image.mode == "F":
        arr = np.nan_to_num(arr.astype(np.float64))
        lo, hi = float(arr.min()), float(arr.max())
        if 0.0 <= lo and hi <= 1.0:
            arr = arr * 255.0
        elif hi > lo:
            arr = (arr - lo) / (hi - lo) * 255.0
        else:
            arr = np.zeros_like(arr)
    else:
        arr = arr.astype(np.float64)
        arr = arr / 257.0 if arr.max() > 255 else arr
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), mode="L")


def convert_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert to "RGB" or "L", compositing transparency over white and keeping bit depth sane."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        image = _to_8bit(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image if image.mode == mode else image.convert(mode)


# EXIF orientations that turn the picture by 90 or 270 degrees (width and height trade places).
_QUARTER_TURNS = frozenset({5, 6, 7, 8})

SizeWanted = Callable[[tuple[int, int]], tuple[int, int] | None]  # upright size -> fewest pixels needed


def _upright(im: Image.Image) -> tuple[tuple[int, int], bool]:
    """The opened image's (width, height) as displayed, and whether EXIF turns it a quarter."""
    turned = im.getexif().get(ExifTags.Base.Orientation) in _QUARTER_TURNS
    return ((im.height, im.width) if turned else im.size), turned


def decodes_reduced(path: Path, reduce_to: SizeWanted) -> bool:
    """Whether load_image(path, reduce_to=reduce_to) decodes this file at 1/2 scale or less (read from
    its header): a JPEG, at least twice the size asked for (JPEG scales only by 1/2, 1/4 and 1/8)."""
    try:
        with open_input(path) as f, open_image(f) as im:  # the default bound: an icon is decoded as it opens
            if im.format != "JPEG":
                return False
            upright, _ = _upright(im)
            wanted = reduce_to(upright)
            return wanted is not None and min(upright[0] // wanted[0], upright[1] // wanted[1]) >= 2
    except Exception:  # an unreadable file is reported when it is decoded, not here
        return False


def load_image(
    path: Path,
    mode: str = "RGB",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    reduce_to: SizeWanted | None = None,
) -> DecodedImage:
    """Decode one image file into `mode`, or raise ImageError with a plain-words reason.

    `reduce_to(upright_size)` may name the smallest (width, height) the caller needs; a JPEG is then
    decoded at 1/2, 1/4 or 1/8 scale where that still gives at least that many pixels (Pillow's
    `draft`, the same DCT-domain scaling `Image.thumbnail` uses). original_size stays the full size.
    """
    f = open_input(path)
    try:
        # The allowed formats only, each picture the file declares within max_pixels (core/image_guard.py).
        with f, open_image(f, max_pixels, mode) as im:
            frames = getattr(im, "n_frames", 1)
            im.seek(0)
            jpeg = im.format == "JPEG"
            if not jpeg:  # before its EXIF is asked for: a PNG's getexif() decodes the picture
                check_budget(im.mode, decoded_size(im), mode, max_pixels)
            upright, turned = _upright(im)
            wanted = reduce_to(upright) if reduce_to is not None and jpeg else None
            if wanted:
                im.draft(im.mode, wanted[::-1] if turned else wanted)
            if jpeg:  # at the scale it is decoded at
                check_budget(im.mode, decoded_size(im), mode, max_pixels)
            im.load()
            # In place: an upright image is not copied (a 2 MP copy is ~3 % of a CPU run). The
            # pixels stay usable after the `with` block, which only closes the file.
            ImageOps.exif_transpose(im, in_place=True)
            image = im
    except ImageError:
        raise
    except PermissionError:
        raise ImageError("cannot be read: permission denied") from None
    except MemoryError:
        raise ImageError("is too large to decode in the memory that is left") from None
    except Exception as exc:  # Pillow's plugins raise many types on malformed data; none may end a run
        text = str(exc)
        if "truncated" in text.lower():
            raise ImageError(f"is truncated or corrupt ({text})") from None
        raise ImageError(f"could not be decoded ({type(exc).__name__}: {text})") from None
    if image.width == 0 or image.height == 0:
        raise ImageError("has no pixels (zero width or height)")
    note = f"first frame of {frames} used" if frames > 1 else None
    original_size = upright if wanted else image.size
    return DecodedImage(convert_mode(image, mode), original_size, note)


HEADER_BYTES = 64 * 1024  # where a JPEG's frame header is, unless an EXIF thumbnail pushes it further


def header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the file's header, without decoding it; None when it cannot be read."""
    try:
        with open_input(path) as f:
            jpeg = read_jpeg_header(f.read(HEADER_BYTES))  # a JPEG's markers: half Pillow's time
            if jpeg is not None:
                return jpeg.width, jpeg.height
            f.seek(0)
            with open_image(f) as im:  # the default bound: an icon is decoded as it opens
                return decoded_size(im)
    except Exception:
        return None
