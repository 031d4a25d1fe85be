"""`batchlens --results DIR`: the results browser in a window of its own, with File > Open results…"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMainWindow

from batchlens.core.outputs.results_index import is_output_folder
from batchlens.ui.results.browser import ResultsBrowser


class ResultsWindow(QMainWindow):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.browser = ResultsBrowser(self)
        self.browser.folder_opened.connect(lambda path: self.setWindowTitle(f"Results — {path}"))
        self.setCentralWidget(self.browser)
        self.setWindowTitle("Results")
        menu = self.menuBar().addMenu("&File")
        open_action = QAction("&Open results…", self)
        open_action.setShortcut(QKeySequence.StandardKey.Open)
        open_action.triggered.connect(self.ask_folder)
        export_action = QAction("&Export…", self)
        export_action.setShortcut(QKeySequence("Ctrl+E"))
        export_action.triggered.connect(self.ask_export)
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence("Ctrl+Q"))
        quit_action.triggered.connect(self.close)
        menu.addAction(open_action)
        menu.addAction(export_action)
        menu.addAction(quit_action)
        self.resize(1100, 750)

    def ask_folder(self) -> None:
        start = str(self.browser.folder.path) if self.browser.folder else ""
        chosen = QFileDialog.getExistingDirectory(self, "Open the output folder of a run", start)
        if chosen:
            self.browser.open_folder(chosen)

    def ask_export(self) -> None:
        from batchlens.ui.results.after_run_dialogs import export

        export(self.browser)

    def closeEvent(self, event) -> None:
        self.browser.shutdown()
        super().closeEvent(event)


def run_results_window(args: argparse.Namespace) -> int:
    """Open the browser on args.results (with --input: where the input images are now)."""
    from batchlens.ui.qt_app import create_app, needs_offscreen

    folder = Path(args.results).expanduser()
    if not folder.is_dir():
        print(f"batchlens: the results folder {folder} does not exist.", file=sys.stderr)
        return 2
    if not is_output_folder(folder):
        print(
            f"batchlens: {folder} holds no results (no predictions.jsonl, summary.json or run.json); "
            "give the output folder of a run.",
            file=sys.stderr,
        )
        return 2
    if needs_offscreen():
        print(
            "batchlens: no display to open the window on (DISPLAY and WAYLAND_DISPLAY are not set); "
            "try `xvfb-run batchlens --results DIR`.",
            file=sys.stderr,
        )
        return 2
    app = create_app()
    window = ResultsWindow()
    window.browser.open_folder(folder, getattr(args, "window_input", None))
    window.show()
    # Start-up's objects (torch's, Qt's: ~400,000) go to the permanent generation, so the occasional
    # full garbage collection no longer walks them all from the GUI thread: its worst pause while
    # scrolling 20,000 results fell from ~230 ms to ~14 ms of CPU (benchmarks/results_browser.py).
    gc.freeze()
    return app.exec()
