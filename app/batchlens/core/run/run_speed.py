"""The one definition of a run's speed, shared by summary.json, the command line and the window.

Images per second = images processed in this run (ok or failed) / seconds spent running, where time
spent paused does not count. The window's live read-out and the summary both use these functions, so
the figure shown during a run and the one in the summary mean the same thing and read the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RunClock:
    """Seconds a run has spent running: wall time since start() minus the time spent paused."""

    def __init__(self, now: Callable[[], float] = time.perf_counter):
        self._now = now
        self._start: float | None = None
        self._paused_at: float | None = None
        self.paused_seconds = 0.0

    def start(self) -> None:
        self._start = self._now()
        self._paused_at = None
        self.paused_seconds = 0.0

    def pause(self) -> None:
        if self._start is not None and self._paused_at is None:
            self._paused_at = self._now()

    def resume(self) -> None:
        if self._paused_at is not None:
            self.paused_seconds += self._now() - self._paused_at
            self._paused_at = None

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def wall_seconds(self) -> float:
        return 0.0 if self._start is None else self._now() - self._start

    def running_seconds(self) -> float:
        """Wall time minus pauses (a pause still going counts up to now)."""
        if self._start is None:
            return 0.0
        paused = self.paused_seconds + (self._now() - self._paused_at if self._paused_at is not None else 0.0)
        return max(0.0, self.wall_seconds() - paused)


def images_per_second(images: int, running_seconds: float) -> float | None:
    return images / running_seconds if running_seconds > 0 and images > 0 else None


def seconds_left(done: int, total: int, rate: float | None) -> float | None:
    return (total - done) / rate if rate else None


def format_rate(rate: float | None) -> str:
    """'0.595 images/s', '12.3 images/s', '140 images/s' (three significant figures), or ''."""
    return f"{rate:.3g} images/s" if rate else ""
