"""The results as Qt models: every line of predictions.jsonl as a small record (ResultsModel, which also
keeps the sort order and the counts), and the filters over it (ResultsFilter).

Sorting happens in the source model with Python's list sort (a few ms for 20,000 rows; a proxy's
per-comparison callbacks into Python would take seconds); the proxy only filters, so rows appended by a
run still going are filtered one by one as they arrive.
"""

from __future__ import annotations

import re
from collections import Counter

from PySide6.QtCore import QAbstractListModel, QModelIndex, QSortFilterProxyModel, Qt

from batchlens.core.outputs.results_index import STATUSES, ResultRecord

RECORD_ROLE = Qt.ItemDataRole.UserRole + 1
SORT_KEYS = {"run order": "Run order", "name": "Name", "score": "Score", "seconds": "Time taken"}
SORT_KEYS["memory"] = "Memory (its batch's peak)"  # (h9) which images cost the most
_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple:
    """'img_10' after 'img_9', case-insensitively, as a file manager sorts names."""
    return tuple(int(part) if part.isdigit() else part.casefold() for part in _DIGITS.split(text))


def _value(record: ResultRecord, key: str):
    if key == "name":
        return natural_key(record.image)
    if key == "score":
        return record.score
    if key == "seconds":
        return record.seconds
    if key == "memory":
        return record.memory
    return record.offset  # run order: where the line is in the file


REVIEW_STATES = {"all": "All", "reviewed": "Reviewed", "not reviewed": "Not reviewed", "changed": "Changed"}


def changed(record: ResultRecord, review) -> bool:
    """Whether a review says something other than the model (a label, or the boxes' labels)."""
    if review is None:
        return False
    if review.label is not None:
        return review.label != record.label
    return {b["label"] for b in review.boxes or []} != set(record.labels)


def reviewed_words(review) -> str:
    """The tile's second line for a reviewed image: the person's word, ticked."""
    if review.label is not None:
        return f"✓ {review.label}"
    return f"✓ {len(review.boxes or [])} box(es)"


def describe(record: ResultRecord) -> str:
    """The tile's second line: the result in a few words."""
    if record.status == "error":
        return "failed"
    if record.label is None:  # nothing to name (an output picture): the status and the time it took
        took = f" · {record.seconds * 1000:,.0f} ms" if record.seconds is not None else ""
        return ("recovered" if record.status == "recovered" else "ok") + took
    text = record.label if record.score is None else f"{record.label} {record.score * 100:.0f} %"
    more = len(record.labels) - 1
    if more > 0:
        text += f" +{more}"
    return text


