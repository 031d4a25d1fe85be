"""`--batch-size auto`: the batch size that runs fastest without running out of memory.

A local run measures on its own batches (`BatchSizer`): the first batch is one image, so the first
result comes as soon as a plain loop's; then the size doubles while a larger batch proves faster per
image, every result counting (nothing is computed twice to measure). Each batch is timed from the
forward to its written outputs (decoding runs ahead on other threads, whatever the batch size), in
wall time and in the process's CPU time per image;
a larger size wins when it is clearly faster, or as fast with clearly less CPU per image (on a busy
machine wall time is noisy, CPU time much less). A size that looked slower gets a second batch
before it is turned down (its first batch pays one-time set-up), and is tried again later in the
run, so one noisy figure cannot pin a run to a small size. Out of memory (or memory near the
device's limit) caps the size; a model that takes one image at a time caps it at 1. The size a run
settles on is remembered per model, device and input size (core/run/tuning_cache.py) and the next run
goes to it straight after its first image.

`find_batch_size` is the older stand-alone probe (1, 2, 4, ... copies of one image, before the run),
which cluster workers still use.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import psutil
import torch

from batchlens.core.machine.memory import MemoryProbe, format_bytes
from batchlens.core.models import LoadedModel
from batchlens.core.run.inference import describe_error, infer
from batchlens.core.run.tuning_cache import remember_batch_size, remembered_batch_size

MAX_AUTO_BATCH = 256
# On the CPU a batch past 16 gains little and holds the process's RAM up (resnet18 here: batch 32 was
# 14 % faster per image than 16, at 0.3 GiB more peak RSS than the expert DataLoader loop's 1.2 GiB)
MAX_AUTO_BATCH_CPU = 16
MIN_GAIN = 1.05  # a larger batch must be at least 5 % faster to be worth its memory
MEMORY_HEADROOM = 0.85  # stop when a trial used more than this share of the device's memory
TIME_BUDGET_S = 20.0  # tuning is a small fraction of a long run; never more than this
TRIAL_MIN_S = 0.3  # time each size for at least this long (after one warm-up forward)
RETRY_IMAGES = 64  # once settled, try the next larger size again after this many images (then 2x)
RECENT = 3  # a size's figure is the best of its last few batches (noise only ever adds time)


@dataclass(frozen=True)
class BatchTrial:
    batch_size: int
    images_per_second: float | None  # None: this size failed
    peak_bytes: int
    error: str | None = None


@dataclass(frozen=True)
class BatchChoice:
    batch_size: int
    reason: str  # why the search stopped
    trials: tuple[BatchTrial, ...]

    @property
    def one_at_a_time(self) -> str | None:
        """Why the model takes one image at a time, when a batch of several failed where one ran."""
        if self.batch_size == 1 and any(t.error and t.error != "out of memory" for t in self.trials[1:]):
            return self.reason
        return None

    def message(self) -> str:
        tried = ", ".join(
            f"{t.batch_size}: {t.images_per_second:.1f}/s"
            if t.images_per_second
            else f"{t.batch_size}: failed"
            for t in self.trials
        )
        return f"Batch size auto: chose {self.batch_size} ({self.reason}; images/s by size: {tried})."

    def to_json(self) -> dict:
        return {
            "chosen": self.batch_size,
            "reason": self.reason,
            "trials": [
                {
                    "batch_size": t.batch_size,
                    "images_per_second": round(t.images_per_second, 3) if t.images_per_second else None,
                    "peak_bytes": t.peak_bytes,
                    "error": t.error,
                }
                for t in self.trials
            ],
        }


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _free(device: torch.device, collect: bool) -> None:
    if collect:  # an out-of-memory traceback holds frames (and their tensors) in reference cycles
        gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def memory_limit(device: torch.device, probe: MemoryProbe) -> int:
    """What a run may fill: the device's memory, or on the CPU this process's RAM plus what is free."""
    if device.type == "cpu":
        return probe.sample().allocated + psutil.virtual_memory().available
    total = probe.sample().device_total
    return total or 0


def find_batch_size(
    model: LoadedModel,
    sample: torch.Tensor,
    probe: MemoryProbe,
    max_batch: int = MAX_AUTO_BATCH,
    precision: str = "fp32",
    channels_last: bool = False,
    time_budget_s: float = TIME_BUDGET_S,
) -> BatchChoice:
    """Time forwards of `sample` (one preprocessed image) repeated 1, 2, 4, ... times; keep the
    fastest size, where a larger size must be at least 5 % faster than the best smaller one."""
    device = model.device
    limit = memory_limit(device, probe)
    max_batch = max(1, min(max_batch, MAX_AUTO_BATCH))
    trials: list[BatchTrial] = []
    best: BatchTrial | None = None
    deadline = time.perf_counter() + time_budget_s
    size, reason = 1, f"reached the largest size worth trying ({max_batch})"
    while size <= max_batch:
        probe.reset_peak()
        try:
            if getattr(model, "takes_list", False):  # detection models take a list of images
                batch = [sample] * size
            else:
                batch = sample.unsqueeze(0).expand(size, *sample.shape).contiguous()
            infer(model.module, batch, device, precision, channels_last)  # warm-up (allocator, kernels)
            count, start = 0, time.perf_counter()
            while count < 1 or time.perf_counter() - start < TRIAL_MIN_S:
                infer(model.module, batch, device, precision, channels_last)
                count += 1
            seconds = time.perf_counter() - start
            trial = BatchTrial(size, size * count / seconds, probe.sample().peak)
        except Exception as exc:  # keep only words: the traceback holds the failed forward's tensors
            error = "out of memory" if is_out_of_memory(exc) else describe_error(exc)
            trial = BatchTrial(size, None, probe.sample().peak, error)
        finally:
            batch = None
        _free(device, collect=trial.error is not None)
        trials.append(trial)
        if trial.error == "out of memory":
            reason = f"batch {size} ran out of memory"
            break
        if trial.error and size == 1:  # each image of the run will say whether the model fails on it
            reason = f"the model failed on the first image ({_short(trial.error)})"
            break
        if trial.error:
            reason = f"the model takes one image at a time (batch {size} failed: {_short(trial.error)})"
            break
        if best is not None and trial.images_per_second < best.images_per_second * MIN_GAIN:
            reason = f"batch {size} was not {MIN_GAIN - 1:.0%} faster than batch {best.batch_size}"
            break  # not worth its memory: keep the smaller size
        best = trial if best is None or trial.images_per_second > best.images_per_second else best
        if limit and trial.peak_bytes > MEMORY_HEADROOM * limit:
            reason = f"batch {size} used {format_bytes(trial.peak_bytes)} of {format_bytes(limit)}"
            break
        if time.perf_counter() > deadline:
            reason = f"tuning time budget of {time_budget_s:.0f} s spent"
            break
        size *= 2
    return BatchChoice(best.batch_size if best else 1, reason, tuple(trials))


def choose_batch_size(pipeline, todo: list, probe: MemoryProbe) -> BatchChoice:
    """Pick the batch size for a run over `todo` with `pipeline` (a BatchPipeline), measured on the
    first image of the folder that can be prepared."""
    for candidate in todo[:8]:
        prepared = pipeline.prepare([candidate])
        item = prepared.items[0]
        if item.tensor is not None:
            sample = item.tensor.clone()
            del prepared, item
            return find_batch_size(
                pipeline.model,
                sample,
                probe,
                max_batch=len(todo),
                precision=pipeline.precision,
                channels_last=pipeline.channels_last,
            )
    return BatchChoice(1, "no image could be prepared to measure with", ())


@dataclass
class _Figures:
    """Seconds per image of each batch run at one size: wall time and the process's CPU time."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def best(self) -> tuple[float, float]:
        return min(self.wall[-RECENT:]), min(self.cpu[-RECENT:])


