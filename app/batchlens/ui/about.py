"""Help > About and Help > Copy system info: the versions a bug report needs, in one place."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

from PySide6 import __version__ as pyside_version
from PySide6.QtCore import QUrl, qVersion
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QMessageBox, QWidget

from batchlens import __version__

#: The user guide: docs/window.md in a source checkout; the installers carry no docs folder.
GUIDE = Path(__file__).resolve().parents[3] / "docs" / "window.md"


def system_info() -> dict[str, str]:
    """BatchLens, Python, Qt, PyTorch, CUDA and the GPU(s), as (name, version or state) pairs."""
    import torch  # loaded long before anyone opens Help; importing here keeps this module light

    info = {
        "BatchLens": __version__,
        "Python": f"{platform.python_version()} ({sys.executable})",
        "OS": platform.platform(),
        "Qt": f"{qVersion()} (PySide6 {pyside_version})",
        "PyTorch": torch.__version__,
        "CUDA": torch.version.cuda or "not in this PyTorch build",
    }
    try:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception as exc:  # a broken driver must not break the About box
        info["GPU"] = f"cannot tell ({exc})"
        return info
    if count:
        names = [torch.cuda.get_device_name(i) for i in range(count)]
        info["GPU"] = "; ".join(f"cuda:{i} {name}" for i, name in enumerate(names))
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        info["GPU"] = "Apple MPS"
    else:
        info["GPU"] = "none found (runs on the CPU)"
    return info


def system_info_text() -> str:
    return "".join(f"{name}: {value}\n" for name, value in system_info().items())


def copy_system_info() -> str:
    text = system_info_text()
    QGuiApplication.clipboard().setText(text)
    return text


def show_about(parent: QWidget) -> QMessageBox:
    rows = "".join(f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in system_info().items())
    box = QMessageBox(parent)
    box.setWindowTitle("About BatchLens")
    box.setIconPixmap(parent.windowIcon().pixmap(64, 64))
    box.setText(
        f"<h3>BatchLens {__version__}</h3><p>Runs an image model over a folder of images, showing what "
        "it does and how much memory it uses.</p>"
        f"<table cellspacing='4'>{rows}</table>"
    )
    box.setStandardButtons(QMessageBox.StandardButton.Close)
    box.open()  # not exec(): the window keeps running behind it
    return box


def open_user_guide(parent: QWidget) -> bool:
    """Open docs/window.md; say where the guide is when it cannot be opened here."""
    if GUIDE.is_file() and QDesktopServices.openUrl(QUrl.fromLocalFile(str(GUIDE))):
        return True
    where = f" On this computer: {GUIDE}" if GUIDE.is_file() else ""
    box = QMessageBox(
        QMessageBox.Icon.Information,
        "User guide",
        "The user guide is docs/window.md in BatchLens's source (with docs/models.md, docs/outputs.md "
        f"and docs/troubleshooting.md).{where}",
        QMessageBox.StandardButton.Close,
        parent,
    )
    box.open()
    return False
