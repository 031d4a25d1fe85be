"""Start the window: QApplication, icon, style; `run_window(args)` is what `batchlens` calls."""

from __future__ import annotations

import argparse
import os
import sys

from PySide6.QtCore import QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from batchlens.core.resources import resource_path

APP_NAME = "BatchLens"


def app_icon() -> QIcon:
    icon = QIcon()
    for name in ("batchlens.svg", "batchlens.png"):
        path = resource_path("icons", name)
        if path.is_file():
            icon.addFile(str(path))
    return icon


def create_app(argv: list[str] | None = None) -> QApplication:
    """The QApplication (made once), with name, icon and the platform's own light or dark theme."""
    app = QApplication.instance()
    if app is None:
        # Qt 6 scales for high-DPI screens by itself; the window uses palette colours only, so it
        # follows the system's light or dark scheme.
        app = QApplication(argv if argv is not None else [sys.argv[0]])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setDesktopFileName("batchlens")
    app.setWindowIcon(app_icon())
    return app


def leave_a_core_for_the_window() -> None:
    """Run CPU inference on one core fewer than PyTorch would take, so the window's thread always
    finds a free core. Measured on a busy 2-core machine (tests/ui/test_window.py prints it): with
    every core given to PyTorch the GUI timer's p99 lateness was ~130-145 ms and the demo-denoise run
    took 25-30 s; with one core left it was ~90 ms and 14-17 s. GPU runs do not use these threads."""
    import torch

    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(threads - 1)


def needs_offscreen() -> bool:
    """True on a Linux machine with no display (a server, CI), where only the offscreen platform works."""
    return (
        sys.platform.startswith("linux")
        and not os.environ.get("QT_QPA_PLATFORM")
        and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY")
    )


def run_window(args: argparse.Namespace) -> int:
    if getattr(args, "self_test", False):
        from batchlens.ui.self_test import run_self_test

        return run_self_test(args)

    if needs_offscreen():
        # Qt would abort with a core dump; say what to do instead.
        print(
            "batchlens: no display to open the window on (DISPLAY and WAYLAND_DISPLAY are not set). "
            "Use `batchlens run ...` to run without a window, or `xvfb-run batchlens`.",
            file=sys.stderr,
        )
        return 2
    app = create_app()
    leave_a_core_for_the_window()
    from batchlens.ui.main_window import MainWindow

    window = MainWindow()
    window.prefill(
        model=getattr(args, "window_model", None),
        input_dir=getattr(args, "window_input", None),
        output_dir=getattr(args, "window_output", None),
        device=getattr(args, "window_device", None),
    )
    window.show()
    if getattr(args, "window_start", False):
        window.ask_questions = False
        QTimer.singleShot(0, window.start_run)
    code = app.exec()
    return finish(window, code)


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
