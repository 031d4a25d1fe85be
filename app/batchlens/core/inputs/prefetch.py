"""Prepare the next batches while the model works on this one.

Decoding and preprocessing (Pillow and torch, which release the GIL for the heavy parts) run on a
shared pool of decoding threads: every image of a batch at once, up to `depth` batches ahead of the
consumer, so the CPU decodes on all the cores it was given while the model computes. Each batch in
flight has a thread of its own that hands its images to the pool and assembles the batch; results
come back in order. Bounded: never more than `depth` prepared batches wait in memory, and closing
the prefetcher (end of run, cancel, error) stops both pools.

The batches may be a lazy iterable: each is taken from it only when it is submitted, so a batch size
chosen while the run goes (core/run/autobatch.py) applies to every batch not yet submitted. Nothing is
prepared ahead while the first batch goes through the model: its forward has the cores to itself, so
the first result comes as soon as a plain loop's.

Work starts only when the consumer asks for a batch, so `settle()` (wait for the work in flight) gives
the consumer a moment when no decoding thread runs, until its next `next()`: the moment for a change
to process-wide state (torch.fx's tracing replaces `nn.Module.__call__` for every thread while it
traces, and the model's preprocessing is made of nn.Modules: core/run/model_speedups.py).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: `each(fn, items)`: fn applied to every item, the results in the items' order.
Each = Callable[[Callable[[Any], Any], Sequence[Any]], list]


def each_here(fn: Callable[[Any], Any], items: Sequence[Any]) -> list:
    """`Each` in the calling thread, one item after another: the exact mode's (a plain loop's) way."""
    return [fn(item) for item in items]


class Prefetcher(Generic[T, R]):
    """Iterate `prepare(b, each)` for each b in `batches`, in order, computed up to `depth` batches
    ahead. `each` runs a function over a batch's items on `workers` shared decoding threads (default:
    one per batch ahead), each thread started with `initializer()`.

    `depth=0` prepares each batch in the consumer's thread when it is asked for: with `each_here` (no
    thread at all, so the exact mode is exactly the plain loop), or, given `workers`, with its images
    decoded at once on that many threads (in step: a CPU run decodes on every core, then the forward
    runs on every core). Use as a context manager, or call close().
    """

    def __init__(
        self,
        prepare: Callable[[T, Each], R],
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
        self._started = self._closed = False
        self._pool = self._decoders = None
        self._images: set[Future] = set()  # the images handed to the decoding threads, not done yet
        self._images_lock = threading.Lock()
        if depth:
            # One thread per batch in flight: it mostly waits for its images, then stacks them.
            self._pool = ThreadPoolExecutor(depth, "batchlens-prefetch", initializer=initializer)
        if depth or workers:
            self._decoders = ThreadPoolExecutor(workers or depth, "batchlens-decode", initializer=initializer)

    def __iter__(self) -> Iterator[R]:
        return self

    def __next__(self) -> R:
        if self._closed:
            raise StopIteration
        if self._pool is None:  # in the consumer's thread
            batch = next(self._batches)
            # One image (the first batch) decodes right here: handing it to a decoding thread costs
            # more than it saves (a fresh thread's first decode took 5-10 ms against 4.5 here).
            here = self._decoders is None or len(batch) == 1
            return self._prepare(batch, each_here if here else self._each)
        first = self._started is False
        self._started = True
        self._fill(1 if first else self._depth)
        if not self._pending:
            raise StopIteration
        result = self._pending.popleft().result()  # re-raises an error from the worker here
        if not first:  # the first batch's forward has the machine to itself: its result comes first
            self._fill(self._depth)  # keep `depth` batches in flight while the caller works on this one
        return result

    def _each(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list:
        """`Each` on the decoding threads: all the items at once, the results in order."""
        futures = [self._decoders.submit(fn, item) for item in items]
        with self._images_lock:
            self._images.update(futures)
        for future in futures:
            future.add_done_callback(self._image_done)
        try:
            return [future.result() for future in futures]
        finally:  # an error cancels the items not started (the others are waited for by `settle`)
            for future in futures:
                future.cancel()

    def _image_done(self, future: Future) -> None:
        with self._images_lock:
            self._images.discard(future)

    def settle(self) -> None:
        """Wait until no batch is being prepared and no image decoded; none starts before the next
        `next()`. The batches prepared meanwhile are kept for it (nothing is lost, only overlap)."""
        wait(list(self._pending))
        with self._images_lock:
            images = list(self._images)
        wait(images)

    def _fill(self, depth: int) -> None:
        while len(self._pending) < depth:
            batch = next(self._batches, _END)
            if batch is _END:
                return
            self._pending.append(self._pool.submit(self._prepare, batch, self._each))

    def close(self) -> None:
        """Drop the batches and images not started yet, and wait for the images being decoded."""
        self._closed = True
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        if self._decoders is not None:
            # Images first: a batch being prepared then stops at its next image (its error, a
            # cancelled image, is never read) instead of decoding the rest of its images.
            self._decoders.shutdown(wait=False, cancel_futures=True)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._decoders is not None:
            self._decoders.shutdown(wait=True)
        self._pool = self._decoders = None
        self._batches = iter(())

    def __enter__(self) -> Prefetcher[T, R]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_END = object()
