"""Where the window's file dialogs open: the run's input folder, else its output folder, else the home
folder; never the folder BatchLens happened to be started from (a source checkout, for one), which is
where Qt opens a dialog given no folder."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QWidget


def start_folder(parent: QWidget | None, output_first: bool = False) -> str:
    """The first existing folder of: the input folder, the output folder (or the nearest folder above
    it: a run makes it), the home folder. `parent` is any widget of the window (its `form` is read)."""
    form = getattr(parent.window(), "form", None) if parent is not None else None
    texts = (form.input_text(), form.output_text()) if form is not None else ()
    texts = texts[::-1] if output_first else texts
    for text in texts:
        folder = Path(text).expanduser() if text.strip() else None
        while folder is not None and folder.is_absolute() and not folder.is_dir() and folder.parent != folder:
            folder = folder.parent
        if folder is not None and folder.is_absolute() and folder.is_dir() and folder.parent != folder:
            return str(folder)
    return str(Path.home())
