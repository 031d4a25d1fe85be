"""Pictures for the results grid, made off the GUI thread and kept in a bounded cache.

The grid asks for a tile only when it paints it, so only what is on screen is ever made. Requests wait
in a small queue served newest first (scrolling quickly past 10,000 tiles leaves at most MAX_PENDING
of them waiting, and what is on screen now is made first); a QThreadPool of a few threads makes them
with the task adapters' own drawing (core/outputs/result_pictures.py). Finished tiles go into a least-recently
used cache with a byte budget, so memory stays flat however long the folder is.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal
from PySide6.QtGui import QImage

from batchlens.core.outputs.result_pictures import ResultPictures, render
from batchlens.core.outputs.results_index import ResultRecord, read_line
from batchlens.ui.previews import to_qimage

CACHE_BYTES = 48 * 2**20  # ~1,200 tiles of 100 × 100 at 2x, ~500 at 150 px: several screens' worth
CACHE_ENTRIES = 4000  # a bound on the count too (failed tiles cost no bytes)
MAX_PENDING = 96  # requests waiting; older ones are dropped (they were scrolled past)


@dataclass(frozen=True)
class Job:
    """What a worker needs to draw one result, all plain data."""

    key: tuple  # (generation, offset) of the record: unique per opened file
    record: ResultRecord
    predictions: Path
    input_dir: Path | None
    output_dir: Path
    task: str | None
    size: int  # longest side of the pictures, in pixels


def input_path(input_dir: Path | None, rel: str) -> Path | None:
    """Where an image's input is: `rel` under the input folder, never outside it (a hand-edited line
    cannot point the browser at other files; links inside the folder are followed as the scan does)."""
    if input_dir is None:
        return None
    normal = os.path.normpath(rel)
    if os.path.isabs(normal) or normal == ".." or normal.startswith(".." + os.sep):
        return None
    return input_dir / normal


def make_pictures(job: Job) -> ResultPictures:
    fields = read_line(job.predictions, job.record)
    path = input_path(job.input_dir, job.record.image)
    pictures = render(fields, path, job.output_dir, job.size, job.task)
    if path is None and job.input_dir is not None:
        return replace(pictures, note=f"{job.record.image} is outside the input folder, so it is not shown.")
    return pictures


def tile_image(job: Job) -> QImage:
    """The grid tile: the result as drawn by its task, else the input; a null QImage when neither."""
    pictures = make_pictures(job)
    picture: Image.Image | None = pictures.result or pictures.input
    if picture is None:
        return QImage()
    picture.thumbnail((job.size, job.size))
    return to_qimage(picture)


class ThumbnailCache:
    """A least-recently-used map of key -> QImage, bounded in bytes and in entries."""

    def __init__(self, max_bytes: int = CACHE_BYTES, max_entries: int = CACHE_ENTRIES):
        self.max_bytes, self.max_entries = max_bytes, max_entries
        self._images: OrderedDict[tuple, QImage] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._images)

    def __contains__(self, key: tuple) -> bool:
        return key in self._images

    def get(self, key: tuple) -> QImage | None:
        image = self._images.get(key)
        if image is not None:
            self._images.move_to_end(key)
        return image

    def put(self, key: tuple, image: QImage) -> None:
        if key in self._images:
            self.bytes -= self._images.pop(key).sizeInBytes()
        self._images[key] = image
        self.bytes += image.sizeInBytes()
        while self._images and (self.bytes > self.max_bytes or len(self._images) > self.max_entries):
            _, old = self._images.popitem(last=False)
            self.bytes -= old.sizeInBytes()

    def clear(self) -> None:
        self._images.clear()
        self.bytes = 0


class _Signals(QObject):
    done = Signal(object, object)  # key, result (QImage for tiles, ResultPictures for large views)


class _Work(QRunnable):
    """Takes the newest waiting request when it runs (not the one that started it)."""

    def __init__(self, loader: ThumbnailLoader):
        super().__init__()
        self.loader = loader

    def run(self) -> None:
        taken = self.loader._take()
        if taken is None:
            return
        job, make = taken
        try:
            result = make(job)
        except Exception as exc:  # noqa: BLE001 - a tile that cannot be drawn must not end the browser
            result = QImage() if make is tile_image else ResultPictures(None, None, f"Cannot show it: {exc}")
        self.loader._finish(job.key, result)


class ThumbnailLoader(QObject):
    """Makes tiles (and large pictures) on a private thread pool; `ready(key, result)` on the GUI thread."""

    ready = Signal(object, object)

    def __init__(self, threads: int | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.pool = QThreadPool(self)
        count = threads or max(1, min(4, QThreadPool.globalInstance().maxThreadCount() - 1))
        self.pool.setMaxThreadCount(count)
        self._lock = threading.Lock()
        self._pending: OrderedDict[tuple, tuple[Job, Callable]] = OrderedDict()
        self._busy: set[tuple] = set()
        # Owned by the loader (deleted with it, on the GUI thread). Kept only by the loader's Python
        # wrapper, it was freed wherever that wrapper's last reference went: a picture thread's
        # _Work drops one, so a GUI-thread QObject could be deleted on a picture thread.
        self._signals = _Signals(self)
        self._signals.done.connect(self._deliver)
        self.made = 0  # pictures made so far (for tests and the count of work done)

    def request(self, job: Job, make: Callable = tile_image) -> None:
        """Ask for `make(job)`; a repeated request for a waiting key only moves it to the front."""
        with self._lock:
            if job.key in self._busy:
                return
            if job.key in self._pending:
                self._pending.move_to_end(job.key)
                return
            self._pending[job.key] = (job, make)
            while len(self._pending) > MAX_PENDING:
                self._pending.popitem(last=False)
        self.pool.start(_Work(self))

    def is_waiting(self, key: tuple) -> bool:
        with self._lock:
            return key in self._pending or key in self._busy

    def cancel_all(self) -> None:
        """Forget every waiting request (a new folder, a restarted file); running ones finish."""
        with self._lock:
            self._pending.clear()

    def shutdown(self, wait_ms: int = 5000) -> None:
        self.cancel_all()
        self.pool.clear()
        self.pool.waitForDone(wait_ms)

    def _take(self) -> tuple[Job, Callable] | None:
        with self._lock:
            if not self._pending:
                return None
            key, taken = self._pending.popitem(last=True)
            self._busy.add(key)
            return taken

    def _finish(self, key: tuple, result) -> None:
        self._signals.done.emit(key, result)  # queued to the GUI thread: _signals lives there

    def _deliver(self, key: tuple, result) -> None:
        with self._lock:
            self._busy.discard(key)
        self.made += 1
        self.ready.emit(key, result)
