"""Prepare the next batches while the model works on this one.

Decoding and preprocessing (Pillow and torchvision transforms, which release the GIL for the heavy
parts) run on a small thread pool, at most `depth` batches ahead of the consumer, so the CPU decodes
while the model computes. Results come back in order. Bounded: never more than `depth` prepared
batches wait in memory, and closing the prefetcher (end of run, cancel, error) stops it.

The batches may be a lazy iterable: each is taken from it only when it is submitted, so a batch size
chosen while the run goes (core/autobatch.py) applies to every batch not yet submitted. Nothing is
prepared ahead while the first batch goes through the model: its forward has the cores to itself, so
the first result comes as soon as a plain loop's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Prefetcher(Generic[T, R]):
    """Iterate `prepare(b)` for each b in `batches`, in order, computed up to `depth` batches ahead on
    `workers` threads (default: one per batch ahead), each started with `initializer()`.

    `depth=0` prepares each batch in the consumer's thread when it is asked for (no thread at all),
    so the exact mode is exactly the plain loop. Use as a context manager, or call close().
    """

    def __init__(
        self,
        prepare: Callable[[T], R],
        batches: Iterable[T],
        depth: int = 0,
        workers: int = 0,
        initializer: Callable[[], None] | None = None,
    ):
        if depth < 0:
            raise ValueError("prefetch depth must be >= 0")
        self._prepare = prepare
        self._batches = iter(batches)
        self._depth = depth
        self._pending: deque[Future[R]] = deque()
        self._started = False
        workers = min(depth, workers or depth)
        self._pool = None
        if depth:
            self._pool = ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="batchlens-prefetch", initializer=initializer
            )

    def __iter__(self) -> Iterator[R]:
        return self

    def __next__(self) -> R:
        if self._pool is None:
            if self._depth:  # closed
                raise StopIteration
            return self._prepare(next(self._batches))
        first = self._started is False
        self._started = True
        self._fill(1 if first else self._depth)
        if not self._pending:
            raise StopIteration
        result = self._pending.popleft().result()  # re-raises an error from the worker here
        if not first:  # the first batch's forward has the machine to itself: its result comes first
            self._fill(self._depth)  # keep `depth` batches in flight while the caller works on this one
        return result

    def _fill(self, depth: int) -> None:
        while len(self._pending) < depth:
            batch = next(self._batches, _END)
            if batch is _END:
                return
            self._pending.append(self._pool.submit(self._prepare, batch))

    def close(self) -> None:
        """Drop batches not started yet and wait for the ones being prepared (at most `depth`)."""
        if self._pool is not None:
            for future in self._pending:
                future.cancel()
            self._pending.clear()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._batches = iter(())

    def __enter__(self) -> Prefetcher[T, R]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_END = object()
