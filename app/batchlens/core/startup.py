"""Once per process, after the heavy imports: take what they created out of the garbage collector's way.

Importing torch and torchvision creates about 340,000 Python objects (the window's imports about
390,000). They live as long as the process, but Python's cyclic garbage collector walks all of them
in every full collection: a 150-190 ms pause with the GIL held (the run and the window both stop),
which came about once every 500 images in a run here. `gc.freeze()` moves them to a generation the
collector never visits; reference counting still frees them as usual.
"""

from __future__ import annotations

import gc

_frozen = False


def freeze_imported_objects() -> None:
    """Call after the imports and before any model is loaded: a frozen object that later becomes
    unreachable inside a reference cycle is never reclaimed, which is harmless for modules and
    their globals but would keep a discarded model's weights. Only the first call acts."""
    global _frozen
    if _frozen:
        return
    _frozen = True
    gc.collect()  # what is already garbage is freed, not frozen
    gc.freeze()
