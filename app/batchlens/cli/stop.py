"""Ctrl+C and SIGTERM for `batchlens run`: one sentence each, never a traceback.

- Before the run starts (imports, model load, scan) the first signal ends the program at once:
  nothing has been written yet.
- During the run the first signal asks the runner to stop after the current image; the run then ends
  as usual (summary.json, exit 130 for Ctrl+C, 143 for SIGTERM).
- A second signal stops at once: every line already in predictions.jsonl is whole (each is one
  write), the folder's lock is released, and a later --resume goes on from there.

The run itself goes on a worker thread (`events_in_thread`) so that the main thread, which is the only
one Python delivers signals to, is always free to react, even while a model's forward runs for minutes
in C++.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
from collections.abc import Iterator

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
NAMES = {signal.SIGINT: "Ctrl+C", signal.SIGTERM: "SIGTERM"}


class Interrupted(BaseException):
    """Raised in the main thread by a signal that came before the run started."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.exit_code = EXIT_CODES.get(signum, 130)
        self.name = NAMES.get(signum, "A signal")


class SignalStop:
    """Installs the handlers; `runner` (anything with cancel()) is set once the run is under way."""

    def __init__(self) -> None:
        self.runner = None
        self.signum: int | None = None
        self.count = 0
        self._previous: dict = {}

    def install(self) -> SignalStop:
        if threading.current_thread() is threading.main_thread():
            for signum in EXIT_CODES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def uninstall(self) -> None:
        """Put back the handlers there were (main() may be called in-process, by tests)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @property
    def exit_code(self) -> int | None:
        return EXIT_CODES.get(self.signum) if self.signum is not None else None

    def _handle(self, signum: int, frame) -> None:
        self.count += 1
        self.signum = self.signum or signum
        if self.runner is None:
            raise Interrupted(signum)
        if self.count == 1:
            self.runner.cancel()
            _say(
                f"{NAMES.get(signum, 'Signal')}: stopping after the current image "
                "(press Ctrl+C again to stop at once)."
            )
            return
        from batchlens.core.outputs.runlock import release_all

        release_all()
        _say(
            "Stopped at once: every line in predictions.jsonl is complete; "
            "run the same command with --resume to go on."
        )
        os._exit(EXIT_CODES.get(self.signum, 130))  # the first signal's code: what started the stop


def _say(text: str) -> None:
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # the terminal is gone: the exit code still says it


_DONE = object()


def events_in_thread(events: Iterator) -> Iterator:
    """Iterate `events` on a worker thread and yield them here. An exception the run raises is raised
    here. The worker is a daemon: a hard stop does not wait for a forward that never returns."""
    box: queue.Queue = queue.Queue(maxsize=64)

    def work() -> None:
        try:
            for event in events:
                box.put(event)
        except BaseException as exc:  # handed to the main thread, raised there
            box.put(_Failure(exc))
        else:
            box.put(_DONE)

    threading.Thread(target=work, name="batchlens-run", daemon=True).start()
    while True:
        try:
            item = box.get(timeout=0.25)  # short waits: signal handlers run between them
        except queue.Empty:
            continue
        if item is _DONE:
            return
        if isinstance(item, _Failure):
            raise item.exc.with_traceback(item.exc.__traceback__)
        yield item


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc
