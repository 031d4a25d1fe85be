"""What the runner watches between batches and says as notes: a crowded device, outsized images,
memory that keeps growing (a leak), out-of-memory recovery, --compile's first batch, the batch size
chosen, and the --max-failures limit. The loop (core/run/runner.py) only asks it at each step."""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Iterator
from pathlib import Path

from batchlens.core.inputs.header_scan import HeaderScan
from batchlens.core.inputs.images import Candidate
from batchlens.core.machine.gpu_processes import read_gpu_processes
from batchlens.core.machine.memory import MemoryProbe, MemorySample
from batchlens.core.models import LoadedModel
from batchlens.core.run.batch_item import Item
from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import RunNote
from batchlens.core.run.pipeline import BatchPipeline
from batchlens.core.run.recovery import (
    image_bytes_per_pixel,
    leak_warning,
    leak_watch_for,
    other_processes_warning,
    outsized_image_warning,
)
from batchlens.core.run.snapshot_recorder import SnapshotRecorder


class RunWatch:
    """The notes of one run, each said once where it should be said once."""

    def __init__(self, cfg: RunConfig, model: LoadedModel, device, probe: MemoryProbe, todo: list[Candidate]):
        self.config = cfg
        self.model = model
        self.device = device
        self.probe = probe
        self.headers = HeaderScan(todo)  # the headers are read beside the first batches
        self.leaks = leak_watch_for(probe.kind)
        self.start_sample: MemorySample | None = None
        self.crowded_warned = False
        self.nvml_read_at = -math.inf  # when NVML's list of GPU processes was last read
        self.compiled: tuple[str, dict] | None = None  # --compile: (sentence, summary entry), once known

    def preflight(self) -> Generator[RunNote, None, None]:
        """Warnings before the first image: a crowded GPU, a snapshot we cannot take."""
        self.start_sample = sample = self.probe.sample()
        if self.probe.kind != "cpu":
            yield from self._crowded_note(sample)
        if note := SnapshotRecorder(self.config.memory_snapshot, self.device, Path()).unavailable_note():
            yield RunNote("info", note)

    def after_batch(self, sample: MemorySample, pipeline: BatchPipeline, sizer) -> Iterator[RunNote]:
        """Once a batch went through the model, before its images' events."""
        for message in sizer.take_notes():
            yield RunNote("info", message, sample)
        for note in pipeline.recovery.take_notes():
            yield RunNote(note.level, note.message, sample, note.kind)
        if self.compiled is None and (compiled := pipeline.compile_report()) is not None:
            self.compiled = compiled
            yield RunNote("warning" if compiled[1]["failed"] else "info", compiled[0], sample)
        yield from self.outsized_note()

    def after_lines(self, index: int, sample: MemorySample) -> Iterator[RunNote]:
        """Once a batch's lines are written: other programs on the device (they may start later), a leak."""
        if self.probe.kind != "cpu" and not self.crowded_warned:
            yield from self._crowded_note(sample)
        rate = self.leaks.add(index, sample)
        if rate is not None:
            yield RunNote("warning", leak_warning(rate, self.leaks.window), sample, "leak")

    def at_end(self) -> Iterator[RunNote]:
        """A run shorter than the header scan: its note still comes."""
        self.headers.wait()
        yield from self.outsized_note()

    def outsized_note(self) -> Iterator[RunNote]:
        """The outsized-image warning, once the header scan has read the headers."""
        sizes = self.headers.take()
        if sizes is None:
            return
        sample = self.start_sample
        free = (
            sample.device_total - sample.device_used
            if sample.device_total is not None and sample.device_used is not None
            else None
        )
        model = self.model
        message = outsized_image_warning(sizes, self.config.max_pixels, free, image_bytes_per_pixel(model))
        if message:
            yield RunNote("warning", message, sample, "outsized_image")

    def _crowded_note(self, sample: MemorySample) -> Iterator[RunNote]:
        """Warn (once a run) when other processes hold much of the device (NVML's list where it answers,
        the same source as the window's panel of GPU processes)."""
        device = self.device
        message = other_processes_warning(sample, device)
        if message and device.type == "cuda":  # NVML is asked only when the cheap estimate says so,
            now = time.monotonic()  # and at most every 10 s (it lists the processes, and names them)
            if now - self.nvml_read_at < 10:
                return
            self.nvml_read_at = now
            report = read_gpu_processes(device.type, device.index or 0)
            message = other_processes_warning(sample, device, report=report)
        if message:
            self.crowded_warned = True
            yield RunNote("warning", message, sample, "other_processes")


def too_many_failures(cfg: RunConfig, counts: dict, items: list[Item], output_dir: Path) -> str | None:
    """The sentence that stops a run once --max-failures images failed, else None."""
    if not cfg.max_failures or counts["error"] < cfg.max_failures:
        return None
    last = next((item.error_message() for item in reversed(items) if not item.ok), None)
    everything = " (every image so far)" if counts["ok"] == 0 else ""
    return (
        f"Stopped after {counts['error']} failed image(s){everything}, the limit set by "
        f"--max-failures {cfg.max_failures}. The last error: {last}. When most images fail, "
        "the model or its settings usually do not fit these images. The results so far are in "
        f"{output_dir / 'predictions.jsonl'}; fix the cause and run again with --resume."
    )
