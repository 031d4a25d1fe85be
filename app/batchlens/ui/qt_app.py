"""The QApplication and what it needs before a window opens: name, icon, style, a free core, and
whether this machine has a display. Both the window's start (app.py) and its self-test use these."""

from __future__ import annotations

import ctypes
import os
import sys

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QIcon, QPalette
from PySide6.QtWidgets import QApplication

from batchlens.core.resources import resource_path
from batchlens.ui.native_libs import load_before_qt

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
        load_before_qt()  # triton's native library before the GTK3 theme's (native_libs.py)
        # Qt 6 scales for high-DPI screens by itself; the window uses palette colours only, so it
        # follows the system's light or dark scheme.
        app = QApplication(argv if argv is not None else [sys.argv[0]])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setDesktopFileName("batchlens")
    app.setWindowIcon(app_icon())
    hints = QGuiApplication.styleHints()
    if not app.property("batchlens_scheme_followed"):  # connect once, however often this is called
        hints.colorSchemeChanged.connect(apply_color_scheme)
        app.setProperty("batchlens_scheme_followed", True)
    apply_color_scheme(hints.colorScheme())
    return app


#: Fusion's colours for a dark desktop (Qt gives them itself where the platform theme does).
DARK = {
    QPalette.ColorRole.Window: "#2b2b2b",
    QPalette.ColorRole.WindowText: "#e6e6e6",
    QPalette.ColorRole.Base: "#1e1e1e",
    QPalette.ColorRole.AlternateBase: "#262626",
    QPalette.ColorRole.Text: "#e6e6e6",
    QPalette.ColorRole.Button: "#353535",
    QPalette.ColorRole.ButtonText: "#e6e6e6",
    QPalette.ColorRole.Highlight: "#3d8bfd",
    QPalette.ColorRole.HighlightedText: "#ffffff",
    QPalette.ColorRole.Link: "#74a9ff",
    QPalette.ColorRole.ToolTipBase: "#353535",
    QPalette.ColorRole.ToolTipText: "#e6e6e6",
    QPalette.ColorRole.PlaceholderText: "#9a9a9a",
}


def dark_palette() -> QPalette:
    palette = QPalette()
    for role, color in DARK.items():
        palette.setColor(role, QColor(color))
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor("#8a8a8a"))
    return palette


#: View > Theme: the scheme each choice sets (None: the system's).
THEMES = {"system": None, "light": Qt.ColorScheme.Light, "dark": Qt.ColorScheme.Dark}


def set_theme(name: str) -> None:
    """View > Theme: "system" follows the desktop's scheme, "light" and "dark" hold whatever it says."""
    app = QApplication.instance()
    if app is None or name not in THEMES:
        return
    app.setProperty("batchlens_theme", name)
    if name == "system" and QGuiApplication.styleHints().colorScheme() == Qt.ColorScheme.Unknown:
        app.setPalette(app.style().standardPalette())  # no scheme to follow: the style's own colours
    apply_color_scheme()


def apply_color_scheme(scheme: Qt.ColorScheme | None = None) -> None:
    """Follow the system's light or dark scheme (QStyleHints.colorScheme, Qt 6.5+). Where the platform
    already recolours the palette this changes nothing; where it does not (Fusion on many Linux
    desktops) it sets the matching palette. Widgets and the memory plot read the palette, so they follow."""
    app = QApplication.instance()
    if app is None:
        return
    scheme = QGuiApplication.styleHints().colorScheme() if scheme is None else scheme
    chosen = THEMES.get(app.property("batchlens_theme") or "system")
    scheme = chosen if chosen is not None else scheme  # View > Theme: Light or Dark, whatever the system
    if scheme == Qt.ColorScheme.Unknown:
        return
    dark = scheme == Qt.ColorScheme.Dark
    if (app.palette().color(QPalette.ColorRole.Window).lightness() < 128) != dark:
        app.setPalette(dark_palette() if dark else app.style().standardPalette())


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


#: The system libraries Qt's X11 (xcb) platform plugin loads and a minimal Debian/Ubuntu may lack, with the
#: package of each: the README's "Qt's system libraries" list, in its order.
XCB_LIBRARIES = {
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libdbus-1.so.3": "libdbus-1-3",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
}


def _load_library(name: str) -> None:
    ctypes.CDLL(name)  # dlopen, as Qt's plugin loader would: OSError when it is not there


def missing_xcb_library() -> str | None:
    """One sentence naming the first library of XCB_LIBRARIES that cannot be loaded, where Qt is about
    to use its xcb platform on Linux; None when all load or Qt will not use xcb. Without this, Qt prints
    "Could not load the Qt platform plugin" and aborts, naming no library."""
    if not sys.platform.startswith("linux"):
        return None
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if platform and not platform.startswith("xcb"):
        return None
    if not platform and (os.environ.get("WAYLAND_DISPLAY") or not os.environ.get("DISPLAY")):
        return None  # Wayland, or no display at all (needs_offscreen says that)
    for library, package in XCB_LIBRARIES.items():
        try:
            _load_library(library)
        except OSError:
            return (
                f"batchlens: the window needs the system library {library}, which is not installed: "
                f"install it with `sudo apt-get install {package}` (the README's Quick start lists every "
                "library Qt needs), or use `batchlens run` without a window."
            )
    return None
