"""CPU decoding in worker processes: the expert DataLoader loop's advantage on a machine with many
cores. Python threads decode in parallel only while Pillow holds no GIL; worker processes do not
share one at all.

Each worker runs `load_image` itself (the same guarded open, bomb check, EXIF rotation and mode
conversion as the thread decode), and sends the pixels back as a pickled uint8 numpy array, which
becomes a Pillow image again in this process: the pixels are exactly those of the thread decode
(tests/core/test_process_decode.py). An image that cannot be decoded comes back as its ImageError.

Used by a run only where it pays (`process_workers`): on CUDA, without --gpu-decode, on a machine
with at least PROCESS_DECODE_MIN_CORES usable cores; RunConfig.decode_processes overrides it.
Never checked on a GPU machine yet.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from batchlens.core.errors import BatchLensError
from batchlens.core.formats import DEFAULT_MAX_PIXELS
from batchlens.core.inputs.images import DecodedImage, ImageError, SizeWanted, load_image

#: The fewest usable cores at which a CUDA run decodes in worker processes by default (below it the
#: main process's threads and the forward would compete with the workers for the same cores)
PROCESS_DECODE_MIN_CORES = 8
_ARRAY_MODES = ("RGB", "L", "RGBA")  # modes whose numpy round trip is exact


def process_workers(setting: int | str | None, device_type: str, cores: int, gpu_decode: bool) -> int:
    """How many decoding processes a run uses: `setting` a number fixes it (0: none); "auto" (or None)
    means cores - 2 on CUDA without --gpu-decode with at least PROCESS_DECODE_MIN_CORES cores, else 0."""
    if isinstance(setting, int):
        if setting < 0:
            raise BatchLensError("The number of decoding processes must be 0 or more.")
        return setting
    if device_type != "cuda" or gpu_decode or cores < PROCESS_DECODE_MIN_CORES:
        return 0
    return cores - 2  # one core for the forward's launches, one for the results


def _ping() -> bool:
    return True


def _decode(path: str, mode: str, max_pixels: int | None, reduce_to: SizeWanted | None):
    """In a worker: decode one image; (pixels, mode, size, original_size, note) or the ImageError."""
    try:
        decoded = load_image(Path(path), mode, max_pixels, reduce_to)
    except ImageError as exc:
        return exc
    image = decoded.image
    pixels = np.asarray(image) if image.mode in _ARRAY_MODES else image.tobytes()
    return pixels, image.mode, image.size, decoded.original_size, decoded.note


class ProcessDecoder:
    """A pool of decoding processes; `load` has `load_image`'s signature and results. Safe to call from
    many threads at once (each waits for its own image while the workers decode)."""

    def __init__(self, workers: int):
        # spawn: a fork of a process running torch's and the prefetcher's threads can deadlock
        context = multiprocessing.get_context("spawn")
        self.workers = workers
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
        # Until a worker has started (spawning imports this module anew, and the program's main module:
        # a second or two with torch), images decode here, so the first result does not wait for it
        self._warm = self._pool.submit(_ping)
        self.decoded_in_workers = 0

    def load(
        self,
        path: Path,
        mode: str = "RGB",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        reduce_to: SizeWanted | None = None,
    ) -> DecodedImage:
        if not self._warm.done():
            return load_image(path, mode, max_pixels, reduce_to)
        result = self._pool.submit(_decode, str(path), mode, max_pixels, reduce_to).result()
        self.decoded_in_workers += 1
        if isinstance(result, ImageError):
            raise result
        pixels, image_mode, size, original_size, note = result
        if isinstance(pixels, np.ndarray):
            image = Image.fromarray(pixels, image_mode)
        else:
            image = Image.frombytes(image_mode, size, pixels)
        return DecodedImage(image, original_size, note)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ProcessDecoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
