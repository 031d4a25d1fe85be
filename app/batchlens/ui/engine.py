"""PyTorch and the run's engine, loaded behind the window.

Importing torch, torchvision and the engine takes seconds (tens on a slow disk), so the window opens
first: the model list, the folders and the Run button need none of it (ui/ imports nothing that
imports torch; tests/ui/test_startup_imports.py keeps it so). `Engine.load_in_background()` then
imports it on a plain Python thread (imports are thread-safe) and says `ready` (or `failed`, with one
sentence) through a queued signal; a Run pressed before then waits for it with a "Loading PyTorch…"
note. Tests and the self-test build the window with the engine loaded at once (`Engine.load()`).
"""

from __future__ import annotations

import importlib
import logging
import threading

from PySide6.QtCore import QObject, Signal

log = logging.getLogger(__name__)

#: what a run needs, in the order it is imported
ENGINE_MODULES = (
    "torch",
    "torchvision",
    "batchlens.core.run.runner",
    "batchlens.core.models.catalogue",
    "batchlens.core.models.files",
    "batchlens.core.cluster.ray_backend",
    "batchlens.ui.worker",
)
LOADING = "Loading PyTorch…"


class Engine(QObject):
    ready = Signal()
    failed = Signal(str)  # one sentence: why the engine could not be loaded

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._done = threading.Event()
        self._started = False
        self.error: str | None = None

    def is_ready(self) -> bool:
        return self._done.is_set() and self.error is None

    def is_loading(self) -> bool:
        return self._started and not self._done.is_set()

    def load(self) -> bool:
        """Import the engine on this thread (at once; the window's tests and the self-test)."""
        self._started = True
        self._import()
        return self.error is None

    def load_in_background(self) -> None:
        """Import the engine on a thread of its own; `ready` or `failed` comes on the GUI thread."""
        if self._started:
            return
        self._started = True
        threading.Thread(target=self._load_and_tell, name="batchlens-load-engine", daemon=True).start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the engine is loaded (or failed); for tests and scripts, never the GUI thread."""
        return self._done.wait(timeout)

    def _load_and_tell(self) -> None:
        self._import()
        if self.error is None:
            self.ready.emit()
        else:
            self.failed.emit(self.error)

    def _import(self) -> None:
        try:
            for name in ENGINE_MODULES:
                importlib.import_module(name)
            from batchlens.core.startup import freeze_imported_objects
            from batchlens.ui.qt_app import leave_a_core_for_the_window

            leave_a_core_for_the_window()
            freeze_imported_objects()
        except Exception as exc:  # a broken or missing PyTorch: the window stays and says so
            log.exception("loading the engine failed")
            self.error = (
                f"PyTorch could not be loaded ({type(exc).__name__}: {exc}); runs are not possible until "
                "it is reinstalled (see docs/troubleshooting.md)."
            )
        finally:
            self._done.set()
