"""The memory plot's files: Save plot (PNG) and Export CSV, each written atomically, with their dialogs
starting in the run's output folder. A mixin of `MemoryPlot` (ui/memory_plot.py), which has the
`plot_widget`, `history`, `markers` and `hover_label` these use."""

from __future__ import annotations

import csv
from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QMessageBox

from batchlens.core.files import atomic_write
from batchlens.ui.memory_history import CSV_HEADER, csv_rows


class PlotFiles:
    """Save plot / Export CSV for the memory plot (a QWidget)."""

    save_folder: Path | None = None

    def save_png(self, path: Path) -> None:
        """The plot as it is now, written atomically (an existing file is replaced only when complete)."""
        pixmap = self.plot_widget.grab()

        def write(tmp: Path) -> None:
            if not pixmap.save(str(tmp), "PNG"):
                raise OSError(f"Could not write {path}.")

        atomic_write(Path(path), write)

    def export_csv(self, path: Path) -> None:
        """Every sample in the history (bytes), and every marker on a row of its own at its own time
        (also markers older than the plotted history), all in time order."""
        rows = csv_rows(self.history.array(), self.markers)

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(CSV_HEADER)
                writer.writerows(rows)

        atomic_write(Path(path), write)

    def set_save_folder(self, folder: Path | None) -> None:
        """Where Save plot / Export CSV dialogs start (the run's output folder)."""
        self.save_folder = Path(folder) if folder else None

    def _suggested(self, name: str) -> str:
        folder = self.save_folder
        while folder is not None and not folder.is_dir() and folder.parent != folder:
            folder = folder.parent  # the output folder is made by the run: start beside it until then
        return str((folder or Path.home()) / name)  # never the folder BatchLens started in

    def _ask_save_png(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save plot as PNG", self._suggested("memory.png"), "PNG image (*.png)"
        )
        if path:
            self._save_with_message(self.save_png, Path(path))

    def _ask_export_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export memory history", self._suggested("memory.csv"), "CSV (*.csv)"
        )
        if path:
            self._save_with_message(self.export_csv, Path(path))

    def _save_with_message(self, save, path: Path) -> None:
        try:
            save(path)
        except OSError as exc:
            QMessageBox.warning(self, "Could not save", f"Could not write {path}: {exc.strerror or exc}")
        else:
            self.hover_label.setText(f"Saved {path}")
