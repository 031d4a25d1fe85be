"""Previews of the current image and its result, and a bounded strip of recent thumbnails.

What is shown is decided by the data in the result, never by the task's name: a ranked `top` list
becomes score bars, an `output_preview` image (a denoised image, boxes or a mask overlay drawn by the
task adapter) is shown beside the input with a before/after slider. New tasks plug in by giving their
results one of those shapes. Previews are small PIL images made by the engine; no tensors here.
"""

from __future__ import annotations

from collections import deque

from PIL import Image
from PySide6.QtCore import QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPalette, QPen, QPixmap
from PySide6.QtWidgets import (
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QScrollArea,
    QSizePolicy,
    QStackedWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from batchlens.core.run.events import ImageResult

MAX_BARS = 5
THUMBNAILS = 8  # the strip's fixed bound: it never grows with the folder
THUMB_SIZE = 52


def to_qimage(image: Image.Image) -> QImage:
    """A QImage that owns its pixels (copied out of the PIL image)."""
    rgba = image.convert("RGBA")
    data = rgba.tobytes("raw", "RGBA")
    return QImage(data, rgba.width, rgba.height, 4 * rgba.width, QImage.Format.Format_RGBA8888).copy()


class ImageView(QWidget):
    """Shows a picture scaled to fit, keeping its aspect ratio; with `compare` set, a before/after view
    with a divider dragged on the picture itself (as Upscayl and image-comparison tools do): the
    `compare` image ("input") left of the divider, the picture ("output") right of it.

    `split` (0..1) is where the divider is, as a fraction of the picture's width from the left.
    Click or drag to move it; the Left and Right keys move it too.
    """

    split_changed = Signal(float)

    def __init__(self, placeholder: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self._pixmap: QPixmap | None = None
        self._compare: QPixmap | None = None
        self.split = 0.5
        self.placeholder = placeholder
        self.setMinimumSize(96, 96)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMouseTracking(True)

    def set_image(self, image: Image.Image | None, compare: Image.Image | None = None) -> None:
        self._pixmap = QPixmap.fromImage(to_qimage(image)) if image is not None else None
        self._compare = QPixmap.fromImage(to_qimage(compare)) if compare is not None else None
        self.update()

    def set_split(self, fraction: float) -> None:
        self.split = min(1.0, max(0.0, fraction))
        self.update()
        self.split_changed.emit(self.split)

    def comparing(self) -> bool:
        return self._pixmap is not None and self._compare is not None

    def _split_at(self, x: float) -> None:
        target = self._target()
        if target.width() > 0:
            self.set_split((x - target.x()) / target.width())

    def mousePressEvent(self, event) -> None:
        if self.comparing() and event.button() == Qt.MouseButton.LeftButton:
            self.setFocus()
            self._split_at(event.position().x())

    def mouseMoveEvent(self, event) -> None:
        if self.comparing():
            if event.buttons() & Qt.MouseButton.LeftButton:
                self._split_at(event.position().x())
            self.setCursor(Qt.CursorShape.SplitHCursor)
        else:
            self.unsetCursor()

    def keyPressEvent(self, event) -> None:
        step = {Qt.Key.Key_Left: -0.05, Qt.Key.Key_Right: 0.05}.get(event.key())
        if self.comparing() and step is not None:
            self.set_split(self.split + step)
        else:
            super().keyPressEvent(event)

    def has_image(self) -> bool:
        return self._pixmap is not None

    def image_size(self) -> QSize | None:
        return self._pixmap.size() if self._pixmap is not None else None

    def sizeHint(self) -> QSize:
        return QSize(260, 260)

    def _target(self) -> QRect:
        size = self._pixmap.size().scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
        x = (self.width() - size.width()) // 2
        y = (self.height() - size.height()) // 2
        return QRect(x, y, size.width(), size.height())

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        if self._pixmap is None:
            painter.setPen(self.palette().color(QPalette.ColorRole.PlaceholderText))
            painter.drawText(
                self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self.placeholder
            )
            return
        target = self._target()
        painter.drawPixmap(target, self._pixmap)
        if self._compare is None:
            return
        # The input covers the picture left of the divider; the output shows right of it.
        cut = int(target.width() * self.split)
        painter.save()
        painter.setClipRect(QRect(target.x(), target.y(), cut, target.height()))
        painter.drawPixmap(target, self._compare)
        painter.restore()
        x = target.x() + cut
        painter.setPen(QPen(self.palette().color(QPalette.ColorRole.Highlight), 2))
        painter.drawLine(x, target.top(), x, target.bottom())
        handle = QRect(x - 6, target.center().y() - 14, 12, 28)
        painter.setBrush(self.palette().color(QPalette.ColorRole.Highlight))
        painter.drawRoundedRect(handle, 4, 4)
        self._draw_tag(painter, "input", target, left=True)
        self._draw_tag(painter, "output", target, left=False)

    def _draw_tag(self, painter: QPainter, text: str, target: QRect, left: bool) -> None:
        """A small label in the picture's top corner, on a dark plate that reads on any image."""
        metrics = painter.fontMetrics()
        box = metrics.boundingRect(text).adjusted(-5, -2, 5, 2)
        x = target.left() + 4 if left else target.right() - box.width() - 4
        box.moveTo(x, target.top() + 4)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(0, 0, 0, 150))
        painter.drawRoundedRect(box, 3, 3)
        painter.setPen(QColor("white"))
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, text)


