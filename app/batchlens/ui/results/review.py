"""Reviewing in the large view: the model's top labels numbered, the person's decision, and a line to
type any label with completion. Enter confirms the model's label, 1-9 take one of its top labels, a
letter starts typing; the browser writes each decision to RUN/reviews.jsonl (core/outputs/reviews.py).

Detection: Delete removes the selected box (Tab picks the next), typing a label changes the selected
box's label, Enter confirms the boxes as they are now."""

from __future__ import annotations

import html

from PySide6.QtCore import QStringListModel, Qt, Signal
from PySide6.QtWidgets import QCompleter, QHBoxLayout, QLabel, QLineEdit, QWidget

from batchlens.core.outputs.reviews import Review

HINT = "Enter: confirm · 1–9: one of the model's labels · type: any label"
BOX_HINT = "Enter: confirm the boxes · Tab: next box · Delete: remove it · type: change its label"


def top_labels(fields: dict) -> list[tuple[str, float | None]]:
    """A classification line's top labels with their scores, best first (at most 9)."""
    top = fields.get("top")
    out = []
    for entry in top if isinstance(top, list) else []:
        if isinstance(entry, dict) and "label" in entry:
            score = entry.get("score")
            out.append((str(entry["label"]), float(score) if isinstance(score, int | float) else None))
    return out[:9]


class ReviewBar(QWidget):
    """What the model said and what the person decided, for the image shown large."""

    decided = Signal(str)  # a label (classification, segmentation)
    boxes_decided = Signal(list)  # the boxes (detection)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.choices = QLabel()
        self.choices.setTextFormat(Qt.TextFormat.RichText)
        self.choices.setWordWrap(True)
        self.state = QLabel()
        self.entry = QLineEdit()
        self.entry.setPlaceholderText("Type a label…")
        self.entry.setToolTip("Type any label of the model (completed as you type), then Enter.")
        self.entry.setMaximumWidth(260)
        self.labels_model = QStringListModel(self)
        self.completer = QCompleter(self.labels_model, self)
        self.completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.completer.setFilterMode(Qt.MatchFlag.MatchContains)
        self.entry.setCompleter(self.completer)
        self.entry.returnPressed.connect(self._typed)
        self.completer.activated.connect(self._picked)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.choices, 1)
        layout.addWidget(self.state)
        layout.addWidget(self.entry)
        self.top: list[tuple[str, float | None]] = []
        self.boxes: list[dict] | None = None  # detection: the boxes being reviewed
        self.selected = 0
        self.known: set[str] = set()

    # -- what the detail view calls ------------------------------------------------------------
    def add_labels(self, labels) -> None:
        new = {str(label) for label in labels if label} - self.known
        if new:
            self.known |= new
            self.labels_model.setStringList(sorted(self.known, key=str.casefold))

    def show_for(self, fields: dict, review: Review | None) -> None:
        """Fill in for one line and its last review (None: not reviewed)."""
        self.entry.clear()
        self.top = top_labels(fields)
        detections = fields.get("detections")
        if isinstance(detections, list):
            source = review.boxes if review is not None and review.boxes is not None else detections
            self.boxes = [dict(b) for b in source if isinstance(b, dict) and "box" in b]
            self.selected = 0
            self.add_labels(b.get("label") for b in self.boxes)
        else:
            self.boxes = None
            self.add_labels(label for label, _ in self.top)
        self._describe(review)

    def key(self, key: int, text: str) -> bool:
        """A key pressed on the large view: True when it was a review key."""
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            if self.boxes is not None:
                self.boxes_decided.emit([dict(b) for b in self.boxes])
            elif self.top:
                self.decided.emit(self.top[0][0])
            else:
                return False
            return True
        if self.boxes is not None and key in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace):
            if self.boxes:
                del self.boxes[self.selected]
                self.selected = min(self.selected, max(len(self.boxes) - 1, 0))
                self._describe(None, changed=True)
            return True
        if self.boxes is not None and key == Qt.Key.Key_Tab:
            if self.boxes:
                self.selected = (self.selected + 1) % len(self.boxes)
                self._describe(None, changed=True)
            return True
        if self.boxes is None and text.isdigit() and text != "0":
            n = int(text)
            if n <= len(self.top):
                self.decided.emit(self.top[n - 1][0])
            return True
        if text and text.isprintable() and not text.isspace():
            self.entry.setText(text)
            self.entry.setFocus()
            self.completer.setCompletionPrefix(text)
            self.completer.complete()
            return True
        return False

    def keyPressEvent(self, event) -> None:
        # QLineEdit passes Enter on after returnPressed: stop it here, or the large view would take it
        # as a second decision (confirming the next image).
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            event.accept()
            return
        super().keyPressEvent(event)

    # -- internals -----------------------------------------------------------------------------
    def _picked(self, text: str) -> None:
        """A label picked in the completion list (ignored when Enter already took the entry's text)."""
        if self.entry.text().strip():
            self._typed(text)

    def _typed(self, text: str | None = None) -> None:
        typed = (text if isinstance(text, str) else self.entry.text()).strip()
        if not typed:
            return
        exact = {label.casefold(): label for label in self.known}
        label = exact.get(typed.casefold())
        if label is None:
            self.completer.setCompletionPrefix(typed)
            label = self.completer.currentCompletion() or typed
        self.entry.clear()
        self.completer.popup().hide()
        if self.parentWidget() is not None:
            self.parentWidget().setFocus()
        if self.boxes is not None:
            if self.boxes:
                self.boxes[self.selected]["label"] = label
                self.boxes[self.selected].pop("score", None)  # the person's box has no model score
                self._describe(None, changed=True)
            return
        self.decided.emit(label)

    def _describe(self, review: Review | None, changed: bool = False) -> None:
        if self.boxes is not None:
            parts = []
            for i, box in enumerate(self.boxes):
                score = f" {box['score'] * 100:.0f} %" if isinstance(box.get("score"), int | float) else ""
                text = html.escape(f"{box.get('label')}{score}")
                parts.append(f"<u><b>{text}</b></u>" if i == self.selected else text)
            self.choices.setText((" · ".join(parts) or "<i>no boxes</i>") + f"<br><small>{BOX_HINT}</small>")
            self.state.setText("<i>changed, Enter to keep</i>" if changed else self._state_text(review))
            return
        numbered = [
            f"<b>{i}</b> {html.escape(label)}" + (f" {score * 100:.0f} %" if score is not None else "")
            for i, (label, score) in enumerate(self.top, start=1)
        ]
        self.choices.setText(" · ".join(numbered) + f"<br><small>{HINT}</small>")
        self.state.setText(self._state_text(review))

    def _state_text(self, review: Review | None) -> str:
        if review is None:
            return "Not reviewed"
        if review.boxes is not None:
            return f"<b style='color:#2b8a3e'>Reviewed</b>: {len(review.boxes)} box(es)"
        model = self.top[0][0] if self.top else None
        word = "confirmed" if review.label == model else "changed to"
        return f"<b style='color:#2b8a3e'>Reviewed</b>: {word} <b>{html.escape(review.label or '')}</b>"
