"""The Problems panel: images that could not be processed, and notes from the run, with a count in
its title."""

from __future__ import annotations

from PySide6.QtWidgets import QGroupBox, QHeaderView, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

TITLE = "Problems"


class ProblemsPanel(QGroupBox):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(TITLE, parent)
        self.tree = QTreeWidget()
        self.tree.setColumnCount(2)
        self.tree.setHeaderLabels(["File", "Problem"])
        self.tree.setRootIsDecorated(False)
        self.tree.setAlternatingRowColors(True)
        self.tree.header().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.tree.setToolTip(
            "Images that could not be processed, and notes from the run. The run goes on past them; "
            "each failed image also has an error line in predictions.jsonl."
        )
        layout = QVBoxLayout(self)
        layout.addWidget(self.tree)

    def add(self, where: str, message: str, warning: bool = False) -> None:
        """One row: the file (or "(run)") and the message; a warning is marked as a note."""
        item = QTreeWidgetItem([f"{where} (note)" if warning else where, message])
        item.setToolTip(1, message)
        self.tree.addTopLevelItem(item)
        self.setTitle(f"{TITLE} ({self.count()})")

    def count(self) -> int:
        return self.tree.topLevelItemCount()

    def rows(self) -> list[tuple[str, str]]:
        items = (self.tree.topLevelItem(i) for i in range(self.count()))
        return [(item.text(0), item.text(1)) for item in items]

    def clear(self) -> None:
        self.tree.clear()
        self.setTitle(TITLE)
