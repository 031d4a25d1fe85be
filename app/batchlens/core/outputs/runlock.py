"""One run at a time in an output folder: a lock file held for the whole run.

The lock file (`.batchlens.lock`) holds the holder's PID, host and start time. It is created
atomically (a hard link of a finished temporary file, or O_EXCL where links are not supported), so a
second run sees either no lock or a whole one. A lock whose process is gone (same host, PID dead or
reused by a younger process) is stale and taken over; a lock from another host is honoured, since
its process cannot be checked from here. A lock that is a folder or a link is refused with one
sentence (never followed, never removed); one that holds no usable PID (garbage, -1) is unreadable:
honoured while young, taken over once old."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

from batchlens.core.errors import BatchLensError
from batchlens.core.files import not_a_file, temp_path_for

log = logging.getLogger(__name__)

LOCK_NAME = ".batchlens.lock"
_held: list[RunLock] = []  # locks this process holds, released by release_all() on a hard stop


def _alive(pid: int, started: float | None) -> bool:
    """Whether `pid` runs here and is not a younger process that reused the number."""
    try:
        process = psutil.Process(pid)
        created = process.create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True
    return started is None or created <= started + 1.0


class RunLock:
    """`with RunLock(folder):` holds the folder for this process, or raises BatchLensError."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        for _ in range(3):
            if self._create(json.dumps(me) + "\n"):
                self.held = True
                _held.append(self)
                return
            holder = self._read()
            if holder is not None and not self._stale(holder):
                raise BatchLensError(self._busy(holder))
            log.warning("Taking over the stale lock %s (%s)", self.path, holder)
            self.path.unlink(missing_ok=True)
        raise BatchLensError(f"Could not take the lock {self.path}; another run keeps taking it.")

    def _create(self, text: str) -> bool:
        tmp = temp_path_for(self.path)
        try:
            tmp.write_text(text, encoding="utf-8")
            try:
                os.link(tmp, self.path)
                return True
            except FileExistsError:
                return False
            except OSError:  # no hard links here (some network and FAT drives)
                try:
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                return True
        finally:
            tmp.unlink(missing_ok=True)

    def _read(self) -> dict | None:
        """The holder's details; None when the lock vanished meanwhile. Unreadable: an empty dict. A
        folder or a link in the lock's place: BatchLensError (never read through, never removed)."""
        try:
            if self.path.is_symlink() or (self.path.exists() and not self.path.is_file()):
                raise BatchLensError(not_a_file(self.path))
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "rb") as f:
                data = json.loads(f.read(1 << 16).decode("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        pid = data.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            return {}  # no process could hold it: unreadable (stale once old)
        return data

    def _stale(self, holder: dict) -> bool:
        if not holder:  # unreadable: stale once old enough that no writer can still be filling it
            try:
                return time.time() - self.path.stat().st_mtime > 10
            except OSError:
                return True
        pid, started = holder.get("pid"), holder.get("started")
        if holder.get("host") != socket.gethostname() or not isinstance(pid, int):
            return False
        return not _alive(pid, started if isinstance(started, (int, float)) else None)

    def _busy(self, holder: dict) -> str:
        folder = self.path.parent
        if not holder:
            return f"The output folder {folder} is in use by another BatchLens run (lock {self.path})."
        where = holder.get("host", "?")
        return (
            f"The output folder {folder} is in use by another BatchLens run (process {holder.get('pid')} "
            f"on {where}, since {holder.get('started_at', '?')}): wait for it to finish or choose another "
            f"folder (if no such run exists any more, delete {self.path})."
        )

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self in _held:
            _held.remove(self)
        try:
            holder = self._read()
            if holder and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
        except (OSError, BatchLensError) as exc:  # replaced or gone meanwhile: not ours to remove
            log.warning("Left the lock %s alone: %s", self.path, exc)


def release_all() -> None:
    """Release every lock of this process (before a hard exit on a second Ctrl+C)."""
    for lock in list(_held):
        lock.release()
