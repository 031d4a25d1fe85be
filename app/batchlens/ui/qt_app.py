"""The QApplication and what it needs before a window opens: name, icon, style, a free core, and
whether this machine has a display. Both the window's start (app.py) and its self-test use these."""

from __future__ import annotations

import os
import sys

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
