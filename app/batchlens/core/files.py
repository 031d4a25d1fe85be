"""Writing into the output folder: atomic writes (a killed run never leaves a half-written file),
the temporary names cleanup may take, and where each image's output file goes.

At the bottom of core/: the task adapters, the results writer and the run lock all write through it."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

from batchlens.core.formats import IMAGE_EXTENSIONS

NAME_MAX = 255  # bytes in one file name on Linux, macOS and (UTF-16 units) Windows
#: Every temporary file BatchLens writes has this name, so cleanup can never take a user's file.
TEMP_NAME = re.compile(r"\.batchlens-(\d+)-[0-9a-f]{8}\.tmp")


def temp_path_for(path: Path) -> Path:
    """A short temporary name beside `path` (short: a 250-byte file name still has room for it)."""
    return path.with_name(f".batchlens-{os.getpid()}-{secrets.token_hex(4)}.tmp")


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temporary name next to `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def legacy_output_rel(rel: str, suffix: str = ".png") -> str:
    """The rule before 0.x: `a.png` -> `a.png`, `a.jpg` -> `a.jpg.png` (but `a.jpg.png` collided)."""
    return rel if rel.lower().endswith(suffix) else rel + suffix


def output_rel(rel: str, suffix: str = ".png") -> str:
    """Where an image's output file goes, relative to the output folder (docs/outputs.md, "Names").

    The input tree is mirrored. `a/b.png` -> `a/b.png`; any other input gets `.png` added, so
    `b.jpg` -> `b.jpg.png` and `b.jpg.png` -> `b.jpg.png.png`: an input already named like another
    input's output (`b.jpg.png` beside `b.jpg`) never takes its place. The mapping is one-to-one
    because every input ends in an image extension. A name that would pass the file system's limit
    (255 bytes) is cut and given a hash of the full name: `<start>~<12 hex>.png`."""
    head, _, name = _full_output_rel(rel, suffix).rpartition("/")
    if len(os.fsencode(name)) > NAME_MAX:
        digest = hashlib.sha256(os.fsencode(rel)).hexdigest()[:12]
        start = name
        while len(os.fsencode(start)) > NAME_MAX - 40:
            start = start[:-1]
        name = f"{start}~{digest}{suffix}"
    return f"{head}/{name}" if head else name


def _full_output_rel(rel: str, suffix: str) -> str:
    stem = rel[: -len(suffix)] if rel.lower().endswith(suffix) else None
    keep = stem is not None and os.path.splitext(stem.rpartition("/")[2])[1].lower() not in IMAGE_EXTENSIONS
    return rel if keep else rel + suffix


def output_name_shortened(rel: str, suffix: str = ".png") -> bool:
    """Whether `output_rel` had to cut this image's output name to fit NAME_MAX."""
    return output_rel(rel, suffix) != _full_output_rel(rel, suffix)


def output_path_for(output_dir: Path, rel: str, suffix: str = ".png") -> Path:
    return Path(output_dir) / output_rel(rel, suffix)


def write_error(exc: OSError, output_dir: Path) -> str:
    """One sentence for a write that failed: what happened, that nothing written is damaged, what to do."""
    kept = "Everything written so far is complete and valid"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"The disk holding the output folder {output_dir} is full (no space left on device), so the "
            f"run stopped. {kept}: free some space, then run the same command with --resume to finish."
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"The output folder {output_dir} is no longer writable ({exc.strerror}), so the run stopped. "
            f"{kept}: fix the folder's permissions, then run again with --resume."
        )
    where = exc.filename or output_dir
    return (
        f"Cannot write {where}: {exc.strerror or exc}, so the run stopped. "
        f"{kept}; once the cause is fixed, run again with --resume."
    )


def is_name_problem(exc: OSError) -> bool:
    """A write failed because of this one file's name (too long, refused by the file system), not
    because of the folder or the disk: that image gets an error line and the run goes on."""
    return exc.errno in (errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL)
