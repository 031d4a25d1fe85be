"""Start the window (or its self-test): `run_window(args)` is what `batchlens` calls; the QApplication
itself is made in qt_app.py."""

from __future__ import annotations

import argparse
import os
import sys

from PySide6.QtCore import QCoreApplication, Qt, QTimer
from PySide6.QtGui import QColor, QPainter, QPixmap
from PySide6.QtWidgets import QSplashScreen

from batchlens.core.crash_log import CrashLog
from batchlens.core.crash_report import EXIT_CRASH, install_excepthook
from batchlens.ui.crash_dialog import follow_runs, offer_report
from batchlens.ui.gui_gc import GuiThreadCollector
from batchlens.ui.qt_app import (
    app_icon,
    create_app,
    missing_xcb_library,
    needs_offscreen,
)

ENGINE_AFTER_MS = 150  # from the window's show to the engine's loading: time for its first paint


def run_window(args: argparse.Namespace) -> int:
    if missing := missing_xcb_library():  # before Qt's abort, which names no library
        print(missing, file=sys.stderr)
        return 2
    if getattr(args, "self_test", False):
        from batchlens.ui.self_test import run_self_test

        return run_self_test(args)
    # The window's guard: an exception a Qt slot raises is reported (core/crash_report.py), and exit 70.
    install_excepthook(lambda: QCoreApplication.exit(EXIT_CRASH))
    if getattr(args, "results", None) is not None:  # batchlens --results DIR: the results browser alone
        from batchlens.ui.results.window import run_results_window

        return run_results_window(args)

    if needs_offscreen():
        # Qt would abort with a core dump; say what to do instead.
        print(
            "batchlens: no display to open the window on (DISPLAY and WAYLAND_DISPLAY are not set). "
            "Use `batchlens run ...` to run without a window, or `xvfb-run batchlens`.",
            file=sys.stderr,
        )
        return 2
    app = create_app()
    crash_log = CrashLog()  # faulthandler into the data folder; the last session's crash, if any
    crashed = crash_log.start()
    collector = GuiThreadCollector().start()  # cycles are freed on the GUI thread, not a worker's
    # The window needs no torch (ui/engine.py): it opens in a second or two, and PyTorch and the run's
    # code load behind it; a Run pressed before then says "Loading PyTorch…" and starts when ready.
    from batchlens.ui.engine import Engine
    from batchlens.ui.main_window import MainWindow

    engine = Engine()
    window = MainWindow(engine=engine)
    window.prefill(
        model=getattr(args, "window_model", None),
        input_dir=getattr(args, "window_input", None),
        output_dir=getattr(args, "window_output", None),
        device=getattr(args, "window_device", None),
    )
    follow_runs(window, crash_log)
    window.show()
    if crashed is not None:
        QTimer.singleShot(0, lambda: offer_report(window, crashed))
    # After the first paint: the memory plot (pyqtgraph), then the engine on its thread, which holds the
    # GIL for most of a second at a time.
    QTimer.singleShot(ENGINE_AFTER_MS, window.load_behind)
    if getattr(args, "window_start", False):
        window.start_when_counted()  # a folder without images is refused as the Run button refuses it
    code = app.exec()
    collector.stop()
    crash_log.finish()  # a clean end (also when finish() leaves a run thread behind)
    return finish(window, code)


def show_splash() -> QSplashScreen:
    """A small start-up window that says what is taking time (no longer shown at start: the window
    itself comes first and loads PyTorch behind it)."""
    from PySide6.QtWidgets import QApplication

    pixmap = QPixmap(360, 140)
    pixmap.fill(QColor("#1f2733"))
    painter = QPainter(pixmap)
    painter.drawPixmap(20, 38, app_icon().pixmap(64, 64))
    painter.setPen(QColor("#e6e6e6"))
    font = painter.font()
    font.setPointSize(16)
    font.setBold(True)
    painter.setFont(font)
    painter.drawText(100, 62, "BatchLens")
    painter.end()
    splash = QSplashScreen(pixmap)
    splash.setWindowTitle("BatchLens — starting")
    splash.showMessage(
        "Loading PyTorch…", Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom, QColor("#c8d0da")
    )
    splash.show()
    QApplication.processEvents()  # paint it now: the imports that follow block the event loop
    return splash


def finish(window, code: int) -> int:
    """After the event loop: if a run thread outlived the close (a very slow image), leave without
    destroying it under Qt's feet; every finished image is already written and flushed."""
    thread = window.thread
    if thread is not None and thread.isRunning():
        print(
            "batchlens: the current image was still being processed when the window closed; "
            "every finished image is saved in predictions.jsonl.",
            file=sys.stderr,
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
