"""Write a batch's output files (image-to-image outputs, masks) on a few threads at once.

Encoding a PNG (zlib) and writing the file release the GIL, so a batch's files are written side by
side instead of one after another in the loop that runs the model (demo-denoise spent most of its
time there). The loop waits until every file of the batch is in place or has failed, then writes
the batch's predictions.jsonl lines in scan order: a line is only ever written for a file that
exists, and at most one batch of outputs is pending at any time (memory stays flat). A batch of
one image (the exact mode) is written in the loop itself, as a plain loop would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from batchlens.core.machine.machine_load import usable_cores

MAX_WRITERS = 8  # PNG encoding is the work; past 8 threads a batch of 16-64 gains little


def writer_count() -> int:
    """The writers of a run: one per core this process may use, at most MAX_WRITERS. The loop that
    runs the model waits while they write, so they take no core it needs."""
    return max(1, min(MAX_WRITERS, usable_cores()))


class OutputWriters:
    """`each(fn, items)`: fn(item) for every item on the writer threads, every outcome in the items'
    order once all are done; an exception a call raises is returned in its place, never raised, so
    one image's failure never leaves another image's write running unseen. Call close() at the end
    of the run (it waits for no write: each() has already waited for its batch)."""

    def __init__(self, threads: int | None = None):
        self.threads = writer_count() if threads is None else max(1, threads)
        self._pool: ThreadPoolExecutor | None = None

    def each(self, fn: Callable[[Any], Any], items: Sequence[Any], here: bool = False) -> list:
        """`here`: in the caller's thread (nothing heavy to write: handing tiny calls to threads
        cost 50-90 µs an image in a classification run)."""
        if here or self.threads == 1 or len(items) <= 1:
            return [_outcome(fn, item) for item in items]
        if self._pool is None:  # started on the first batch that has files to write
            self._pool = ThreadPoolExecutor(self.threads, "batchlens-write")
        futures = [self._pool.submit(_outcome, fn, item) for item in items]
        # Every future is waited for, even when the caller is interrupted while it waits: a file of
        # this batch is never still being written once `each` has returned or raised.
        try:
            return [future.result() for future in futures]
        finally:
            for future in futures:
                future.cancel()  # (an interruption: the writes not started yet are dropped)
            for future in futures:
                if not future.cancelled():
                    future.exception()  # waits for it

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _outcome(fn: Callable[[Any], Any], item: Any) -> Any:
    try:
        return fn(item)
    except Exception as exc:
        return exc
