"""Which images cost the most memory: a small histogram of each image's memory (the peak of the batch
it ran in, `peak_memory_bytes` in predictions.jsonl) beside the results, and the costliest named.
It follows the results model by itself (rows added, model reset); hidden for runs without the figure."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

BINS = 12


def _size(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def histogram(values: list[int], bins: int = BINS) -> tuple[np.ndarray, np.ndarray]:
    """(counts, edges in bytes); one bin when every image cost the same."""
    data = np.asarray(values, dtype=float)
    low, high = float(data.min()), float(data.max())
    if high <= low:
        return np.array([len(data)]), np.array([low, low + 1.0])
    return np.histogram(data, bins=bins, range=(low, high))


class MemoryHistogram(QWidget):
    def __init__(self, model, parent: QWidget | None = None):
        super().__init__(parent)
        self.model = model
        self.title = QLabel("<b>Memory per image</b>")
        self.title.setToolTip(
            "How many images needed how much memory: each image's figure is the peak memory while its "
            "batch ran (images in one batch share it). Sort by Memory to see the costliest first."
        )
        self.costliest = QLabel()
        self.costliest.setWordWrap(True)
        self.plot = pg.PlotWidget()
        self.plot.setFixedHeight(110)
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        self.plot.getPlotItem().setLabel("bottom", "MiB")
        self.plot.getAxis("bottom").enableAutoSIPrefix(False)
        self.plot.setToolTip(self.title.toolTip())
        self.bars = pg.BarGraphItem(x0=[], x1=[], height=[], brush="#3d8bfd")
        self.plot.addItem(self.bars)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 6, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.plot)
        layout.addWidget(self.costliest)
        self.counts = np.zeros(0)
        self._pending = QTimer(self)
        self._pending.setSingleShot(True)
        self._pending.setInterval(200)  # a big file arrives in steps: redraw once they settle
        self._pending.timeout.connect(self.refresh)
        for signal in (model.rowsInserted, model.modelReset, model.layoutChanged):
            signal.connect(self._pending.start)
        self.setVisible(False)

    def refresh(self) -> None:
        records = [r for r in self.model.records if r.memory is not None]
        self.setVisible(bool(records))
        if not records:
            self.counts = np.zeros(0)
            self.bars.setOpts(x0=[], x1=[], height=[])
            return
        self.counts, edges = histogram([r.memory for r in records])
        mib = edges / 2**20
        self.bars.setOpts(x0=mib[:-1], x1=mib[1:], height=self.counts)
        top = max(records, key=lambda r: r.memory)
        self.costliest.setText(f"Costliest: {top.image} ({_size(top.memory)}).")
