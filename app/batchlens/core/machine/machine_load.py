"""How busy the machine is: the cores this process may use, and the cores other work keeps busy.

Imported first thing by the command line and the window (psutil only, no torch), so that a run's
first reading of the others' work spans the seconds torch takes to import instead of falling back
to the 1-minute load average, which still counts the previous `batchlens run` for a minute.
"""

from __future__ import annotations

import os
import time

import psutil

__all__ = ["load_average", "others_load", "usable_cores"]


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

    MIN_SPAN_S = 1.0  # shorter spans say little (`others`)

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._last = self._read()
        self._figure: float | None = None

    def _read(self) -> tuple[float, float, float]:
        per_cpu = psutil.cpu_times(percpu=True)
        try:  # only the cores this process may run on (a container may see the host's)
            per_cpu = [per_cpu[i] for i in os.sched_getaffinity(0) if i < len(per_cpu)] or per_cpu
        except AttributeError:
            pass
        # (Linux counts a guest VM's time in user and nice as well as in guest and guest_nice)
        waiting = ("idle", "iowait", "guest", "guest_nice")
        busy = sum(sum(c) - sum(getattr(c, name, 0.0) for name in waiting) for c in per_cpu)
        own = self._process.cpu_times()
        return time.monotonic(), busy, own.user + own.system

    def others(self) -> float | None:
        """Measured since the last reading a second or more long. A shorter span says too little:
        the last figure stands (None before the first), and the span goes on growing."""
        now = self._read()
        (t0, busy0, own0), (t1, busy1, own1) = self._last, now
        if t1 - t0 >= self.MIN_SPAN_S:
            self._last = now
            self._figure = max(0.0, (busy1 - busy0) - (own1 - own0)) / (t1 - t0)
        return self._figure


_meter = _OthersMeter()  # from the import on: a first run measures over its own start-up


def others_load() -> float | None:
    """How many cores other work keeps busy: measured since the previous run (or since BatchLens
    started), or the 1-minute load average before any span has been long enough to say (the load
    average counts this process's own recent work too: a previous run a moment ago looks busy)."""
    measured = _meter.others()
    return load_average() if measured is None else measured
