"""The outsized-image check's header reading, on a thread while the run starts.

Reading every image's header before the first image cost ~75 µs a photo (up to 2 s on a big folder)
before the first result. The headers are now read once the first result is out, beside the
next batches (at most PREFLIGHT_SECONDS of them, as before), and the runner gives the note as soon as
they are all read.
"""

from __future__ import annotations

import threading
import time

from batchlens.core.inputs.images import Candidate, header_size

PREFLIGHT_SECONDS = 2.0  # the most time spent reading image headers for the check


class HeaderScan:
    """(relative path, width, height) of the images' headers, read on a thread from `start()` on."""

    def __init__(self, todo: list[Candidate]):
        self.sizes: list[tuple[str, int, int]] = []
        self._stop = threading.Event()
        self._done = threading.Event()
        reader = threading.Thread(target=self._read, args=(todo,), name="batchlens-headers", daemon=True)
        self._thread = reader
        self._taken = False

    def start(self) -> None:
        """Start reading (once the first result is out: on a small machine the reading would slow the
        first forward down)."""
        if self._thread.ident is None:  # not started yet
            self._thread.start()

    def _read(self, todo: list[Candidate]) -> None:
        deadline = time.perf_counter() + PREFLIGHT_SECONDS
        try:
            for candidate in todo:
                if self._stop.is_set() or time.perf_counter() > deadline:
                    break
                size = header_size(candidate.path)
                if size is not None:
                    self.sizes.append((candidate.rel, *size))
        finally:
            self._done.set()

    def take(self) -> list[tuple[str, int, int]] | None:
        """The sizes once all are read, the first time it is asked after that; else None."""
        if self._taken or not self._done.is_set():
            return None
        self._taken = True
        return self.sizes

    def wait(self) -> None:
        self.start()
        self._done.wait()

    def close(self) -> None:
        """Stop reading (a run that ends early) and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
