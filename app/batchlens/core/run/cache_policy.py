"""When a run hands the allocator's cached device memory back to the driver (`--empty-cache`).

PyTorch keeps freed GPU blocks in its cache so the next batch gets them without a `cudaMalloc`.
`torch.cuda.empty_cache()` returns them to the driver (other programs can then use them), and the next
allocation pays for `cudaMalloc` again. So emptying is a trade: memory for other programs against
time. The policies:

  never        keep the cache (the default: the fastest, and memory stays flat anyway because every
               batch frees what it allocated, so the cache does not grow)
  image        after every batch (every image at batch size 1), as the classic advice says
  every:N      after every N images
  reserved:F   when reserved memory is over the share F (0-1) of the device, to leave room for others

The window's "Clear cache" button is separate: it empties the cache once, when the user asks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from batchlens.core.errors import BatchLensError
from batchlens.core.machine.memory import MemorySample

CHOICES = "never, image, every:N (N images) or reserved:F (a share of the device, e.g. reserved:0.5)"


@dataclass(frozen=True)
class CachePolicy:
    kind: str = "never"  # "never" | "image" | "every" | "reserved"
    every: int = 0
    share: float = 0.0

    @classmethod
    def parse(cls, text: str) -> CachePolicy:
        """'never', 'image', 'every:N' or 'reserved:F'; BatchLensError with one sentence otherwise."""
        name, _, value = str(text).strip().lower().partition(":")
        try:
            if name in ("never", "image") and not value:
                return cls(name)
            if name == "every" and int(value) >= 1:
                return cls("every", every=int(value))
            if name == "reserved" and 0 < float(value) < 1:
                return cls("reserved", share=float(value))
        except ValueError:
            pass
        raise BatchLensError(f"Unknown cache policy {text!r}: use {CHOICES}.")

    def __str__(self) -> str:
        if self.kind == "every":
            return f"every:{self.every}"
        if self.kind == "reserved":
            return f"reserved:{self.share:g}"
        return self.kind

    def due(self, done_before: int, done_after: int, sample: MemorySample) -> bool:
        """Whether to empty the cache after a batch took the run from `done_before` to `done_after`
        images, given the memory sample taken after that batch."""
        if self.kind == "image":
            return True
        if self.kind == "every":
            return done_after // self.every > done_before // self.every
        if self.kind == "reserved":
            return bool(sample.device_total) and sample.reserved > self.share * sample.device_total
        return False


def empty_device_cache(device: torch.device) -> None:
    """Hand the allocator's unused cached blocks back to the driver (no garbage collection: nothing the
    engine keeps is cyclic, and gc.collect would cost milliseconds per batch). A no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
    elif device.type == "xpu":
        torch.xpu.empty_cache()