class BatchSizer:
    """The size of each next batch of a run: fixed, or (`"auto"`) measured on the run's own batches.

    The runner takes batches from `batches(todo)` (lazily, so a new size applies to every batch not
    yet started) and reports each finished batch to `record()`."""

    def __init__(
        self,
        requested: int | str,
        max_batch: int = MAX_AUTO_BATCH,
        memory_limit: int = 0,
        cache_key: str | None = None,
        why_fixed: str | None = None,
        one_at_a_time: str | None = None,
    ):
        self.one_at_a_time = one_at_a_time  # why the model takes one image at a time, once known
        if one_at_a_time:
            requested, why_fixed = 1, f"the model takes one image at a time ({one_at_a_time})"
        self.auto = requested == "auto"
        self.size = 1 if self.auto else int(requested)
        self.ceiling = max(1, min(max_batch, MAX_AUTO_BATCH)) if self.auto else self.size
        self.memory_limit = memory_limit
        self.cache_key = cache_key  # model, device and settings; the input size is added when known
        self.trying: int | None = None  # a larger size being measured against `size`
        self._started = False  # the first batch is one image; batches prepared meanwhile try 2
        self.reason = why_fixed or ("asked for" if not self.auto else "measuring")
        self.remembered: int | None = None
        self.figures: dict[int, _Figures] = {}
        self.changes: list[tuple[int, int]] = []  # (images done, new size)
        self.images = 0
        self._retry_at: int | None = None
        self._retry_every = RETRY_IMAGES
        self._base_peak: int | None = None
        self._notes: list[str] = []
        self._settled_once = False

    # -- what the runner asks -------------------------------------------------------------------
    def next_size(self) -> int:
        if not self._started:
            self._started = True
            if self.auto and self.ceiling >= 2:
                self.trying = 2  # for the batches prefetched before the first one's figures are in
                return 1
        return self.trying or self.size

    def batches(self, todo: Sequence) -> Iterator[list]:
        start = 0
        while start < len(todo):
            count = self.next_size()
            yield list(todo[start : start + count])
            start += count

    def take_notes(self) -> list[str]:
        notes, self._notes = self._notes, []
        return notes

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
        """One finished batch of `size` images: its seconds from the forward to the written results,
        the process's CPU seconds over the same span, and memory's peak so far."""
        first = self.images == 0
        self.images += size
        self._started = True
        if one_at_a_time and not self.one_at_a_time:
            self.one_at_a_time, self.ceiling, self.trying = one_at_a_time, 1, None
            self._notes.append(f"The model takes one image at a time ({one_at_a_time}): going on at batch 1.")
            self._set(1, f"the model takes one image at a time ({one_at_a_time})")
            return
        if not self.auto or size < 1:
            return
        if out_of_memory:
            self.ceiling, self.trying = max(1, size // 2), None
            self._set(min(self.size, self.ceiling), f"batch {size} ran out of memory")
            return
        if size & (size - 1) and size != self.remembered:
            return  # the folder's last, partial batch: not a size being measured
        self.figures.setdefault(size, _Figures())
        self.figures[size].wall.append(seconds / size)
        self.figures[size].cpu.append(cpu_seconds / size)
        if first:
            self._start(input_shape)
        elif size == self.trying or (self.trying is None and size == self.size * 2 <= self.ceiling):
            self._compare(size)  # (also a batch of a size just turned down, prepared before that)
        elif self.trying is None:
            if self._retry_at is not None and self.images >= self._retry_at and self.size * 2 <= self.ceiling:
                self.trying = self.size * 2  # measure again: the machine's load may have changed
        self._check_memory(size, peak_bytes)

    # -- the decisions --------------------------------------------------------------------------
    def _start(self, input_shape: tuple | None) -> None:
        if self.cache_key and input_shape:
            self.cache_key = f"{self.cache_key}|input={'x'.join(map(str, input_shape))}"
            self.remembered = remembered_batch_size(self.cache_key)
        if self.remembered and self.remembered > 1:
            self.trying = None
            self._set(min(self.remembered, self.ceiling), "remembered from an earlier run")
            # An earlier run may have settled there on one noisy figure: once the size has run twice,
            # the next size up is tried (not only 64 images later, which a short run never reaches).
            self._retry_at = self.images + 2 * self.size
        elif self.ceiling >= 2:
            self.trying = 2

    def _compare(self, large: int) -> None:
        small = self.size
        if small not in self.figures:  # nothing measured at the smaller size to compare with
            self._set(large, f"batch {small} was not measured")
            self.trying = large * 2 if large * 2 <= self.ceiling else None
            return
        wall_small, cpu_small = self.figures[small].best()
        wall_large, cpu_large = self.figures[large].best()
        faster = wall_large * MIN_GAIN <= wall_small
        leaner = wall_large <= wall_small * MIN_GAIN and cpu_large * MIN_GAIN <= cpu_small
        if faster or leaner:
            how = "faster" if faster else "as fast with less CPU time"
            self._set(large, f"batch {large} was {how} per image than batch {small}")
            self.trying = large * 2 if large * 2 <= self.ceiling else None
            if self.trying is None:
                self._settle(f"batch {large} is the largest allowed" if large >= MAX_AUTO_BATCH else None)
            return
        if len(self.figures[large].wall) < 2 or self.trying != large:
            return  # a size's first batch pays one-time set-up: give it a second before judging
        self.trying = None
        self.reason = f"batch {large} was not {MIN_GAIN - 1:.0%} faster per image than batch {small}"
        self._settle()

    def _settle(self, reason: str | None = None) -> None:
        if reason:
            self.reason = reason
        self._retry_at = self.images + self._retry_every
        self._retry_every *= 2
        if not self._settled_once:
            self._settled_once = True
            self._notes.append(self.message())

    def _set(self, size: int, reason: str) -> None:
        if size != self.size:
            self.changes.append((self.images, size))
            if self._settled_once:
                self._notes.append(f"Batch size auto: now {size} ({reason}).")
        self.size, self.reason = size, reason

    def _check_memory(self, size: int, peak: int) -> None:
        """Cap the size where the next doubling would pass the memory headroom (the growth per image
        is measured from the batches so far)."""
        if not self.memory_limit or not peak:
            return
        if self._base_peak is None or size == 1:
            self._base_peak = peak if self._base_peak is None else min(self._base_peak, peak)
        per_image = max(0, peak - self._base_peak) / max(1, size - 1)
        if peak + per_image * size > MEMORY_HEADROOM * self.memory_limit and size < self.ceiling:
            self.ceiling = size
            if self.trying and self.trying > size:
                self.trying = None
            limit = format_bytes(self.memory_limit)
            self._settle(f"batch {size * 2} would pass {MEMORY_HEADROOM:.0%} of {limit}")

    # -- what the run reports -------------------------------------------------------------------
    def images_per_second(self, size: int) -> float | None:
        figures = self.figures.get(size)
        return 1 / figures.best()[0] if figures and figures.best()[0] > 0 else None

    def message(self) -> str:
        rates = ", ".join(
            f"{size}: {rate:.1f}/s" for size in sorted(self.figures) if (rate := self.images_per_second(size))
        )
        return f"Batch size auto: {self.size} ({self.reason}; images/s by size so far: {rates or 'none'})."

    def remember(self) -> None:
        """Keep the size for the next run: the run's size when it measured it (two batches or more),
        else the largest smaller size it did measure; when every doubling won on its first batch (a
        short run decoding by turns measures each size once), the size the run went on at."""
        if not (self.auto and self.cache_key and "|input=" in self.cache_key):
            return
        measured = [size for size, f in self.figures.items() if len(f.wall) >= 2 and size <= self.size]
        if not measured and self.size > 1 and self.size in self.figures:
            measured = [self.size]
        if measured:
            size = max(measured)
            rate = self.images_per_second(size)
            remember_batch_size(self.cache_key, size, round(rate, 3) if rate else None)

    def to_json(self) -> dict:
        return {
            "chosen": self.size,
            "reason": self.reason,
            "remembered": self.remembered,
            "changes": [{"after_images": images, "batch_size": size} for images, size in self.changes],
            "sizes": [
                {
                    "batch_size": size,
                    "batches": len(f.wall),
                    "images_per_second": round(1 / f.best()[0], 3) if f.best()[0] > 0 else None,
                    "cpu_ms_per_image": round(1000 * f.best()[1], 2),
                }
                for size, f in sorted(self.figures.items())
            ],
        }


def memory_sized(device: torch.device, probe: MemoryProbe) -> bool:
    """Whether `--batch-size auto` takes its size from the device's memory (CUDA) rather than from
    timing sizes one after another."""
    return device.type == "cuda" and probe.kind == "cuda"
