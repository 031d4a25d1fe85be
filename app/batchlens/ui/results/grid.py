"""The grid of results: a QListView in icon mode (it lays out and paints only the tiles in view) with a
delegate that draws each tile from the thumbnail cache and asks the loader for the missing ones."""

from __future__ import annotations

from PySide6.QtCore import QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPalette, QPen
from PySide6.QtWidgets import QAbstractItemView, QListView, QStyle, QStyledItemDelegate

from batchlens.core.outputs.results_index import ResultRecord
from batchlens.ui.results.model import RECORD_ROLE, describe, reviewed_words
from batchlens.ui.results.thumbnails import Job, ThumbnailCache, ThumbnailLoader

TILE = 132  # picture area of a tile, in device-independent pixels
PAD = 6
STATUS_COLOURS = {"error": QColor("#e03131"), "recovered": QColor("#f08c00")}


class TileDelegate(QStyledItemDelegate):
    """Paints a tile: the picture (or a placeholder while it is made), the file name, the result."""

    def __init__(self, cache: ThumbnailCache, loader: ThumbnailLoader, make_job, parent=None):
        super().__init__(parent)
        self.cache, self.loader, self.make_job = cache, loader, make_job

    def sizeHint(self, option, index) -> QSize:
        line = option.fontMetrics.height()
        return QSize(TILE + 2 * PAD, TILE + 2 * PAD + 2 * line + 2)

    def paint(self, painter: QPainter, option, index) -> None:
        record: ResultRecord | None = index.data(RECORD_ROLE)
        if record is None:
            return
        painter.save()
        palette = option.palette
        rect = option.rect.adjusted(2, 2, -2, -2)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        if selected:
            painter.fillRect(rect, palette.color(QPalette.ColorRole.Highlight))
        picture_rect = QRect(rect.x() + PAD - 2, rect.y() + PAD - 2, TILE, TILE)
        self._paint_picture(painter, picture_rect, record, palette)
        colour = STATUS_COLOURS.get(record.status)
        if colour is not None:
            painter.setPen(QPen(colour, 3))
            painter.drawRect(picture_rect.adjusted(1, 1, -2, -2))
        text_role = QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text
        painter.setPen(palette.color(text_role))
        metrics = option.fontMetrics
        line = metrics.height()
        text_rect = QRect(rect.x() + 2, picture_rect.bottom() + 3, rect.width() - 4, line)
        name = metrics.elidedText(
            index.data(Qt.ItemDataRole.DisplayRole), Qt.TextElideMode.ElideMiddle, text_rect.width()
        )
        painter.drawText(text_rect, Qt.AlignmentFlag.AlignHCenter, name)
        if colour is not None and not selected:
            painter.setPen(colour)
        review = getattr(index.model(), "reviews", {}).get(record.image)
        words = describe(record) if review is None else reviewed_words(review)
        result = metrics.elidedText(words, Qt.TextElideMode.ElideRight, text_rect.width())
        painter.drawText(text_rect.translated(0, line), Qt.AlignmentFlag.AlignHCenter, result)
        painter.restore()

    def _paint_picture(self, painter: QPainter, target: QRect, record: ResultRecord, palette) -> None:
        job = self.make_job(record)
        image = self.cache.get(job.key)
        if image is None:
            if not self.loader.is_waiting(job.key):
                self.loader.request(job)
            painter.fillRect(target, palette.color(QPalette.ColorRole.AlternateBase))
            return
        if image.isNull():  # nothing to show: no input here, no result picture
            painter.fillRect(target, palette.color(QPalette.ColorRole.AlternateBase))
            painter.setPen(palette.color(QPalette.ColorRole.PlaceholderText))
            text = "no picture" if record.status != "error" else (record.error or "failed")
            if record.error and record.error.startswith(record.image + ": "):
                text = text[len(record.image) + 2 :]  # the tile already names the file
            flags = Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap
            painter.drawText(target.adjusted(8, 8, -8, -8), flags, text)
            return
        size = image.size().scaled(target.size(), Qt.AspectRatioMode.KeepAspectRatio)
        x = target.x() + (target.width() - size.width()) // 2
        y = target.y() + (target.height() - size.height()) // 2
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.drawImage(QRect(x, y, size.width(), size.height()), image)


class ResultsGrid(QListView):
    """Icon-mode list of tiles. Enter or a click opens the current result; Esc asks to go back."""

    open_requested = Signal(int)  # a row of the (filtered) model
    back_requested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setUniformItemSizes(True)  # layout without asking every row its size: 20,000 rows stay fast
        self.setSpacing(2)
        self.setWrapping(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.verticalScrollBar().setSingleStep(24)
        self.setMouseTracking(True)
        self.clicked.connect(lambda index: self.open_requested.emit(index.row()))

    def keyPressEvent(self, event) -> None:
        key = event.key()
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.currentIndex().isValid():
            self.open_requested.emit(self.currentIndex().row())
            return
        if key == Qt.Key.Key_Escape:
            self.back_requested.emit()
            return
        super().keyPressEvent(event)


def tile_pixels(widget) -> int:
    """Tile pictures are made at the screen's resolution (twice TILE on a 200 % display)."""
    return round(TILE * widget.devicePixelRatioF())


__all__ = ["Job", "ResultsGrid", "TileDelegate", "tile_pixels"]
