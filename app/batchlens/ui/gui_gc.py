"""Python's cyclic garbage collector, run on the GUI thread only.

The collector runs in whichever thread happens to allocate when its thresholds are crossed: in this
window, often a run's decoding thread or a picture thread. A Qt object that lives on the GUI thread
(a pyqtgraph item, a dialog, a timer) and sits in a reference cycle would then be deleted on that
thread, while the GUI thread may be painting or delivering its events: a crash without a traceback.
So automatic collection is turned off while the window runs and a timer on the GUI thread collects
instead, by the same thresholds (napari and other PyQt/PySide apps do the same); reference counting
still frees everything else at once, wherever it is let go.
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer

CHECK_MS = 250


class GuiThreadCollector(QObject):
    """Between `start()` and `stop()`, cycles are collected only by this object's timer."""

    def __init__(self, interval_ms: int = CHECK_MS, parent: QObject | None = None):
        super().__init__(parent)
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.check)
        self._was_enabled = False

    def start(self) -> GuiThreadCollector:
        self._was_enabled = gc.isenabled()
        gc.disable()
        self.timer.start()
        return self

    def stop(self) -> None:
        self.timer.stop()
        if self._was_enabled:
            gc.enable()

    def check(self) -> None:
        """Collect the oldest generation whose count passed its threshold, as Python would have."""
        counts, thresholds = gc.get_count(), gc.get_threshold()
        generation = -1
        for gen in range(3):
            if counts[gen] > thresholds[gen]:
                generation = gen
        if generation >= 0:
            gc.collect(generation)