class ScoreBars(QWidget):
    """A ranked list (label, score) as labelled bars."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QGridLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.labels: list[QLabel] = []
        self.bars: list[QProgressBar] = []
        for row in range(MAX_BARS):
            label = QLabel()
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setTextVisible(True)
            bar.setToolTip("The model's score for this label (softmax, 0 to 100 %).")
            layout.addWidget(label, row, 0)
            layout.addWidget(bar, row, 1)
            self.labels.append(label)
            self.bars.append(bar)
        layout.setColumnStretch(1, 1)
        layout.setRowStretch(MAX_BARS, 1)

    def set_ranking(self, top: list[dict]) -> None:
        for row, (label, bar) in enumerate(zip(self.labels, self.bars)):
            visible = row < len(top)
            label.setVisible(visible)
            bar.setVisible(visible)
            if visible:
                entry = top[row]
                score = float(entry.get("score", 0.0))
                label.setText(str(entry.get("label", entry.get("index", "?"))))
                bar.setValue(round(score * 1000))
                bar.setFormat(f"{score * 100:.1f} %")
                bar.setToolTip(f"{label.text()}: score {score:.4f} (softmax, 0 to 1)")

    def ranking(self) -> list[tuple[str, float]]:
        return [
            (lab.text(), bar.value() / 1000) for lab, bar in zip(self.labels, self.bars) if not bar.isHidden()
        ]


def ranked_list(fields: dict) -> list[dict] | None:
    """The result's ranked list of {label, score} entries, if it has one."""
    top = fields.get("top")
    if isinstance(top, list) and top and all(isinstance(e, dict) and "score" in e for e in top):
        return top[:MAX_BARS]
    return None


