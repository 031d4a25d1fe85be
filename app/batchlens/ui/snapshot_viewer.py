"""The memory snapshot viewer: opens a pickle `--memory-snapshot` (or torch's `_dump_snapshot`) wrote,
and shows what memory_viz shows, inside the window.

* Timeline: live memory over time stacked by allocation, each block coloured by where it was allocated
  (`snapshot_layout.top_frame`); click a block to read its stack; BatchLens's batch markers on the
  time axis, and the peak named with the batch that was running.
* Segments: the allocator's segments (cudaMalloc'd blocks) and the blocks in each, with their state.

The file is read and laid out on a worker thread (`SnapshotLoader`), so a big snapshot never freezes
the window; what is drawn is decimated (`snapshot_layout`), and an over-limit, damaged or foreign file
is refused in one sentence (`core/outputs/snapshot_file.load_snapshot`, which runs no code from it).
"""

from __future__ import annotations

import gc
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, QThread, Signal
from PySide6.QtGui import QBrush, QColor, QPainterPath, QPen
from PySide6.QtWidgets import (
    QGraphicsPathItem,
    QLabel,
    QPlainTextEdit,
    QSplitter,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from batchlens.core.errors import BatchLensError
from batchlens.core.outputs.snapshot_file import load_snapshot
from batchlens.ui.snapshot_layout import SnapshotLayout, build_layout, colour_of, stack_text, top_frame

MIB = 2**20
MAX_SEGMENT_ROWS = 2000
MAX_BLOCK_ROWS = 200  # per segment


def _size(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / MIB:.1f} MiB"


def block_paths(layout: SnapshotLayout) -> dict[str, QPainterPath]:
    """One path per colour: every drawn block's band (its top edge forward, its bottom edge back), in
    MiB against seconds. Built on the loader's thread (a QPainterPath is a plain value)."""
    by_colour: dict[str, QPainterPath] = defaultdict(QPainterPath)
    times = layout.times
    for k in range(len(layout.sizes)):
        below = layout.below[:, k]
        inside = np.flatnonzero(~np.isnan(below))
        if not len(inside):
            continue
        xs = np.concatenate(([layout.starts[k]], times[inside], [min(layout.ends[k], times[-1])]))
        low = np.concatenate(([below[inside[0]]], below[inside], [below[inside[-1]]])) / MIB
        high = low + layout.sizes[k] / MIB
        path = by_colour[colour_of(layout.sites[k])]
        path.moveTo(xs[0], low[0])
        for x, y in zip(xs, high, strict=True):
            path.lineTo(x, y)
        for x, y in zip(xs[::-1], low[::-1], strict=True):
            path.lineTo(x, y)
        path.closeSubpath()
    return dict(by_colour)


def marker_segments(times: list[float], top: float) -> tuple[np.ndarray, np.ndarray]:
    """x, y of one vertical segment per time, from 0 to `top` (for connect="pairs")."""
    xs = np.repeat(np.asarray(times, dtype=float), 2)
    ys = np.tile([0.0, top], len(times))
    return xs, ys


def free_gradually(data: dict, chunk: int = 5000) -> None:
    """Drop a loaded snapshot's lists a slice at a time, so that other threads run in between."""
    lists = [*data.get("device_traces", []), data.get("segments", [])]
    data.clear()
    for items in lists:
        if isinstance(items, list):
            while items:
                del items[-chunk:]


class SnapshotLoader(QObject):
    """Reads and lays out one file on its own thread; `loaded(layout, paths)` or `failed(sentence)`."""

    loaded = Signal(object, object)
    failed = Signal(str)

    def __init__(self, path: Path, max_bytes: int | None = None):
        super().__init__()
        self.path = Path(path)
        self.max_bytes = max_bytes

    def run(self) -> None:
        # Two things would hold the GIL (and so the window) for a second or more with a big file: the
        # cyclic garbage collector walking the millions of new objects, and freeing them all at once.
        # The collector waits until the file is laid out; the objects are freed a slice at a time.
        collecting = gc.isenabled()
        gc.disable()
        try:
            kwargs = {} if self.max_bytes is None else {"max_bytes": self.max_bytes}
            data = load_snapshot(self.path, **kwargs)
            layout = build_layout(data)
            free_gradually(data)
            paths = block_paths(layout)
        except BatchLensError as exc:
            self.failed.emit(str(exc))
            return
        except Exception as exc:  # a well-formed pickle holding nonsense: still one sentence
            self.failed.emit(f"{self.path} is not a memory snapshot BatchLens can read ({exc}).")
            return
        finally:
            if collecting:
                gc.enable()
        self.loaded.emit(layout, paths)


class SnapshotViewer(QWidget):
    """`open(path)`; `opened` once drawn, `failed(sentence)` if refused."""

    opened = Signal(object)  # SnapshotLayout
    failed = Signal(str)

    def __init__(self, parent: QWidget | None = None, max_bytes: int | None = None):
        super().__init__(parent)
        self.setWindowTitle("Memory snapshot")
        self.max_bytes = max_bytes
        self.layout_data: SnapshotLayout | None = None
        self.path: Path | None = None
        self._thread: QThread | None = None
        self._loader: SnapshotLoader | None = None
        self.block_items: list[QGraphicsPathItem] = []

        self.status = QLabel("Open a memory snapshot (a .pickle file from --memory-snapshot).")
        self.status.setWordWrap(True)
        self.plot_widget = pg.PlotWidget()
        self.plot_item = self.plot_widget.getPlotItem()
        self.plot_item.setLabel("bottom", "time since the first recorded event", units="s")
        self.plot_item.setLabel("left", "live memory", units="MiB")
        self.plot_item.getAxis("left").enableAutoSIPrefix(False)
        self.plot_item.showGrid(x=True, y=True, alpha=0.2)
        self.total_curve = self.plot_item.plot([], [], pen=pg.mkPen("#495057", width=1), name="total live")
        dash = pg.mkPen("#868e96", width=1, style=Qt.PenStyle.DashLine)
        self.marker_item = self.plot_item.plot([], [], pen=dash)
        self.oom_item = self.plot_item.plot([], [], pen=pg.mkPen("#e03131", width=2))
        self.plot_widget.setToolTip(
            "Live memory over time, one band per allocation, stacked on the allocations made before it "
            "that are still alive; the colour says where it was allocated. Click a band for its stack. "
            "Dashed lines mark the batches (the line above says which batch made the peak), red ones "
            "where the allocator ran out of memory; the grey outline is the total, small blocks included."
        )
        self.plot_widget.scene().sigMouseClicked.connect(self._on_click)
        self.stack = QPlainTextEdit()
        self.stack.setReadOnly(True)
        self.stack.setPlaceholderText("Click a block on the timeline to see where it was allocated.")
        timeline = QSplitter(Qt.Orientation.Vertical)
        timeline.addWidget(self.plot_widget)
        timeline.addWidget(self.stack)
        timeline.setStretchFactor(0, 3)
        self.segments = QTreeWidget()
        self.segments.setHeaderLabels(["segment / block", "size", "state", "allocated at"])
        self.segments.setToolTip(
            "The allocator's segments (memory it asked the driver for) and the blocks cut from each: "
            "active blocks hold tensors; inactive ones are cached, free for reuse."
        )
        self.tabs = QTabWidget()
        self.tabs.addTab(timeline, "Timeline")
        self.tabs.addTab(self.segments, "Segments")
        box = QVBoxLayout(self)
        box.addWidget(self.status)
        box.addWidget(self.tabs, 1)

    # -- loading ------------------------------------------------------------------------------------
    def open(self, path: Path) -> None:
        """Read `path` on a worker thread; the window stays free meanwhile."""
        self.wait()
        self.path = Path(path)
        self.status.setText(f"Reading {self.path}…")
        self._thread = QThread(self)
        self._loader = SnapshotLoader(self.path, self.max_bytes)
        self._loader.moveToThread(self._thread)
        self._thread.started.connect(self._loader.run)
        self._loader.loaded.connect(self._show)
        self._loader.failed.connect(self._refuse)
        # Direct: the loader's thread ends its own loop as soon as it is done (QThread.quit is
        # thread-safe), not when the window gets round to it.
        self._loader.loaded.connect(self._thread.quit, Qt.ConnectionType.DirectConnection)
        self._loader.failed.connect(self._thread.quit, Qt.ConnectionType.DirectConnection)
        self._thread.start()

    def is_loading(self) -> bool:
        return self._thread is not None and self._thread.isRunning()

    def wait(self, ms: int = 60_000) -> bool:
        if self._thread is None:
            return True
        done = self._thread.wait(ms)
        return done

    def closeEvent(self, event) -> None:
        self.wait()
        super().closeEvent(event)

    def _refuse(self, sentence: str) -> None:
        self.status.setText(sentence)
        self.failed.emit(sentence)

    # -- drawing ------------------------------------------------------------------------------------
    def _show(self, layout: SnapshotLayout, paths: dict[str, QPainterPath]) -> None:
        self.layout_data = layout
        for item in self.block_items:
            self.plot_item.removeItem(item)
        self.block_items = []
        for colour, path in paths.items():
            item = QGraphicsPathItem(path)
            fill = QColor(colour)
            fill.setAlpha(200)
            item.setBrush(QBrush(fill))
            item.setPen(QPen(Qt.PenStyle.NoPen))
            self.plot_item.addItem(item)
            self.block_items.append(item)
        self.total_curve.setData(layout.times, layout.total / MIB)
        # Every batch marker in one item (thousands of lines as items would take the window seconds to
        # add): a vertical segment per batch, dashed grey; the out-of-memory events in red.
        top = max(float(layout.total.max(initial=0.0)) / MIB, 1.0) * 1.05
        self.marker_item.setData(*marker_segments([m[0] for m in layout.markers], top), connect="pairs")
        self.oom_item.setData(*marker_segments(layout.ooms, top), connect="pairs")
        self.plot_item.autoRange()
        self._fill_segments(layout)
        self.status.setText(self.summary(layout))
        self.opened.emit(layout)

    def summary(self, layout: SnapshotLayout) -> str:
        when, peak = layout.peak
        text = (
            f"{self.path}: {layout.events} events, {layout.blocks_total} allocations "
            f"({len(layout.sizes)} biggest drawn one by one), {len(layout.segments)} segments. "
            f"Peak {_size(peak)} at {when:.3f} s"
        )
        marker = layout.marker_before(when)
        if marker is not None:
            text += f", during the batch of {marker[2]}"
        return text + "."

    def _fill_segments(self, layout: SnapshotLayout) -> None:
        self.segments.clear()
        for segment in layout.segments[:MAX_SEGMENT_ROWS]:
            blocks = segment.get("blocks", []) or []
            row = QTreeWidgetItem(
                [
                    f"{segment.get('segment_type', '')} segment {segment.get('address', 0):#x}",
                    _size(segment.get("total_size", 0)),
                    f"{_size(segment.get('allocated_size', 0))} allocated",
                    f"{len(blocks)} blocks",
                ]
            )
            for block in blocks[:MAX_BLOCK_ROWS]:
                child = QTreeWidgetItem(
                    [
                        f"block {block.get('address', 0):#x}",
                        _size(block.get("size", 0)),
                        str(block.get("state", "")),
                        top_frame(block.get("frames", [])) if block.get("frames") else "",
                    ]
                )
                child.setToolTip(3, stack_text(block.get("frames", [])))
                row.addChild(child)
            if len(blocks) > MAX_BLOCK_ROWS:
                row.addChild(QTreeWidgetItem([f"… and {len(blocks) - MAX_BLOCK_ROWS} more blocks"]))
            self.segments.addTopLevelItem(row)

    # -- clicking a block -----------------------------------------------------------------------------
    def describe_block(self, k: int) -> str:
        layout = self.layout_data
        freed = "still allocated at the end" if layout.alive[k] else f"freed at {layout.ends[k]:.4f} s"
        head = (
            f"{_size(layout.sizes[k])} allocated at {layout.starts[k]:.4f} s, {freed}, in {layout.sites[k]}"
        )
        marker = layout.marker_before(layout.starts[k])
        if marker is not None:
            head += f", during the batch of {marker[2]}"
        return head + "\n\n" + stack_text(layout.frames[k])

    def show_block_at(self, time_s: float, mib: float) -> int | None:
        if self.layout_data is None:
            return None
        k = self.layout_data.block_at(time_s, mib * MIB)
        if k is not None:
            self.stack.setPlainText(self.describe_block(k))
        return k

    def _on_click(self, event) -> None:
        if not self.plot_item.sceneBoundingRect().contains(event.scenePos()):
            return
        point = self.plot_item.vb.mapSceneToView(event.scenePos())
        self.show_block_at(point.x(), point.y())
