"""Which batch sizer a run gets: a fixed size, the probing sizer of `--batch-size auto`
(core/run/autobatch.py), or on CUDA the one that sizes from the GPU's memory (core/run/memory_batch.py).
Its own module so that neither sizer imports the other."""

from __future__ import annotations

from collections.abc import Sequence

from batchlens.core.machine.memory import MemoryProbe
from batchlens.core.models import LoadedModel
from batchlens.core.run.autobatch import (
    MAX_AUTO_BATCH,
    MAX_AUTO_BATCH_CPU,
    BatchSizer,
    memory_limit,
    memory_sized,
)
from batchlens.core.run.inference import fixed_batch_size
from batchlens.core.run.memory_batch import MemoryBatchSizer, others_bytes


def sizer_for_run(
    cfg, model: LoadedModel, channels_last: bool, probe: MemoryProbe, todo: Sequence
) -> BatchSizer:
    """The batch sizes of a run of `cfg` (a RunConfig) with `model`."""
    requested = cfg.batch_size
    if requested != 1 and fixed_batch_size(model.module) == 1:
        return BatchSizer(1, one_at_a_time="the model was exported for a batch of exactly 1 image")
    if requested != "auto":
        return BatchSizer(requested)
    if model.takes_list:
        why = "a batch pads a detection model's images to one size, which can move its boxes"
        return BatchSizer(1, why_fixed=why)
    info, device = model.info, model.device
    if memory_sized(device, probe):  # CUDA: from the GPU's memory (core/run/memory_batch.py)
        return MemoryBatchSizer(
            max(1, min(len(todo), MAX_AUTO_BATCH)), memory_limit(device, probe), others_bytes(probe.sample())
        )
    key = f"{info.id}|{info.size_bytes}|{device}|{cfg.precision}|cl={channels_last}|fast={cfg.fast_decode}"
    largest = min(len(todo), MAX_AUTO_BATCH_CPU if device.type == "cpu" else MAX_AUTO_BATCH)
    return BatchSizer("auto", max(1, largest), memory_limit(device, probe), key)
