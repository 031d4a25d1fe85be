"""Prepare the next batches while the model works on this one.

Decoding and preprocessing (Pillow and torchvision transforms, which release the GIL for the heavy
parts) run on a small thread pool, at most `depth` batches ahead of the consumer, so the CPU decodes
while the model computes. Results come back in order. Bounded: never more than `depth` prepared
batches wait in memory, and closing the prefetcher (end of run, cancel, error) stops it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Prefetcher(Generic[T, R]):
    """Iterate `prepare(b)` for each b in `batches`, in order, computed up to `depth` batches ahead.

    `depth=0` prepares each batch in the consumer's thread when it is asked for (no thread at all),
    so the engine's default path is exactly the plain loop. Use as a context manager, or call close().
    """

    def __init__(self, prepare: Callable[[T], R], batches: Sequence[T], depth: int = 0):
        if depth < 0:
            raise ValueError("prefetch depth must be >= 0")
        self._prepare = prepare
        self._batches = batches
        self._depth = depth
        self._next = 0  # index of the next batch to submit
        self._pending: deque[Future[R]] = deque()
        self._pool = (
            ThreadPoolExecutor(max_workers=depth, thread_name_prefix="batchlens-prefetch") if depth else None
        )

    def __iter__(self) -> Iterator[R]:
        return self

    def __next__(self) -> R:
        if self._pool is None:
            if self._next >= len(self._batches):
                raise StopIteration
            self._next += 1
            return self._prepare(self._batches[self._next - 1])
        self._fill()
        if not self._pending:
            raise StopIteration
        result = self._pending.popleft().result()  # re-raises an error from the worker here
        self._fill()  # keep `depth` batches in flight while the caller works on this one
        return result

    def _fill(self) -> None:
        while len(self._pending) < self._depth and self._next < len(self._batches):
            self._pending.append(self._pool.submit(self._prepare, self._batches[self._next]))
            self._next += 1

    def close(self) -> None:
        """Drop batches not started yet and wait for the ones being prepared (at most `depth`)."""
        if self._pool is not None:
            for future in self._pending:
                future.cancel()
            self._pending.clear()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self._next = len(self._batches)

    def __enter__(self) -> Prefetcher[T, R]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
