"""The Problems panel: images that could not be processed, and notes from the run, with a count in
its title. Long messages wrap; the selected one is also shown whole under the list; Ctrl+C and the
context menu copy rows as tab-separated text (file, problem), for a bug report or a spreadsheet."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QGuiApplication, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGroupBox,
    QHeaderView,
    QLabel,
    QMenu,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

TITLE = "Problems"
VISIBLE_ROWS = 4  # the panel never shrinks below this many rows


class ProblemsPanel(QGroupBox):
    title_changed = Signal(str)  # "Problems (3)": the window's Problems tab shows it

    def __init__(self, parent: QWidget | None = None):
        super().__init__(TITLE, parent)
        self.tree = QTreeWidget()
        self.tree.setColumnCount(2)
        self.tree.setHeaderLabels(["File", "Problem"])
        self.tree.setRootIsDecorated(False)
        self.tree.setAlternatingRowColors(True)
        self.tree.setWordWrap(True)  # long messages wrap in their column instead of ending in "…"
        self.tree.setUniformRowHeights(False)
        self.tree.setTextElideMode(Qt.TextElideMode.ElideNone)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        header = self.tree.header()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        header.setStretchLastSection(True)
        self.tree.setColumnWidth(0, 180)
        self.tree.setToolTip(
            "Images that could not be processed, and notes from the run. The run goes on past them; "
            "each failed image also has an error line in predictions.jsonl. Select a row to read it "
            "whole; Ctrl+C or right-click copies it."
        )
        self.tree.setMinimumHeight(self.tree.fontMetrics().height() * (VISIBLE_ROWS + 2))
        self.detail = QLabel()  # the selected message, whole
        self.detail.setWordWrap(True)
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.detail.setVisible(False)

        self.copy_action = QAction("Copy", self.tree)
        self.copy_action.setShortcut(QKeySequence.StandardKey.Copy)
        self.copy_action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        self.copy_action.triggered.connect(self.copy_selected)
        self.tree.addAction(self.copy_action)
        self.copy_all_action = QAction("Copy all problems", self.tree)
        self.copy_all_action.triggered.connect(self.copy_all)
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.tree.customContextMenuRequested.connect(self._context_menu)
        self.tree.itemSelectionChanged.connect(self._show_selected)

        layout = QVBoxLayout(self)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.detail)

    def add(self, where: str, message: str, warning: bool = False) -> None:
        """One row: the file (or "(run)") and the message; a warning is marked as a note."""
        item = QTreeWidgetItem([f"{where} (note)" if warning else where, message])
        item.setToolTip(1, message)
        self.tree.addTopLevelItem(item)
        self._set_title(f"{TITLE} ({self.count()})")

    def count(self) -> int:
        return self.tree.topLevelItemCount()

    def rows(self) -> list[tuple[str, str]]:
        items = (self.tree.topLevelItem(i) for i in range(self.count()))
        return [(item.text(0), item.text(1)) for item in items]

    def clear(self) -> None:
        self.tree.clear()
        self.detail.clear()
        self.detail.setVisible(False)
        self._set_title(TITLE)

    def _set_title(self, title: str) -> None:
        self.setTitle(title)
        self.title_changed.emit(title)

    # -- reading and copying -------------------------------------------------------------------------
    def _show_selected(self) -> None:
        items = self.tree.selectedItems()
        self.detail.setVisible(len(items) == 1)
        if len(items) == 1:
            self.detail.setText(f"<b>{items[0].text(0)}</b>: {items[0].text(1)}")

    def selected_text(self) -> str:
        items = sorted(self.tree.selectedItems(), key=self.tree.indexOfTopLevelItem)
        return "".join(f"{item.text(0)}\t{item.text(1)}\n" for item in items)

    def copy_selected(self) -> None:
        text = self.selected_text()
        if text:
            QGuiApplication.clipboard().setText(text)

    def copy_all(self) -> None:
        rows = self.rows()
        QGuiApplication.clipboard().setText("".join(f"{where}\t{message}\n" for where, message in rows))

    def _context_menu(self, pos) -> None:
        menu = QMenu(self.tree)
        self.copy_action.setEnabled(bool(self.tree.selectedItems()))
        self.copy_all_action.setEnabled(self.count() > 0)
        menu.addAction(self.copy_action)
        menu.addAction(self.copy_all_action)
        menu.popup(self.tree.viewport().mapToGlobal(pos))
