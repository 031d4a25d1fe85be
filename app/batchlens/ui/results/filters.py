"""The browser's side panel: what to show (status, label or class, score range) and in which order,
with the counts of each status and label."""

from __future__ import annotations

import os
from collections import Counter

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from batchlens.core.outputs.results_index import STATUSES
from batchlens.core.tasks.kinds import kind_of
from batchlens.ui.results.model import REVIEW_STATES, SORT_KEYS

# superqt goes through qtpy, which would pick PyQt5 first if it is installed too: pin it to ours.
os.environ.setdefault("QT_API", "pyside6")
from superqt import QLabeledDoubleRangeSlider  # noqa: E402

STATUS_NAMES = {"ok": "OK", "recovered": "Recovered", "error": "Failed"}
STATUS_TIPS = {
    "ok": "Images the model processed without trouble.",
    "recovered": "Images that ran out of memory first and were finished by a recovery step "
    "(smaller batch, tiles, or the CPU).",
    "error": "Images that could not be processed (the reason is on the tile and in the large view).",
}
ALL_LABELS = None


class FilterPanel(QWidget):
    statuses_changed = Signal(object)  # set of statuses
    label_changed = Signal(object)  # a label, or None for all
    score_changed = Signal(float, float)
    sort_changed = Signal(str, bool)  # key, descending
    review_changed = Signal(str)  # one of REVIEW_STATES

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self._add_statuses(layout)
        self._add_review(layout)
        self._add_score(layout)
        self._add_sort(layout)
        self._add_labels(layout)
        self.reset_button = QPushButton("Show everything")
        self.reset_button.setToolTip("Clear every filter.")
        self.reset_button.clicked.connect(self.reset)
        layout.addWidget(self.reset_button)
        layout.addStretch(1)  # keeps the controls together at the top when there is no label table
        self.label: str | None = ALL_LABELS
        self._shown_counts: list[tuple[str, int]] | None = None
        self._update_direction()

    # -- built once, by __init__: each adds its title and controls to the panel's column ---------
    def _add_statuses(self, layout: QVBoxLayout) -> None:
        layout.addWidget(QLabel("<b>Show</b>"))
        self.status_boxes: dict[str, QCheckBox] = {}
        for status in STATUSES:
            box = QCheckBox(STATUS_NAMES[status])
            box.setChecked(True)
            box.setToolTip(STATUS_TIPS[status])
            box.toggled.connect(self._statuses_toggled)
            layout.addWidget(box)
            self.status_boxes[status] = box

    def _add_review(self, layout: QVBoxLayout) -> None:
        self.review_title = QLabel("<b>Review</b>")
        self.review_combo = QComboBox()
        for key, name in REVIEW_STATES.items():
            self.review_combo.addItem(name, key)
        self.review_combo.setToolTip(
            "Reviewed: you confirmed or corrected the result in the large view (Enter, 1-9 or typing). "
            "Changed: your label differs from the model's."
        )
        self.review_combo.currentIndexChanged.connect(
            lambda: self.review_changed.emit(self.review_combo.currentData())
        )
        layout.addWidget(self.review_title)
        layout.addWidget(self.review_combo)

    def _add_score(self, layout: QVBoxLayout) -> None:
        self.score_title = QLabel("<b>Score</b>")
        self.score_slider = QLabeledDoubleRangeSlider(Qt.Orientation.Horizontal)
        self.score_slider.setRange(0.0, 1.0)
        self.score_slider.setDecimals(2)
        self.score_slider.setSingleStep(0.01)
        self.score_slider.setValue((0.0, 1.0))
        # One editable number at each end (the low and high scores); none over the handles.
        self.score_slider.setEdgeLabelMode(QLabeledDoubleRangeSlider.EdgeLabelMode.LabelIsValue)
        self.score_slider.setHandleLabelPosition(QLabeledDoubleRangeSlider.LabelPosition.NoLabel)
        self.score_slider.setToolTip(
            "Show only results whose score is in this range (with a label chosen: that label's score). "
            "Narrowing it hides results without a score, such as failed images."
        )
        self.score_slider.valueChanged.connect(lambda v: self.score_changed.emit(float(v[0]), float(v[1])))
        layout.addWidget(self.score_title)
        layout.addWidget(self.score_slider)

    def _add_sort(self, layout: QVBoxLayout) -> None:
        layout.addWidget(QLabel("<b>Sort by</b>"))
        sort_row = QHBoxLayout()
        self.sort_combo = QComboBox()
        for key, name in SORT_KEYS.items():
            self.sort_combo.addItem(name, key)
        self.sort_combo.setToolTip("Run order is the order the images were processed in.")
        self.sort_combo.currentIndexChanged.connect(self._sort_changed)
        self.direction = QToolButton()
        self.direction.setCheckable(True)
        self.direction.toggled.connect(self._sort_changed)
        sort_row.addWidget(self.sort_combo, 1)
        sort_row.addWidget(self.direction)
        layout.addLayout(sort_row)

    def _add_labels(self, layout: QVBoxLayout) -> None:
        """The labels (or classes) found, with their counts; a click shows only that one's images."""
        self.labels_title = QLabel("<b>Labels</b>")
        self.labels_table = QTableWidget(0, 2)
        self.labels_table.setHorizontalHeaderLabels(["Label", "Images"])
        self.labels_table.verticalHeader().hide()
        header = self.labels_table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        self.labels_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.labels_table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.labels_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.labels_table.setToolTip("Click a label to show only its images; click “All” to show every one.")
        self.labels_table.itemSelectionChanged.connect(self._label_clicked)
        layout.addWidget(self.labels_title)
        layout.addWidget(self.labels_table, 10)

    # -- what the browser calls ----------------------------------------------------------------
    def set_counts(self, statuses: Counter, labels: Counter, has_scores: bool, task: str | None) -> None:
        for status, box in self.status_boxes.items():
            box.setText(f"{STATUS_NAMES[status]} ({statuses.get(status, 0):,})")
        self.score_title.setVisible(has_scores)
        self.score_slider.setVisible(has_scores)
        one, many = kind_of(task).label_words  # Label(s), or Class(es) where an image holds many
        self.labels_title.setText(f"<b>{many}</b>")
        self.labels_table.setHorizontalHeaderLabels([one, "Images"])
        shown = sorted(labels.items(), key=lambda item: (-item[1], item[0]))
        if shown == self._shown_counts:
            return
        self._shown_counts = shown
        table = self.labels_table
        table.blockSignals(True)
        table.setRowCount(len(shown) + 1)
        self._set_row(0, "All", sum(statuses.values()), None)
        for row, (label, count) in enumerate(shown, start=1):
            self._set_row(row, label, count, label)
        selected = next((r + 1 for r, (name, _) in enumerate(shown) if name == self.label), 0)
        table.selectRow(selected)
        table.blockSignals(False)
        self.labels_title.setVisible(bool(shown))
        table.setVisible(bool(shown))

    def set_review_counts(self, counts: dict[str, int]) -> None:
        """The number of images in each review state, shown in the review filter's choices."""
        for i in range(self.review_combo.count()):
            key = self.review_combo.itemData(i)
            count = counts.get(key)
            self.review_combo.setItemText(
                i, REVIEW_STATES[key] + (f" ({count:,})" if count is not None else "")
            )

    def reset(self) -> None:
        for box in self.status_boxes.values():
            box.setChecked(True)
        self.score_slider.setValue((0.0, 1.0))
        self.review_combo.setCurrentIndex(0)
        if self.labels_table.rowCount():
            self.labels_table.selectRow(0)

    def clear(self) -> None:
        self._shown_counts = None
        self.labels_table.setRowCount(0)
        self.label = ALL_LABELS
        self.reset()

    # -- internals -----------------------------------------------------------------------------
    def _set_row(self, row: int, text: str, count: int, label: str | None) -> None:
        name = QTableWidgetItem(text)
        name.setData(Qt.ItemDataRole.UserRole, label)
        number = QTableWidgetItem(f"{count:,}")
        number.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.labels_table.setItem(row, 0, name)
        self.labels_table.setItem(row, 1, number)

    def _statuses_toggled(self) -> None:
        self.statuses_changed.emit({s for s, box in self.status_boxes.items() if box.isChecked()})

    def _label_clicked(self) -> None:
        rows = self.labels_table.selectionModel().selectedRows()
        label = self.labels_table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole) if rows else None
        if label != self.label:
            self.label = label
            self.label_changed.emit(label)

    def _update_direction(self) -> None:
        descending = self.direction.isChecked()
        self.direction.setText("↓" if descending else "↑")
        self.direction.setToolTip(
            "Descending (highest first): click for ascending."
            if descending
            else "Ascending (lowest first): click for descending."
        )

    def _sort_changed(self) -> None:
        self._update_direction()
        self.sort_changed.emit(self.sort_combo.currentData(), self.direction.isChecked())
