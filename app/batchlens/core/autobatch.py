"""`--batch-size auto`: find the batch size that runs fastest without running out of memory.

Like accelerate's `find_executable_batch_size`, but growing instead of shrinking: try 1, 2, 4, ...
with a real preprocessed image from the folder, through the same `infer()` the run uses, and stop
when the device runs out of memory, memory nears the device's limit, the speed stops improving, or
the time budget is spent. The fastest size tried wins.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

import psutil
import torch

from batchlens.core.inference import describe_error, infer
from batchlens.core.memory import MemoryProbe, format_bytes
from batchlens.core.models import LoadedModel

MAX_AUTO_BATCH = 256
MIN_GAIN = 1.05  # a larger batch must be at least 5 % faster to be worth its memory
MEMORY_HEADROOM = 0.85  # stop when a trial used more than this share of the device's memory
TIME_BUDGET_S = 20.0  # tuning is a small fraction of a long run; never more than this
TRIAL_MIN_S = 0.3  # time each size for at least this long (after one warm-up forward)


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


def _memory_limit(device: torch.device, probe: MemoryProbe) -> int:
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
    limit = _memory_limit(device, probe)
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
