"""Drive the engine's event generator on a QThread and re-emit what it yields as Qt signals.

The shape follows superqt's GeneratorWorker (started, yielded, paused, resumed, aborted, errored,
returned, finished), but the worker is a QObject moved to its own QThread, as the design asks, so the
window can start it, wait for it and know exactly when it is gone. Pause and cancel are the Runner's
thread-safe flags, checked between batches.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from batchlens.core.errors import BatchLensError
from batchlens.core.machine.memory import MemoryProbe
from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import RunFinished
from batchlens.core.run.runner import Runner

log = logging.getLogger(__name__)


class RunWorker(QObject):
    started = Signal()
    yielded = Signal(object)  # each engine event (RunStarted, ImageResult, RunNote, RunFinished)
    paused = Signal()
    resumed = Signal()
    aborted = Signal()  # the run stopped early because cancel() was called
    errored = Signal(object)  # a message (str) for the user: the run itself could not go on
    returned = Signal(object)  # the run's summary dict
    finished = Signal()  # always last, whatever happened

    def __init__(self, config: RunConfig, probe: MemoryProbe | None = None, runner: Runner | None = None):
        super().__init__()
        self.config = config
        self.runner = runner or Runner(config, probe=probe)  # runner: e.g. a ClusterRunner

    # -- control: called from the GUI thread; the Runner's flags are thread-safe ---------------------
    def pause(self) -> None:
        self.runner.pause()
        self.paused.emit()

    def resume(self) -> None:
        self.runner.resume()
        self.resumed.emit()

    def cancel(self) -> None:
        self.runner.cancel()

    @property
    def is_paused(self) -> bool:
        return self.runner.paused

    # -- the work: runs on the worker thread ----------------------------------------------------------
    @Slot()
    def run(self) -> None:
        self.started.emit()
        summary = None
        try:
            for event in self.runner.events():
                if isinstance(event, RunFinished):
                    summary = event.summary
                self.yielded.emit(event)
        except BatchLensError as exc:
            self.errored.emit(str(exc))
        except Exception as exc:  # a bug or an unforeseen failure: tell the user, keep the window alive
            log.exception("The run failed")
            self.errored.emit(f"The run stopped because of an unexpected error: {exc!r}")
        else:
            if self.runner.cancelled:
                self.aborted.emit()
            self.returned.emit(summary)
        finally:
            self.finished.emit()


def start_in_thread(worker: RunWorker) -> QThread:
    """Move `worker` to a new QThread, start it, and quit the thread when the worker finishes.

    The caller keeps the returned thread (and the worker) referenced until `thread.finished`.
    """
    thread = QThread()
    thread.setObjectName("batchlens-run")
    worker.moveToThread(thread)
    thread.started.connect(worker.run)
    # quit() is thread-safe; calling it directly from the worker thread (not queued to the GUI thread)
    # lets the thread end even while the GUI thread is blocked in thread.wait() on close.
    worker.finished.connect(thread.quit, Qt.ConnectionType.DirectConnection)
    thread.start()
    return thread
