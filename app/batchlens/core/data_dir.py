"""The app's data folder: Qt's QStandardPaths.AppDataLocation for BatchLens, computed here without Qt so
the command line and the window find the same files (stored sidecars, crash reports).
BATCHLENS_DATA_DIR overrides it (tests, a portable install)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "BatchLens"  # Qt's organisation and application name (ui/qt_app.py)


def user_data_dir() -> Path:
    """Where Qt's QStandardPaths.AppDataLocation puts BatchLens's data on this platform."""
    override = os.environ.get("BATCHLENS_DATA_DIR")
    if override:
        return Path(override).expanduser()
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or home / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / APP_NAME / APP_NAME