class ResultsModel(QAbstractListModel):
    """Every record, in the current sort order, with counts by status and by label."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.records: list[ResultRecord] = []
        self.status_counts: Counter = Counter()
        self.label_counts: Counter = Counter()
        self.has_scores = False
        self.sort_key = "run order"
        self.descending = False

    # -- the Qt model interface ----------------------------------------------------------------
    def rowCount(self, parent: QModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self.records)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or not 0 <= index.row() < len(self.records):
            return None
        record = self.records[index.row()]
        if role == RECORD_ROLE:
            return record
        if role == Qt.ItemDataRole.DisplayRole:
            return record.image.rsplit("/", 1)[-1]
        if role == Qt.ItemDataRole.ToolTipRole:
            if record.error:
                return f"{record.image}\nFailed: {record.error}"
            return f"{record.image}\n{describe(record)}"
        return None

    # -- changes -------------------------------------------------------------------------------
    def clear(self) -> None:
        self.beginResetModel()
        self.records = []
        self.status_counts.clear()
        self.label_counts.clear()
        self.has_scores = False
        self.endResetModel()

    def append(self, records: list[ResultRecord]) -> None:
        """Add records at the end, then put them in place if a sort other than run order is on."""
        if not records:
            return
        start = len(self.records)
        self.beginInsertRows(QModelIndex(), start, start + len(records) - 1)
        self.records.extend(records)
        for record in records:
            self.status_counts[record.status] += 1
            self.label_counts.update(record.labels.keys())
            self.has_scores = self.has_scores or record.score is not None
        self.endInsertRows()
        if self.sort_key != "run order" or self.descending:
            self._resort()

    def set_sort(self, key: str, descending: bool = False) -> None:
        if key not in SORT_KEYS:
            raise ValueError(f"unknown sort {key!r}")
        self.sort_key, self.descending = key, descending
        self._resort()

    def _resort(self) -> None:
        """Sort the rows; rows without the value (no score) go last either way. Selection and the
        current item follow their records (persistent indexes are moved with them)."""
        self.layoutAboutToBeChanged.emit()
        persistent = self.persistentIndexList()
        before = [self.records[i.row()] for i in persistent]
        having = [r for r in self.records if _value(r, self.sort_key) is not None]
        missing = [r for r in self.records if _value(r, self.sort_key) is None]
        having.sort(key=lambda r: _value(r, self.sort_key), reverse=self.descending)
        missing.sort(key=lambda r: r.offset)
        self.records = having + missing
        if persistent:
            row_of = {id(r): row for row, r in enumerate(self.records)}
            self.changePersistentIndexList(persistent, [self.index(row_of[id(r)]) for r in before])
        self.layoutChanged.emit()


class ResultsFilter(QSortFilterProxyModel):
    """Shows the records with a chosen status, label (or class) and score range; keeps the source's
    order (no sorting of its own)."""

    def __init__(self, source: ResultsModel, parent=None):
        super().__init__(parent)
        self.setSourceModel(source)
        self.results = source
        self.statuses: set[str] = set(STATUSES)
        self.label: str | None = None
        self.score_range: tuple[float, float] = (0.0, 1.0)
        self.reviews: dict = {}  # image -> its last Review (the browser keeps it up to date)
        self.review_state = "all"  # one of REVIEW_STATES
        self.images: set[str] | None = None  # only these images (a cell of the confusion matrix)

    def set_review_state(self, state: str) -> None:
        if state not in REVIEW_STATES:
            raise ValueError(f"unknown review state {state!r}")
        self.review_state = state
        self._refilter()

    def set_images(self, images: set[str] | None) -> None:
        self.images = None if images is None else set(images)
        self._refilter()

    def reviews_changed(self) -> None:
        if self.review_state != "all":
            self._refilter()

    def set_statuses(self, statuses: set[str]) -> None:
        self.statuses = set(statuses)
        self._refilter()

    def set_label(self, label: str | None) -> None:
        self.label = label
        self._refilter()

    def set_score_range(self, low: float, high: float) -> None:
        self.score_range = (min(low, high), max(low, high))
        self._refilter()

    def _refilter(self) -> None:
        if hasattr(self, "endFilterChange"):  # Qt 6.10+; invalidateRowsFilter is deprecated there
            self.beginFilterChange()
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self.invalidateRowsFilter()

    @property
    def score_filtered(self) -> bool:
        return self.score_range != (0.0, 1.0)

    def filterAcceptsRow(self, source_row: int, source_parent) -> bool:
        record = self.results.records[source_row]
        if record.status not in self.statuses:
            return False
        if self.images is not None and record.image not in self.images:
            return False
        if self.review_state != "all":
            review = self.reviews.get(record.image)
            if self.review_state == "reviewed" and review is None:
                return False
            if self.review_state == "not reviewed" and review is not None:
                return False
            if self.review_state == "changed" and not changed(record, review):
                return False
        score = record.score
        if self.label is not None:
            if self.label not in record.labels:
                return False
            score = record.labels[self.label]
        if self.score_filtered:
            low, high = self.score_range
            return score is not None and low <= score <= high
        return True

    def record(self, row: int) -> ResultRecord | None:
        if not 0 <= row < self.rowCount():
            return None
        return self.data(self.index(row, 0), RECORD_ROLE)


__all__ = [
    "RECORD_ROLE",
    "REVIEW_STATES",
    "ResultsFilter",
    "ResultsModel",
    "SORT_KEYS",
    "changed",
    "describe",
]
