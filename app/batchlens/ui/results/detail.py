"""One result, large: the same preview panel a run shows (input beside the result, before/after for
output pictures), with the full details under it. Left and Right move, Esc goes back to the grid."""

from __future__ import annotations

import html

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from batchlens.core.machine.memory import MemorySample
from batchlens.core.outputs.result_pictures import ResultPictures
from batchlens.core.outputs.results_index import ResultRecord
from batchlens.core.outputs.reviews import Review
from batchlens.core.run.events import ImageResult
from batchlens.ui.previews import PreviewPanel
from batchlens.ui.results.review import ReviewBar

LARGE = 1024  # longest side of the large pictures, in pixels
NO_SAMPLE = MemorySample(0.0, 0, 0, 0)  # a browsed result carries no memory reading


def details_html(fields: dict, record: ResultRecord) -> str:
    """What the line says beyond the picture and its caption (which show an error): recovery steps,
    notes, every label, files."""
    parts = []
    if fields.get("recovered"):
        steps = ", ".join(html.escape(str(s)) for s in fields["recovered"])
        parts.append(f"<b style='color:#f08c00'>Recovered</b> from running out of memory: {steps}")
    if fields.get("note"):
        parts.append(f"Note: {html.escape(str(fields['note']))}")
    if len(record.labels) > 1:
        scored = [
            f"{html.escape(name)}" + (f" {score * 100:.0f} %" if score is not None else "")
            for name, score in list(record.labels.items())[:30]
        ]
        more = len(record.labels) - 30
        parts.append("Found: " + ", ".join(scored) + (f" and {more} more" if more > 0 else ""))
    for key in ("output", "mask"):
        if isinstance(fields.get(key), str):
            parts.append(f"{key.capitalize()} file: {html.escape(fields[key])}")
    return "<br>".join(parts)


class ResultDetail(QWidget):
    """The large view. `show_record` fills it in two steps: the text at once, the pictures when the
    loader has made them (`show_pictures`)."""

    back_requested = Signal()
    step_requested = Signal(int)  # -1: previous, +1: next

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.back_button = QPushButton("← Back to all results")
        self.back_button.setToolTip("Back to the grid (Esc).")
        self.back_button.clicked.connect(self.back_requested)
        self.previous_button = QPushButton("‹ Previous")
        self.previous_button.setToolTip("The previous result (Left arrow).")
        self.previous_button.clicked.connect(lambda: self.step_requested.emit(-1))
        self.next_button = QPushButton("Next ›")
        self.next_button.setToolTip("The next result (Right arrow).")
        self.next_button.clicked.connect(lambda: self.step_requested.emit(1))
        self.position = QLabel()
        self.title = QLabel()
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.panel = PreviewPanel()
        self.panel.input_view.placeholder = "No input picture."
        self.details = QLabel()
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.review = ReviewBar(self)

        bar = QHBoxLayout()
        bar.addWidget(self.back_button)
        bar.addWidget(self.title, 1)
        bar.addWidget(self.position)
        bar.addWidget(self.previous_button)
        bar.addWidget(self.next_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(bar)
        layout.addWidget(self.review)
        layout.addWidget(self.panel, 1)
        layout.addWidget(self.details)

        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        context = Qt.ShortcutContext.WidgetWithChildrenShortcut
        for key, slot in (
            (Qt.Key.Key_Escape, self._escape),
            (Qt.Key.Key_Left, lambda: self.step_requested.emit(-1)),
            (Qt.Key.Key_Right, lambda: self.step_requested.emit(1)),
        ):
            QShortcut(QKeySequence(key), self, context=context).activated.connect(slot)
        self.record: ResultRecord | None = None
        self.fields: dict = {}
        self.row = self.total = 0

    def _escape(self) -> None:
        """Esc: out of the typed label first (clearing it), then back to the grid."""
        if self.review.entry.hasFocus():
            self.review.entry.clear()
            self.setFocus()
        else:
            self.back_requested.emit()

    def keyPressEvent(self, event) -> None:
        if self.record is not None and self.review.key(event.key(), event.text()):
            event.accept()
            return
        super().keyPressEvent(event)

    def event(self, event) -> bool:
        # Tab picks the next box when reviewing detections (before Qt moves the focus with it).
        if event.type() == QEvent.Type.KeyPress and event.key() == Qt.Key.Key_Tab and self.review.boxes:
            self.review.key(event.key(), "")
            return True
        return super().event(event)

    def show_review(self, review: Review | None) -> None:
        """The person's last decision on the record shown (after a change made elsewhere)."""
        self.review.show_for(self.fields, review)

    def show_record(
        self, record: ResultRecord, fields: dict, row: int, total: int, review: Review | None = None
    ) -> None:
        self.record, self.fields, self.row, self.total = record, fields, row, total
        self.review.show_for(fields, review)
        self.title.setText(f"<b>{html.escape(record.image)}</b>")
        self.position.setText(f"{row + 1:,} of {total:,}")
        self.previous_button.setEnabled(row > 0)
        self.next_button.setEnabled(row + 1 < total)
        self.details.setText(details_html(fields, record))
        self.details.setVisible(bool(self.details.text()))
        self.panel.clear("Loading the pictures…")

    def show_pictures(self, pictures: ResultPictures) -> None:
        """The pictures of the record shown (the caller checks they belong to it)."""
        record = self.record
        if record is None:
            return
        fields = {k: v for k, v in self.fields.items() if k not in ("image", "status", "error", "seconds")}
        event = ImageResult(
            index=self.row + 1,
            total=self.total,
            image=record.image,
            status="ok" if record.status != "error" else "error",
            seconds=record.seconds or 0.0,
            error=record.error,
            fields=fields,
            memory=NO_SAMPLE,
            input_preview=pictures.input,
            output_preview=pictures.result,
        )
        self.panel.show_result(event)
        if pictures.note and record.status != "error":  # a failed image's note repeats its error
            note = html.escape(pictures.note)
            self.details.setText("<br>".join(t for t in (self.details.text(), f"<i>{note}</i>") if t))
            self.details.setVisible(True)
