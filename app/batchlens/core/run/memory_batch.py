"""`--batch-size auto` on a CUDA device: the batch size from the GPU's memory, not from timing sizes
one after another as on the CPU (core/run/autobatch.py's BatchSizer, which on a GPU spends thousands
of images doubling from 1).

The run's first batch is one image (the first result comes as soon as a plain loop's), its second a
probe batch of PROBE_BATCH images. The memory's peak after each gives the footprint of one more
image: (peak after the probe batch - peak after the first) / (PROBE_BATCH - 1). The size is then the
largest power of two whose images fit in the memory that is free for this run, halved for safety
(prefetched batches, the allocator's fragmentation): free = MEMORY_HEADROOM of the device, less what
other processes hold, less the run's peak at one image. At most MAX_AUTO_BATCH (256). An
out-of-memory batch still halves it, as with the measured sizes.

Not yet checked on a GPU (docs/gpu.md); tests/core/test_memory_batch.py runs it with fake figures
and on the CPU with the process's memory standing in for the device's.
"""

from __future__ import annotations

from batchlens.core.machine.memory import MemorySample, format_bytes
from batchlens.core.run.autobatch import MAX_AUTO_BATCH, MEMORY_HEADROOM, BatchSizer, _Figures

PROBE_BATCH = 8
SAFETY = 2  # the size's images may take up to this many times the measured footprint


def others_bytes(sample: MemorySample) -> int:
    """What other processes hold on the device (its used memory less this process's reserved)."""
    if sample.device_used is None:
        return 0
    return max(0, sample.device_used - sample.reserved)


def size_for(free_bytes: float, per_image_bytes: float, ceiling: int) -> int:
    """The largest power of two up to `ceiling` whose images fit `free_bytes` with SAFETY."""
    fits = int(free_bytes // max(1.0, per_image_bytes * SAFETY))
    size = 1
    while size * 2 <= min(fits, ceiling, MAX_AUTO_BATCH):
        size *= 2
    return size


class MemoryBatchSizer(BatchSizer):
    """A BatchSizer whose auto size comes from the memory one more image takes (see the module)."""

    def __init__(self, max_batch: int, memory_limit: int, others: int = 0, probe_batch: int = PROBE_BATCH):
        super().__init__("auto", max_batch, memory_limit)
        self.others = others
        self.probe_batch = max(2, min(probe_batch, self.ceiling))
        self.per_image_bytes: float | None = None
        self.reason = "measuring the memory one image takes"

    def next_size(self) -> int:
        if not self._started:
            self._started = True
            if self.ceiling >= 2:
                self.trying = self.probe_batch  # the batches prepared before the first one's peak is in
            return 1
        return self.trying or self.size

    def record(
        self,
        size: int,
        seconds: float,
        cpu_seconds: float,
        peak_bytes: int = 0,
        input_shape: tuple | None = None,
        out_of_memory: bool = False,
        one_at_a_time: str | None = None,
    ) -> None:
        if out_of_memory or one_at_a_time or self.per_image_bytes is not None or self.ceiling < 2:
            self.trying = None
            super().record(size, seconds, cpu_seconds, peak_bytes, input_shape, out_of_memory, one_at_a_time)
            return
        self.images += size
        figures = self.figures.setdefault(size, _Figures())  # shown in summary.json, not deciding
        figures.wall.append(seconds / size)
        figures.cpu.append(cpu_seconds / size)
        if size == 1 and self._base_peak is None:
            self._base_peak = peak_bytes
        elif size == self.probe_batch and self._base_peak is not None and peak_bytes:
            self.per_image_bytes = max(1.0, (peak_bytes - self._base_peak) / (size - 1))
            free = MEMORY_HEADROOM * self.memory_limit - self.others - self._base_peak
            self.trying = None
            chosen = size_for(free, self.per_image_bytes, self.ceiling)
            self._set(
                chosen,
                f"{format_bytes(self.per_image_bytes)} an image on the device, {format_bytes(max(0, free))} "
                f"free for the run (x{SAFETY} to spare)",
            )
            self._settle()

    def to_json(self) -> dict:
        out = super().to_json()
        out["per_image_bytes"] = round(self.per_image_bytes) if self.per_image_bytes else None
        out["from_memory"] = True
        return out
