"""Native libraries that must be loaded before Qt's platform theme loads its own.

Triton (which torch imports with torch._dynamo, and torchvision with its ops) carries a copy of LLVM
in its native library, libtriton.so. Qt's GTK3 platform theme (QT_QPA_PLATFORMTHEME=gtk3, the default
on many GNOME desktops) brings in the desktop's own LLVM through GTK's graphics stack; loading
libtriton.so after that crashed the process with a segmentation fault (exit 139) in triton/knobs.py,
as soon as PyTorch was imported. Loaded first, the two coexist (tests/ui/test_gtk_theme.py starts
the real window under Xvfb with the GTK3 theme). Opening the library is cheap (about 0.05 s: it is
mapped, not read); nothing of triton's Python side is imported here.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def triton_library() -> Path | None:
    """Where triton's native library is, or None when triton is not installed (a CPU-only torch,
    macOS, Windows)."""
    try:
        spec = importlib.util.find_spec("triton")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder, "_C").glob("libtriton*.so"))
        if found:
            return found[0]
    return None


def load_before_qt() -> bool:
    """Open libtriton.so now, before the QApplication (and with it the platform theme) exists. True
    when it was opened; False where there is none or it cannot be opened (then torch reports it later,
    as it always would)."""
    library = triton_library()
    if library is None:
        return False
    try:
        ctypes.CDLL(str(library), mode=os.RTLD_LAZY | os.RTLD_LOCAL)
    except OSError as exc:
        log.info("could not open %s before Qt: %s", library, exc)
        return False
    return True