class PreviewPanel(QWidget):
    """Input on the left, result on the right, a caption under them."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.input_view = ImageView("The image being processed appears here.")
        self.input_view.setToolTip("The current input image (a small copy made by the engine).")
        self.output_view = ImageView("The result appears here.")
        self.output_view.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.output_view.setToolTip(
            "Before / after: the input left of the divider, the model's output right of it. Drag on the "
            "picture (or press Left / Right) to move the divider."
        )
        self.bars = ScoreBars()
        self.bars.setToolTip("The best labels for this image, with their scores.")
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setAlignment(Qt.AlignmentFlag.AlignCenter)

        output_page = self.output_view

        self.result_stack = QStackedWidget()
        self.result_stack.addWidget(self.message)  # 0: text (errors, results without a picture)
        self.result_stack.addWidget(self.bars)  # 1: ranked scores
        self.result_stack.addWidget(output_page)  # 2: an output image
        self.message.setText("Press Run to start.")

        self.input_title = QLabel("<b>Input</b>")
        self.result_title = QLabel("<b>Result</b>")
        self.caption = QLabel(" ")
        self.caption.setWordWrap(True)
        self.caption.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.input_title, 0, 0)
        grid.addWidget(self.result_title, 0, 1)
        grid.addWidget(self.input_view, 1, 0)
        grid.addWidget(self.result_stack, 1, 1)
        grid.addWidget(self.caption, 2, 0, 1, 2)
        grid.setColumnStretch(0, 1)
        grid.setColumnStretch(1, 1)
        grid.setRowStretch(1, 1)
        self.shown: ImageResult | None = None

    def show_result(self, event: ImageResult) -> None:
        self.shown = event
        self.input_view.set_image(event.input_preview)
        top = ranked_list(event.fields)
        if not event.ok:
            self.message.setText(f"<span style='color:#e03131'>Failed:</span> {event.error}")
            self.result_stack.setCurrentIndex(0)
        elif event.output_preview is not None:
            self.output_view.set_image(event.output_preview, compare=event.input_preview)
            self.result_stack.setCurrentIndex(2)
        elif top is not None:
            self.bars.set_ranking(top)
            self.result_stack.setCurrentIndex(1)
        else:
            shown = {k: v for k, v in event.fields.items() if not isinstance(v, list | dict)}
            self.message.setText(
                ", ".join(f"{k}: {v}" for k, v in shown.items()) or "Done (nothing to show)."
            )
            self.result_stack.setCurrentIndex(0)
        status = "ok" if event.ok else "failed"
        best = f" · {top[0].get('label')} ({float(top[0]['score']) * 100:.1f} %)" if top else ""
        self.caption.setText(
            f"{event.index}/{event.total}  {event.image} — {status}, {event.seconds * 1000:.0f} ms{best}"
        )

    def clear(self, text: str = "Press Run to start.") -> None:
        self.shown = None
        self.input_view.set_image(None)
        self.output_view.set_image(None)
        self.message.setText(text)
        self.result_stack.setCurrentIndex(0)
        self.caption.setText(" ")


class PreviewBox(QGroupBox):
    """The "Previews" panel: the current image and its result over the strip of recent thumbnails."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Previews", parent)
        self.panel = PreviewPanel()
        self.thumbnails = ThumbnailStrip()
        self.thumbnails.setToolTip("The most recent images; click one to see its result again.")
        strip = QScrollArea()  # the strip keeps its size; a narrow window scrolls it instead
        strip.setWidget(self.thumbnails)
        strip.setWidgetResizable(True)
        strip.setFrameShape(QFrame.Shape.NoFrame)
        strip.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        strip.setFixedHeight(
            self.thumbnails.minimumHeight() + strip.horizontalScrollBar().sizeHint().height()
        )
        layout = QVBoxLayout(self)
        layout.addWidget(self.panel, 1)
        layout.addWidget(strip)
        self.thumbnails.activated.connect(self.panel.show_result)


class ThumbnailStrip(QWidget):
    """The last THUMBNAILS images, newest on the left (always in view). Click one to show it again."""

    activated = Signal(object)  # ImageResult

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.events: deque[ImageResult] = deque(maxlen=THUMBNAILS)
        self.buttons: list[QToolButton] = []
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        for slot in range(THUMBNAILS):
            button = QToolButton()
            button.setFixedSize(THUMB_SIZE + 6, THUMB_SIZE + 6)
            button.setIconSize(QSize(THUMB_SIZE, THUMB_SIZE))
            button.setAutoRaise(True)
            button.setVisible(False)
            button.clicked.connect(lambda _=False, s=slot: self._clicked(s))
            layout.addWidget(button)
            self.buttons.append(button)
        layout.addStretch(1)
        self.setMinimumHeight(THUMB_SIZE + 8)

    def add(self, event: ImageResult) -> None:
        self.events.append(event)

    def refresh(self) -> None:
        """Redraw the strip from the bounded list (called on the window's preview timer)."""
        for slot, button in enumerate(self.buttons):
            if slot < len(self.events):
                event = self.events[-1 - slot]
                if button.property("image") != (event.image, event.index):
                    source = event.output_preview or event.input_preview
                    if source is not None:
                        thumb = source.copy()
                        thumb.thumbnail((THUMB_SIZE, THUMB_SIZE))
                        button.setIcon(QPixmap.fromImage(to_qimage(thumb)))
                    else:
                        button.setIcon(QPixmap())
                    button.setText("" if source is not None else "✕")
                    state = "ok" if event.ok else f"failed: {event.error}"
                    button.setToolTip(f"{event.image} — {state}")
                    button.setStyleSheet("" if event.ok else "QToolButton { border: 2px solid #e03131; }")
                    button.setProperty("image", (event.image, event.index))
                button.setVisible(True)
            else:
                button.setVisible(False)

    def clear(self) -> None:
        self.events.clear()
        for button in self.buttons:
            button.setProperty("image", None)
        self.refresh()

    def _clicked(self, slot: int) -> None:
        if slot < len(self.events):
            self.activated.emit(self.events[-1 - slot])
