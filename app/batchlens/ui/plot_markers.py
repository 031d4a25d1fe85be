"""The memory plot's markers: a dashed vertical line where a run started and ended, where an image
failed, where Clear cache was pressed and where the engine noted something about memory.

Labels sit on the side of their line that faces the middle of the plot and are laid out in rows, so
none prints over another; lines that scroll out of the plot's window are removed, so their number
stays bounded. Every marker is kept (up to 500) for Export CSV, also once its line is gone.

Markers never hide the data: lines and labels are drawn behind the memory lines. When a new run
starts, the markers of the runs before it fade, so the current run's stand out.
"""

from __future__ import annotations

from collections import deque

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush

from batchlens.ui.memory_history import Marker

LABEL_WIDTH_PX = 90  # about the width of a marker label ("clear cache") at 8-9 pt
LABEL_ROW_PX = 26  # a marker label's height at 8-9 pt, its offset from the top, and a little air
BEHIND_THE_DATA = (
    -20
)  # z of a marker's line (and its label, a child): under the curves (0) and fills (-10, -5)
OLDER_RUN_OPACITY = 0.35  # the markers of the runs before the current one
FACING_THE_MIDDLE = [(0, 0), (1, 0)]  # pyqtgraph: text right of a line left of the middle, and so on
MARKER_COLORS = {
    "run_start": "#2f9e44",
    "run_end": "#2f9e44",
    "failure": "#e03131",
    "clear_cache": "#d6336c",
}


class PlotMarkers:
    """The markers drawn on `plot_item`; `fill` is the brush behind each label (the plot's background)."""

    def __init__(self, plot_item: pg.PlotItem, fill: QBrush):
        self.plot_item = plot_item
        self.fill = fill
        self.markers: deque[Marker] = deque(maxlen=500)
        self._lines: deque[tuple[Marker, pg.InfiniteLine]] = deque()
        self._labels: list[tuple[Marker, pg.InfLineLabel]] = []
        self._rows = 1  # label rows the last layout used (the scale's headroom leaves room for them)

    def add(self, marker: Marker) -> None:
        self.markers.append(marker)
        if marker.kind == "run_start":  # a new run: the markers of the runs before it fade
            for _, older in self._lines:
                older.setOpacity(OLDER_RUN_OPACITY)
        color = MARKER_COLORS.get(marker.kind, "#868e96")
        line = pg.InfiniteLine(
            pos=marker.time_s,
            angle=90,
            movable=False,
            pen=pg.mkPen(color, width=1.5, style=Qt.PenStyle.DashLine),
        )
        line.setToolTip(marker.text)
        line.setZValue(BEHIND_THE_DATA)
        if marker.kind != "failure":  # failures can come in dozens; their lines speak without a label
            label = pg.InfLineLabel(
                line,
                text=marker.kind.replace("_", " "),
                position=0.97,  # laid out below
                # Text on the side of the line that faces the middle of the plot, so a marker at the
                # right edge (every new one) is not cut off and one near the left edge neither.
                anchors=FACING_THE_MIDDLE,
                color=color,
                fill=self.fill,
            )
            self._labels.append((marker, label))
        self.plot_item.addItem(line, ignoreBounds=True)
        self._lines.append((marker, line))
        self.layout_labels()

    def lines(self) -> list[tuple[Marker, pg.InfiniteLine]]:
        return list(self._lines)

    def headroom(self) -> float:
        """The scale's top over the highest line: the label rows' height, so the labels along the top
        sit above the lines instead of hiding them (between 1.1 and 1.5 times)."""
        height = self.plot_item.vb.height()
        return min(1.5, max(1.1, height / max(height - self._rows * LABEL_ROW_PX, 1.0)))

    def layout_labels(self) -> None:
        """Put each label where it overlaps no other: on the side of its line that faces the middle of
        the plot, else on the other side where that fits in the view, else in the next row down.
        A label spans its text's width, in seconds at the plot's current scale, so two labels facing
        each other overlap while their lines are less than both widths apart. Rows are one label
        height apart in pixels, and the scale leaves room above the lines for the rows used (a label
        in a lower row would hide the lines behind it). Run again when the plot changes size."""
        height = self.plot_item.vb.height()
        width = self.plot_item.vb.width()
        if height < 1 or width < 1:
            return
        x_min, x_max = self.plot_item.viewRange()[0]
        per_px = (x_max - x_min) / width  # seconds a pixel: the span shown, not the whole window
        placed: list[tuple[float, float, int]] = []  # (from, to, row) of labels already laid out
        for marker, label in self._labels:
            box = label.boundingRect()
            label_h = box.height() or 20.0
            span = ((box.width() or LABEL_WIDTH_PX) + 4) * per_px  # and a little air
            t = marker.time_s
            right, left = (t, t + span), (t - span, t)  # the text right of its line, or left of it
            sides = [right, left] if t < (x_min + x_max) / 2 else [left, right]
            sides = [sides[0]] + [s for s in sides[1:] if x_min <= s[0] and s[1] <= x_max]
            rows = max(1, int((height - 4) // (label_h + 2)))
            row, side = next(
                ((r, s) for r in range(rows) for s in sides if not self._collides(placed, s, r)),
                (len(placed) % rows, sides[0]),
            )
            placed.append((*side, row))
            if side == sides[0]:  # facing the middle, as pyqtgraph keeps it when the line moves
                label.anchors = FACING_THE_MIDDLE
            else:
                label.anchors = [(0, 0), (0, 0)] if side == right else [(1, 0), (1, 0)]
            label.setPosition(1.0 - (2 + row * (label_h + 2)) / height)
        self._rows = 1 + max((row for _, _, row in placed), default=0)

    @staticmethod
    def _collides(placed: list[tuple[float, float, int]], side: tuple[float, float], row: int) -> bool:
        return any(a < side[1] and side[0] < b for a, b, r in placed if r == row)

    def drop_older_than(self, oldest_s: float) -> None:
        """Remove the lines left of the plot's window (and any beyond 500), with their labels.

        A label is a child item of its line, and each holds the other from Python (`label.line`, the
        line's signal to the label). Dropped together, the line's wrapper could be freed from inside
        the label's: Qt deleted the label with its line while its wrapper was being freed, and the
        window segfaulted when the first labelled marker scrolled out of the plot (issue #25). So a
        label is taken off its line first: each wrapper then deletes only its own item."""
        while self._lines and (self._lines[0][0].time_s < oldest_s or len(self._lines) > 500):
            marker, line = self._lines.popleft()
            self.plot_item.removeItem(line)
            for label in [label for m, label in self._labels if m is marker]:
                line.sigPositionChanged.disconnect(label.valueChanged)
                label.setParentItem(None)
                label.line = None
            self._labels = [(m, label) for m, label in self._labels if m is not marker]

    def set_fill(self, fill: QBrush) -> None:
        """A new background behind the labels (the palette changed)."""
        self.fill = fill
        for _, label in self._labels:
            label.fill = fill
            label.update()
