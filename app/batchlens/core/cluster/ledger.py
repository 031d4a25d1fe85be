"""Who retried what: the bookkeeping that stops an image which kills every worker from looping.

A plain class: a backend runs one instance where all its workers can reach it (Ray: a tiny actor).
"""

from __future__ import annotations

DEATHS_BEFORE_GIVING_UP = 2  # an image in the worker's hands at this many worker deaths is not retried


class RetryLedger:
    """Counts batch attempts and worker restarts, and blames images for deaths.

    A backend that restarts a dead worker and retries its batch (Ray Data does, without limit) calls
    `begin` for every attempt; an attempt that never reached `end` died, and the images it held are
    blamed, so an image that kills the worker twice becomes an error line instead of an endless run."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}
        self.in_hand: dict[str, list[str]] = {}  # batch -> images being processed right now
        self.deaths: dict[str, int] = {}
        self.workers: set[str] = set()
        self.restarts = 0

    def begin(self, batch: str, images: list[str]) -> tuple[int, dict[str, int]]:
        """Start an attempt at `batch`; return its attempt number and the deaths of its images."""
        self.attempts[batch] = self.attempts.get(batch, 0) + 1
        for image in self.in_hand.pop(batch, []):  # the previous attempt never finished: it died
            self.deaths[image] = self.deaths.get(image, 0) + 1
        self.in_hand[batch] = list(images)
        return self.attempts[batch], {i: self.deaths[i] for i in images if i in self.deaths}

    def holding(self, batch: str, images: list[str]) -> None:
        self.in_hand[batch] = list(images)

    def end(self, batch: str) -> None:
        self.in_hand.pop(batch, None)

    def worker_started(self, worker_id: str) -> None:
        """Called from each worker's constructor, which the backend runs again when it restarts one."""
        if worker_id in self.workers:
            self.restarts += 1
        self.workers.add(worker_id)

    def report(self) -> dict:
        return {
            "batches_retried": sum(n - 1 for n in self.attempts.values()),
            "worker_restarts": self.restarts,
        }
