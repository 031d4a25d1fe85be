"""Writing into the output folder: the one guarded layer every output write goes through
(`OutputFolder`), atomic writes (a killed run never leaves a half-written file), the temporary names
cleanup may take, the run's own reserved names, and where each image's output file goes.

At the bottom of core/: the task adapters, the results writer and the manifest all write through it.
A run opens its output folder once (`OutputFolder.open`) and hands the object down; the adapters get
it in place of the folder's path."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from batchlens.core.errors import BatchLensError
from batchlens.core.formats import IMAGE_EXTENSIONS

NAME_MAX = 255  # bytes in one file name on Linux, macOS and (UTF-16 units) Windows
#: Every temporary file BatchLens writes has this name, so cleanup can never take a user's file.
TEMP_NAME = re.compile(r"\.batchlens-(\d+)-[0-9a-f]{8}\.tmp")
#: The names a run writes at the top of its output folder (its own files, the task adapters'
#: end-of-run files, the files the results browser and reviews add, the lock). An input folder named
#: like one of them gets another output name (`output_rel`), and a file of one of these names that a
#: run did not write is never replaced (core/outputs/manifest.py). Compared in lower case: Windows
#: and macOS file systems do.
RESERVED_NAMES = (
    "predictions.jsonl",
    "summary.json",
    "run.json",
    "reviews.jsonl",
    "predictions.rejected.jsonl",
    "predictions.csv",
    "detections.coco.json",
    "mask_classes.json",
    "memory-snapshot.pickle",
    "evaluation.json",
    "sort-log.jsonl",
    ".batchlens.lock",
)
_RESERVED_LOWER = frozenset(RESERVED_NAMES)


def temp_path_for(path: Path) -> Path:
    """A short temporary name beside `path` (short: a 250-byte file name still has room for it)."""
    return path.with_name(f".batchlens-{os.getpid()}-{secrets.token_hex(4)}.tmp")


def read_json_object(path: Path) -> dict:
    """A small JSON file BatchLens wrote (a run's summary, a session note, a cache): its object, or {}
    when the file is missing, unreadable, not JSON or not an object (never an error: it is advisory)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


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


def reserved(name: str) -> bool:
    """Whether a top-level name of the output folder is one of the run's own (or a temporary file's)."""
    return name.lower() in _RESERVED_LOWER or bool(TEMP_NAME.fullmatch(name))


def _unreserved_top(rel: str) -> str:
    """An input folder at the top named like a run's own file (`summary.json/a.png`) would take that
    file's place: its outputs go to `summary.json~/a.png`. One-to-one: a folder already named like a
    reserved name followed by tildes (`summary.json~`) gets one more (`summary.json~~`)."""
    top, sep, rest = rel.partition("/")
    if sep and reserved(top.rstrip("~")):
        return f"{top}~/{rest}"
    return rel


def output_rel(rel: str, suffix: str = ".png") -> str:
    """Where an image's output file goes, relative to the output folder (docs/outputs.md, "Names").

    The input tree is mirrored. `a/b.png` -> `a/b.png`; any other input gets `.png` added, so
    `b.jpg` -> `b.jpg.png` and `b.jpg.png` -> `b.jpg.png.png`: an input already named like another
    input's output (`b.jpg.png` beside `b.jpg`) never takes its place. The mapping is one-to-one
    because every input ends in an image extension. A name that would pass the file system's limit
    (255 bytes) is cut and given a hash of the full name: `<start>~<12 hex>.png`. An input folder at
    the top named like one of the run's own files (RESERVED_NAMES) gets a `~` (`_unreserved_top`)."""
    head, _, name = _unreserved_top(_full_output_rel(rel, suffix)).rpartition("/")
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
    return output_rel(rel, suffix) != _unreserved_top(_full_output_rel(rel, suffix))


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


#: What stands in the way of one output file: a link on its way (never followed), a folder in its
#: place, a file where one of its folders should be.
_IN_THE_WAY = (errno.ELOOP, errno.EISDIR, errno.ENOTDIR)


def is_name_problem(exc: OSError) -> bool:
    """A write failed because of this one file's name (too long, refused by the file system, or
    something of the user's in its way), not because of the folder or the disk: that image gets an
    error line and the run goes on."""
    return exc.errno in (errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL, *_IN_THE_WAY)


def name_problem_words(exc: OSError) -> str:
    """An image's error for a name problem (is_name_problem)."""
    if exc.errno in _IN_THE_WAY:
        return (
            "its output file cannot be written: a link, a folder or a file that BatchLens did not make "
            "stands in its way in the output folder (BatchLens never writes through or over them)"
        )
    return f"its output file cannot be written ({exc.strerror})"


# -- the guarded output folder ---------------------------------------------------------------------

#: Whether this system can write relative to an open folder (openat): Linux and macOS; not Windows,
#: where OutputFolder falls back to paths (docs/troubleshooting.md says what that leaves unguarded).
# (os.replace takes dir_fd wherever os.rename does; only os.rename is listed in supports_dir_fd)
DIR_FD = {os.open, os.stat, os.mkdir, os.unlink, os.rename} <= os.supports_dir_fd and sys.platform != "win32"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a named pipe in a file's place never blocks the open


class OutputFolder:
    """The output folder of one run, opened once: every output write goes through it.

    With DIR_FD (Linux, macOS) it holds the folder by file descriptor and writes relative to it
    (`dir_fd`), never re-resolving the folder's path, never through a link it did not make
    (O_NOFOLLOW on each part of a name); `check_still_ours()` says, after each batch, whether the folder
    and the files it holds open are still the ones it opened. Elsewhere (`OutputFolder.at`, Windows)
    the same calls work on paths."""

    def __init__(self, path: Path, fd: int | None = None):
        self.path = Path(path)
        self.fd = fd
        self._identity = _identity(os.fstat(fd)) if fd is not None else None
        # The longest path the system takes: a file written relative to the folder could be longer,
        # and then nothing could open it by its path (resume, --overwrite, the user's own tools).
        try:
            self._path_max = os.fpathconf(fd, "PC_PATH_MAX") if fd is not None else None
        except (OSError, ValueError):
            self._path_max = 4096
        self._watched: dict[str, BinaryIO] = {}  # files held open (open_append), checked too

    @classmethod
    def open(cls, path: Path) -> OutputFolder:
        """The folder `path` (which must exist), held by descriptor where the system allows."""
        if not DIR_FD:
            return cls(path)
        fd = os.open(path, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
        return cls(path, fd)

    @classmethod
    def at(cls, path: Path | OutputFolder) -> OutputFolder:
        """`path` as it is, or a folder by path (an adapter called outside a run, a cluster worker)."""
        return path if isinstance(path, OutputFolder) else cls(Path(path))

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __truediv__(self, rel: str) -> Path:
        return self.path / rel

    def __repr__(self) -> str:
        return f"OutputFolder({str(self.path)!r}, fd={self.fd})"

    # -- writing ------------------------------------------------------------------------------------
    def _parts(self, rel: str) -> tuple[list[str], str]:
        parts = [p for p in str(rel).replace("\\", "/").split("/") if p not in ("", ".")]
        if not parts or ".." in parts:
            raise ValueError(f"not a name inside the output folder: {rel!r}")
        return parts[:-1], parts[-1]

    def _open_dir(self, folders: list[str], create: bool) -> int:
        """A descriptor of the subfolder `folders` (created when `create`), each part opened without
        following a link; the caller closes it."""
        fd = os.dup(self.fd)
        try:
            for name in folders:
                if create:
                    try:
                        os.mkdir(name, 0o777, dir_fd=fd)
                    except FileExistsError:
                        pass
                sub = os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = sub
        except BaseException:
            os.close(fd)
            raise
        return fd

    def write_atomic(self, rel: str, write: Callable[[BinaryIO], None]) -> Path:
        """write(f) into a new temporary file beside `rel` (a binary file object), then rename it into
        place: the old file, if any, stays whole until the new one is. Never writes through a link: a
        link at `rel` is replaced, not followed. Returns the path written."""
        folders, name = self._parts(rel)
        target = self.path.joinpath(*folders, name)
        if self.fd is None:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_path_for(target)
            try:
                with open(tmp, "xb") as f:
                    write(f)
                os.replace(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            return target
        if self._path_max and len(os.fsencode(target)) >= self._path_max:
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), str(target))
        dir_fd = self._open_dir(folders, create=True)
        try:
            tmp = temp_path_for(Path(name)).name
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC | _BINARY
            fd = os.open(tmp, flags, 0o666, dir_fd=dir_fd)
            try:
                with os.fdopen(fd, "wb") as f:
                    write(f)
                os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=dir_fd)
                except OSError:
                    pass
                raise
        finally:
            os.close(dir_fd)
        return target

    def write_bytes(self, rel: str, data: bytes) -> Path:
        return self.write_atomic(rel, lambda f: f.write(data))

    def write_text(self, rel: str, text: str) -> Path:
        return self.write_bytes(rel, text.encode("utf-8"))

    def _open_top(self, name: str, flags: int) -> int:
        """A descriptor of the plain file `name` at the top, opened with `flags` (never through a link,
        never blocking on a named pipe); one sentence (BatchLensError) when something else is there."""
        self._parts(name)
        flags |= _NOFOLLOW | _CLOEXEC | _BINARY | _NONBLOCK
        try:
            if self.fd is None:
                if (self.path / name).is_symlink():
                    raise BatchLensError(not_a_file(self.path / name))
                fd = os.open(self.path / name, flags, 0o666)
            else:
                fd = os.open(name, flags, 0o666, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EISDIR, errno.EMLINK, errno.ENXIO):
                raise BatchLensError(not_a_file(self.path / name)) from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise BatchLensError(not_a_file(self.path / name))
        return fd

    def open_append(self, name: str) -> BinaryIO:
        """`name` at the top, opened unbuffered for appending (created if missing, never through a
        link); check_still_ours() then also checks that the name still leads to this file."""
        fd = self._open_top(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        f = os.fdopen(fd, "ab", buffering=0)
        self._watched[name] = f
        return f

    def read_bytes(self, name: str) -> bytes | None:
        """The content of the file `name` at the top; None when there is none. Never follows a link."""
        try:
            fd = self._open_top(name, os.O_RDONLY)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as f:
            return f.read()

    def unlink(self, rel: str) -> None:
        """Remove the file `rel` (a link itself, never what it points to); missing is fine."""
        folders, name = self._parts(rel)
        try:
            if self.fd is None:
                self.path.joinpath(*folders, name).unlink()
                return
            dir_fd = self._open_dir(folders, create=False)
            try:
                os.unlink(name, dir_fd=dir_fd)
            finally:
                os.close(dir_fd)
        except FileNotFoundError:
            pass

    # -- still ours? ---------------------------------------------------------------------------------
    def check_still_ours(self) -> None:
        """Raise BatchLensError with one sentence when the folder was deleted, moved, replaced or made
        read-only since it was opened, or a file held open (open_append) was deleted or replaced. The
        caller stops the run: what is on disk stays, and the run never reports success."""
        problem = self.problem()
        if problem:
            raise BatchLensError(problem)

    def problem(self) -> str | None:
        folder = self.path
        if self.fd is not None:
            if os.fstat(self.fd).st_nlink == 0:
                return (
                    f"The output folder {folder} was deleted during the run, so the run stopped and wrote "
                    "nothing more: run again to start over."
                )
            try:
                now = _identity(os.stat(folder))
            except OSError:
                now = None
            if now != self._identity:
                return (
                    f"The output folder {folder} was moved away or replaced by another folder during the "
                    "run, so the run stopped without writing into whatever is there now: put the folder "
                    "back and run again with --resume, or choose another output folder."
                )
        elif not folder.is_dir():
            return (
                f"The output folder {folder} was deleted or moved away during the run, so the run "
                "stopped: run again to start over."
            )
        for name, f in self._watched.items():
            if f.closed:
                continue
            held = os.fstat(f.fileno())
            try:
                if self.fd is not None:
                    now = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
                else:
                    now = os.stat(folder / name, follow_symlinks=False)
            except FileNotFoundError:
                now = None
            if now is not None and _identity(now) != _identity(held):
                return (
                    f"{folder / name} was replaced by another file, a folder or a link during the run, so "
                    "the run stopped without writing through it: remove what took its place and run "
                    "again with --resume."
                )
            if held.st_nlink == 0 or now is None:
                return (
                    f"{folder / name} was deleted during the run, so the run stopped (every later result "
                    "would have been lost with it): run again with --resume to redo the images it held."
                )
        if not os.access(folder, os.W_OK):
            return (
                f"The output folder {folder} became read-only during the run, so the run stopped and "
                "kept what it had written: make it writable again and run again with --resume."
            )
        return None


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def not_a_file(path: Path) -> str:
    """The sentence for a run's own name that holds a folder, a link or another non-file."""
    kind = "a link" if os.path.islink(path) else "a folder" if os.path.isdir(path) else "not a plain file"
    return (
        f"{path} is {kind}, not a file BatchLens wrote, so BatchLens will not use it: move it out of "
        "the output folder or choose another output folder."
    )
