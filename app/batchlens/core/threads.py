"""How many threads a run uses: torch's intra-op threads and the decoding threads, sized together.

torch starts as many intra-op threads as the machine has cores, whatever else is running; on a busy
2-core machine a batch-1 forward with 2 threads measured 783 ms against 133 ms with 1 (its threads
waited on each other behind the decoders and the other work). A run therefore counts the cores it
may use (CPU affinity) and the cores the machine's other work keeps busy (its busy CPU time less
this process's own since the previous run, or the 1-minute load average when BatchLens has just
started). On the CPU a run that batches gives the forward every core: a batched forward's
operations are long, so its threads lose little waiting for each other (resnet18 at batch 4 on this
2-core machine at load average 11-20: 2 threads gave 1.7x the images/s of 1 thread at the same CPU
time per image); a run of one image at a time gives it only the free cores. Decoding gets one
thread per four free cores (at least one; decoding is a quarter of the work or less), beside the
forward. Never more torch threads than torch is set to: the window keeps a core for itself that
way. On a GPU the forward needs little CPU, so every free core but one decodes (the one: the loop
that launches the forward and writes the outputs). The decoding threads are a pool shared by the
batches in flight (core/prefetch.py), each decoding one image at a time, so their number is not
bounded by the prefetch depth: on 16 cores with prefetch 2, 15 images decode at once on a GPU.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil
import torch


@dataclass(frozen=True)
class ThreadPlan:
    torch_threads: int  # torch.set_num_threads for the run
    decode_threads: int  # threads decoding the images of the batches ahead (0: in the loop)
    cores: int  # cores this process may run on
    load: float | None  # cores busy with other work when the run started
    reason: str

    def to_json(self) -> dict:
        return {
            "torch": self.torch_threads,
            "decode": self.decode_threads,
            "cores": self.cores,
            "others_load": None if self.load is None else round(self.load, 2),
            "reason": self.reason,
        }


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS and Windows have no affinity call here
        return os.cpu_count() or 1


def load_average() -> float | None:
    try:
        return psutil.getloadavg()[0]  # (emulated on Windows: 0 at first, then the real figure)
    except (OSError, AttributeError):
        return None


class _OthersMeter:
    """Cores busy with other processes' work since the previous reading: the machine's busy CPU time
    less this process's own, over the same span. The load average alone would count this process's
    own recent work (a previous run, the bench's previous row) as someone else's."""

    MIN_SPAN_S = 1.0  # shorter spans say little: the load average is used instead

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._last = self._read()

    def _read(self) -> tuple[float, float, float]:
        per_cpu = psutil.cpu_times(percpu=True)
        try:  # only the cores this process may run on (a container may see the host's)
            per_cpu = [per_cpu[i] for i in os.sched_getaffinity(0) if i < len(per_cpu)] or per_cpu
        except AttributeError:
            pass
        busy = sum(sum(c) - c.idle - getattr(c, "iowait", 0.0) for c in per_cpu)
        own = self._process.cpu_times()
        return time.monotonic(), busy, own.user + own.system

    def others(self) -> float | None:
        now = self._read()
        (t0, busy0, own0), (t1, busy1, own1) = self._last, now
        self._last = now
        if t1 - t0 < self.MIN_SPAN_S:
            return None
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / (t1 - t0)


_meter = _OthersMeter()  # from the import on: a first run measures over its own start-up


def others_load() -> float | None:
    """How many cores other work keeps busy: measured since the previous run (or since BatchLens
    started), or the 1-minute load average when that span is too short to say."""
    measured = _meter.others()
    return load_average() if measured is None else measured


def plan_threads(
    setting: int | str | None,
    prefetch: int,
    device: torch.device,
    cores: int | None = None,
    load=None,
    batching: bool = True,
) -> ThreadPlan:
    """`setting` "auto" sizes both from the cores and the load; an int fixes torch's threads; None
    keeps torch's own choice (the exact mode: a plain loop's threads). `prefetch` 0 means no
    decoding threads at all. `batching`: the run may put several images in a forward."""
    cores = cores or usable_cores()
    load = others_load() if load is None else load
    others = 0.0 if load is None else load
    free = max(1, min(cores, round(cores - others)))
    if device.type == "cpu":
        # A batched forward's operations are long enough that its threads lose little waiting for
        # each other on a busy machine, so it takes every core; one image at a time takes the free
        # ones. Never more than torch is set to: the window keeps a core for itself that way.
        wanted = cores if batching else free
        torch_threads, decode = min(wanted, torch.get_num_threads()), max(1, free // 4)
    else:  # the forward runs on the device: the CPU's work is decoding and preprocessing
        torch_threads = max(1, min(4, free // 4))
        decode = max(1, free - 1)  # one core for the loop (launches, outputs); torch's threads idle
    decode = decode if prefetch else 0  # (not capped by the depth: every image of a batch decodes at once)
    if setting is None or isinstance(setting, int):
        torch_threads = setting or torch.get_num_threads()
        why = "torch's own choice" if setting is None else "asked for"
        return ThreadPlan(torch_threads, decode, cores, load, why)
    busy = f"other work keeps {others:.1f} busy" if load is not None else "other work unknown"
    return ThreadPlan(torch_threads, decode, cores, load, f"{free} of {cores} cores free ({busy})")


def decode_thread_setup() -> None:
    """Run in each decoding thread: one intra-op thread for its tensor work. Preprocessing's small
    operations (3×224×224) pay more for waking a second thread than they gain from it: converting and
    normalising one image took 35 ms with 2 threads on this 2-core machine, 0.16 ms with 1."""
    torch.set_num_threads(1)


class UseThreads:
    """Set torch's intra-op threads for a run (in the thread that runs the model) and put the earlier
    number back after it.

    torch keeps the number per thread once a thread has run a parallel operation, and takes the
    last number set anywhere for a thread that has not yet: this thread runs one at once, so the
    decoding threads' single thread (`decode_thread_setup`) cannot become the forward's."""

    def __init__(self, plan: ThreadPlan):
        self.plan = plan
        self._before = torch.get_num_threads()

    def __enter__(self) -> ThreadPlan:
        torch.set_num_threads(self.plan.torch_threads)
        torch.ones(1 << 16).add_(1)  # a parallel operation: fixes this thread's number now
        return self.plan

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self._before)  # also torch's default for threads started later
