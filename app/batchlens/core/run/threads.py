"""How many threads a run uses: torch's intra-op threads and the decoding threads, sized together.

torch starts as many intra-op threads as the machine has cores, whatever else is running. A run
counts the cores it may use (CPU affinity) and the cores other work keeps busy (core/machine/machine_load.py:
the machine's busy CPU time less this process's own since the previous run).

On the CPU of a quiet machine a batching run takes turns: each batch's images decode at once on a
thread per core, then the forward runs on every core. Decoding beside the forward instead (batches
prepared ahead) puts three threads on two cores: the decoding thread keeps taking a core from the
forward's threads in mid-operation, and they spin waiting for each other. resnet18 on this 2-core
machine, paired with the expert DataLoader loop (2026-11-27, load from other work about 0):
1600x1200 photos 33-34 images/s and 57 ms of CPU an image by turns, against 27-28 images/s and
67-68 ms beside (the expert loop 27); 640x480 photos 41-46 against 41-44 images/s.

On a busy machine (other work keeps half a core or more busy) the forward gets the free cores and
decoding runs beside it on batches ahead (one decoding thread per four free cores, at least one):
with one core kept busy by another process, 1600x1200 photos ran at 19.7-20.8 images/s with one
torch thread against 15.3-17.7 with two, and 12.5-14.0 by turns. (An older measurement under far
heavier load, load average 11-20, found 2 threads 1.7x faster than 1 at batch 4: there each thread
wins a scheduler's share; that is not a machine to tune for.) One image at a time (batch 1) also
takes the free cores. Never more torch threads than torch is set to: the window keeps a core for
itself that way, and then decodes beside the forward on the cores torch leaves (by turns, one core
would sit idle in each phase).

On a GPU the forward needs little CPU, so every free core but one decodes beside it (the one: the
loop that launches the forward and writes the outputs). The decoding threads are a pool shared by
the batches in flight (core/inputs/prefetch.py), so their number is not bounded by the prefetch depth: on
16 cores with prefetch 2, 15 images decode at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from batchlens.core.machine.machine_load import others_load, usable_cores

DEFAULT_PREFETCH = 2  # batches prepared ahead when decoding runs beside the forward
#: other work under this many cores: the machine is quiet (`plan_threads`)
QUIET_BELOW = 0.5


@dataclass(frozen=True)
class ThreadPlan:
    torch_threads: int  # torch.set_num_threads for the run
    decode_threads: int  # threads decoding the images of the batches ahead (0: in the loop)
    cores: int  # cores this process may run on
    load: float | None  # cores busy with other work when the run started
    reason: str
    # Decoding in step with the forward (each batch decoded on these threads, then the forward runs)
    # instead of beside it on batches ahead: a CPU run on a quiet machine (`plan_threads`).
    in_step: bool = False

    def prefetch(self, depth: int | None) -> int:
        """The batches to prepare ahead: none in step, else the run's `depth` (None: 2)."""
        return 0 if self.in_step else DEFAULT_PREFETCH if depth is None else depth

    def to_json(self) -> dict:
        return {
            "torch": self.torch_threads,
            "decode": self.decode_threads,
            "decode_in_step": self.in_step,
            "cores": self.cores,
            "others_load": None if self.load is None else round(self.load, 2),
            "reason": self.reason,
        }


def plan_threads(
    setting: int | str | None,
    prefetch: int | None,
    device: torch.device,
    cores: int | None = None,
    load=None,
    batching: bool = True,
) -> ThreadPlan:
    """`setting` "auto" sizes both from the cores and the load; an int fixes torch's threads; None
    keeps torch's own choice (the exact mode: a plain loop's threads). `prefetch` 0 means no
    decoding threads at all, None lets the plan decode in step on a quiet CPU (a number asks for that
    many batches ahead). `batching`: the run may put several images in a forward."""
    cores = cores or usable_cores()
    load = others_load() if load is None else load
    others = 0.0 if load is None else load
    free = max(1, min(cores, round(cores - others)))
    in_step = False
    if device.type == "cpu":
        # Never more torch threads than torch is set to: the window keeps a core for itself that way.
        if batching and others < QUIET_BELOW and prefetch is None and torch.get_num_threads() >= cores:
            # Quiet: decode each batch on every core, then the forward on every core, by turns.
            torch_threads = decode = cores
            in_step = True
        else:  # busy (or one image at a time): the free cores, decoding beside the forward
            torch_threads, decode = min(free, torch.get_num_threads()), max(1, free // 4)
    else:  # the forward runs on the device: the CPU's work is decoding and preprocessing
        torch_threads = max(1, min(4, free // 4))
        decode = max(1, free - 1)  # one core for the loop (launches, outputs); torch's threads idle
    decode = 0 if prefetch == 0 else decode  # (not capped by the depth: a batch's images decode at once)
    if setting is None or isinstance(setting, int):
        torch_threads = setting or torch.get_num_threads()
        why = "torch's own choice" if setting is None else "asked for"
        return ThreadPlan(torch_threads, decode, cores, load, why, in_step)
    busy = f"other work keeps {others:.1f} busy" if load is not None else "other work unknown"
    why = f"{free} of {cores} cores free ({busy}){'; decoding in step with the forward' if in_step else ''}"
    return ThreadPlan(torch_threads, decode, cores, load, why, in_step)


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
