"""Help > About and Help > Copy system info: the versions a bug report needs, in one place."""

from __future__ import annotations

import platform
import sys

from PySide6 import __version__ as pyside_version
from PySide6.QtCore import qVersion
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QMessageBox, QWidget

from batchlens import __version__


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
