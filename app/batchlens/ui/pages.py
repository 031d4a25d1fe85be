"""The window's two pages: the run screen and the results browser (made on first use, since it starts
picture threads). The run screen sits in a scroll area, so a small window scrolls it instead of
squeezing its panels over each other; the window's size on first start is chosen here too."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QRect, QSize, Qt, Signal
from PySide6.QtWidgets import QFrame, QScrollArea, QStackedWidget, QStyle, QWidget

#: Below this size the run screen scrolls (at 800×600 the plot keeps its axes and the previews their
#: pictures); above it, it fills the window.
RUN_SCREEN_MIN = (700, 520)
#: The window's size on first start, on a screen with room for it.
DEFAULT_WINDOW_SIZE = QSize(1280, 820)


def first_start_geometry(available: QRect) -> QRect:
    """The default size, or 90 % of the screen's free area where that is smaller (a 1366×768 laptop,
    1280×700 points at 200 %), centred on it: the title bar, Problems and the status bar on screen."""
    size = DEFAULT_WINDOW_SIZE.boundedTo(available.size() * 0.9)
    return QStyle.alignedRect(Qt.LayoutDirection.LeftToRight, Qt.AlignmentFlag.AlignCenter, size, available)


class FitScrollArea(QScrollArea):
    """Fits its widget to the viewport, and scrolls only when the viewport is smaller than the widget's
    minimum. (QScrollArea's own widgetResizable sizes a widget with word-wrapped labels by its
    preferred height for the width, which scrolls a run screen that would fit.)"""

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self.fit()

    def fit(self) -> None:
        widget = self.widget()
        if widget is not None:
            least = widget.minimumSizeHint().expandedTo(widget.minimumSize())
            widget.resize(self.viewport().size().expandedTo(least))


class Pages(QStackedWidget):
    page_changed = Signal(str)  # "run" or "results"

    def __init__(self, run_screen: QWidget, parent: QWidget | None = None):
        super().__init__(parent)
        run_screen.setMinimumSize(*RUN_SCREEN_MIN)
        self.run_screen = run_screen
        self.run_scroll = FitScrollArea()
        self.run_scroll.setWidget(run_screen)
        self.run_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.addWidget(self.run_scroll)
        self.results_browser = None

    def show_run_screen(self) -> None:
        self.setCurrentWidget(self.run_scroll)
        self.page_changed.emit("run")

    def show_results(self, folder: Path) -> None:
        """The results browser on `folder` (a run's output folder), in place of the run screen."""
        from batchlens.ui.results.browser import ResultsBrowser

        if self.results_browser is None:
            self.results_browser = ResultsBrowser(show_back=True)
            self.results_browser.back_requested.connect(self.show_run_screen)
            self.addWidget(self.results_browser)
        self.results_browser.open_folder(folder)
        self.setCurrentWidget(self.results_browser)
        self.page_changed.emit("results")

    def showing_results(self) -> bool:
        return self.results_browser is not None and self.currentWidget() is self.results_browser

    def shutdown(self) -> None:
        if self.results_browser is not None:
            self.results_browser.shutdown()
