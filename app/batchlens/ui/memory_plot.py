"""The live memory plot: a QTimer on the GUI thread samples the memory probe ~10 times a second.

History lives in a fixed-size ring buffer (the plot never grows with the run), one PlotDataItem per
line gets `setData` on each tick, and markers on the time axis say where a run started and ended,
where an image failed and where Clear cache was pressed (`PlotMarkers`). The scale follows the run's
own lines, not the size of the card (`scale_top`); "Whole GPU" shows the whole card. The legend sits
above the plot, so it covers neither lines nor marker labels. The probe is injectable, so tests can feed
known numbers.
"""

from __future__ import annotations

import math
import time
from collections import deque
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from batchlens.core.machine.memory import ClearResult, MemoryProbe, MemorySample, format_bytes
from batchlens.ui.memory_history import (
    COLUMNS,
    Marker,
    RingBuffer,
    held_unused,
    nan_if_none,
    scale_top,
)
from batchlens.ui.plot_files import PlotFiles
from batchlens.ui.plot_legend import CPU_TIPS, TIPS, explain_entries, fit_legend, legend_above
from batchlens.ui.plot_markers import PlotMarkers

MIB = 2**20
GIB = 2**30


# Colours chosen to read on both a light and a dark background.
LINE_COLORS = {
    "allocated": "#3d8bfd",
    "reserved": "#f08c00",
    "peak": "#ae3ec9",
    "device_used": "#12b886",
    "device_total": "#868e96",
    "held_unused": "#e8a400",
    "fragmented": "#e03131",
}
#: the held-but-unused curves are drawn filled down to zero: light band = free cache, red = fragmented
FILL_ALPHA = {"held_unused": 50, "fragmented": 110}
SPLIT_KEYS = ("held_unused", "fragmented")


def held_text(held: float, inactive: float, segments: int | None) -> str:
    """The held-but-unused memory in words: how much is fragmented, how much is free cache."""
    inactive = min(inactive, held)
    text = (
        f"held unused {format_bytes(held)}: fragmented {format_bytes(inactive)}, "
        f"free cache {format_bytes(held - inactive)}"
    )
    if segments is not None:
        text += f" · {segments} segment{'s' if segments != 1 else ''}"
    return text


class MemoryPlot(PlotFiles, QWidget):
    """The plot, the numbers under it, and Clear cache / Save PNG / Export CSV."""

    cache_cleared = Signal(object)  # ClearResult
    sampled = Signal(object)  # MemorySample, after each tick (for the status line and tests)
    snapshot_requested = Signal()  # Record snapshot: the window asks the run to record one

    def __init__(
        self,
        probe: MemoryProbe | None = None,
        interval_ms: int = 100,
        window_s: float = 120.0,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.window_s = window_s
        self.history = RingBuffer(int(window_s * 1000 / interval_ms) + 10, len(COLUMNS))
        self.save_folder: Path | None = None  # where Save plot / Export CSV dialogs start
        self._t0 = time.monotonic()
        self._divisor = MIB
        self._last: MemorySample | None = None
        self.probe: MemoryProbe | None = None
        self._build_plot()
        self._build_labels()
        self._build_layout(self._build_buttons())
        self._apply_palette()
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.sample_now)
        if probe is not None:
            self.set_probe(probe)
        self.timer.start()

    # -- built once, by __init__ ---------------------------------------------------------------------
    def _build_plot(self) -> None:
        """The plot: fixed axes, the legend above it, the markers, one curve a line, the hover line."""
        self.plot_widget = pg.PlotWidget()
        # A low minimum height: when a long message takes the window's height, the plot gives way
        # (it still reads at 90 px) instead of the panel's labels being drawn over its time axis.
        self.plot_widget.setMinimumSize(300, 90)
        self.plot_widget.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.plot_item = self.plot_widget.getPlotItem()
        self.plot_item.setMouseEnabled(x=False, y=False)
        self.plot_item.hideButtons()
        self.plot_item.setMenuEnabled(False)
        self.plot_item.showGrid(x=True, y=True, alpha=0.2)
        self.plot_item.setClipToView(True)
        self.plot_item.setLabel("bottom", "time", units="s")
        self.plot_item.getAxis("left").enableAutoSIPrefix(False)
        self.plot_item.getAxis("bottom").enableAutoSIPrefix(False)
        self._axis_label: tuple[str, str] | None = None
        self.legend = legend_above(self.plot_item)
        self.marks = PlotMarkers(self.plot_item, self._label_fill())
        self.curves: dict[str, pg.PlotDataItem] = {}
        for key in ("allocated", "reserved", "peak", "device_used", "device_total"):
            style = {"peak": Qt.PenStyle.DotLine, "device_total": Qt.PenStyle.DashLine}
            width = 1.5 if key == "device_total" else 2
            pen = pg.mkPen(LINE_COLORS[key], width=width, style=style.get(key, Qt.PenStyle.SolidLine))
            self.curves[key] = self.plot_item.plot([], [], pen=pen, name=key)
            self.curves[key].key = key
        for key in SPLIT_KEYS:  # reserved - allocated, and its fragmented part, filled down to zero
            fill = pg.mkColor(LINE_COLORS[key])
            fill.setAlpha(FILL_ALPHA[key])
            curve = self.plot_item.plot(
                [], [], pen=pg.mkPen(LINE_COLORS[key], width=1), name=key, fillLevel=0, fillBrush=fill
            )
            curve.key = key
            curve.setZValue(-10 if key == "held_unused" else -5)  # under the lines, fragmented on top
            self.curves[key] = curve
        self._total_shown = False
        self._split_shown = False
        self.hover_line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#adb5bd", width=1))
        self.hover_line.setVisible(False)
        self.plot_item.addItem(self.hover_line, ignoreBounds=True)
        self.plot_widget.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.plot_item.vb.sigResized.connect(lambda _vb: self.marks.layout_labels())
        self.plot_item.geometryChanged.connect(lambda: fit_legend(self.legend, self.plot_item))

    def _build_labels(self) -> None:
        """The words around the plot: its title, where the work runs, the numbers, the hover values."""
        self.title = QLabel()
        self.title.setWordWrap(True)
        self.where_label = QLabel()  # where the work runs, when that is not this process (a cluster)
        self.where_label.setWordWrap(True)
        self.where_label.setVisible(False)
        self.readout = QLabel("—")
        self.readout.setWordWrap(True)
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.hover_label = QLabel(" ")
        self.hover_label.setToolTip("Move the mouse over the plot to read the values at that moment.")

    def _build_buttons(self) -> QVBoxLayout:
        """Clear cache, Whole GPU and Record snapshot; Save plot as PNG and Export CSV below them."""
        self.clear_button = QPushButton("Clear cache")
        self.clear_button.setToolTip(
            "Run Python's garbage collector and hand the memory PyTorch keeps cached back to the "
            "device (empty_cache). Works during a run and when idle; the reserved line drops."
        )
        self.clear_button.clicked.connect(self.clear_cache)
        self.whole_device = QCheckBox("Whole GPU")
        self.whole_device.setToolTip(
            "Scale the plot to the whole GPU, up to its total memory. Unticked, the scale follows this "
            "run's own lines, and the total is drawn once they come near it."
        )
        self.whole_device.toggled.connect(lambda _on: self._redraw())
        self.snapshot_button = QPushButton("Record snapshot")
        self.snapshot_button.setToolTip(
            "During a run on a CUDA GPU: record every allocation of the next 50 images, with its stack, "
            "into memory-snapshot.pickle in the output folder; open it with File > Open memory snapshot."
        )
        self.snapshot_button.clicked.connect(self.snapshot_requested)
        self.save_button = QPushButton("Save plot as PNG…")
        self.save_button.setToolTip("Save a picture of the plot as it is now.")
        self.save_button.clicked.connect(self._ask_save_png)
        self.csv_button = QPushButton("Export CSV…")
        self.csv_button.setToolTip(
            "Save the plotted history (bytes, one row per sample, with markers) as CSV."
        )
        self.csv_button.clicked.connect(self._ask_export_csv)

        # Two rows, so the plot's panel stays narrow enough for an 800×600 screen beside the previews
        buttons = QVBoxLayout()
        for row_widgets in (
            (self.clear_button, self.whole_device, self.snapshot_button),
            (self.save_button, self.csv_button),
        ):
            row = QHBoxLayout()
            for widget in row_widgets:
                row.addWidget(widget)
            row.addStretch(1)
            buttons.addLayout(row)
        return buttons

    def _build_layout(self, buttons: QVBoxLayout) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.where_label)
        layout.addWidget(self.plot_widget, 1)
        layout.addWidget(self.readout)
        layout.addWidget(self.hover_label)
        layout.addLayout(buttons)

    # -- the probe --------------------------------------------------------------------------------
    def set_probe(self, probe: MemoryProbe) -> None:
        """Plot a new probe (another device): history starts afresh, the lines are relabelled."""
        self.probe = probe
        self.history.clear()
        self._axis_label = None
        cpu = probe.kind == "cpu"
        names = {
            "allocated": "process RAM" if cpu else "allocated (live tensors)",
            "reserved": "reserved (allocated + cache)",
            "peak": "peak RAM" if cpu else "peak allocated",
            "device_used": "device used (all processes)",
            "device_total": "device total",
            "held_unused": "held unused (reserved − allocated)",
            "fragmented": "fragmented (inactive splits)",
        }
        self.legend.clear()
        self._total_shown = False  # its legend entry comes with the line (`_redraw`)
        self._split_shown = False  # so do the held-but-unused curves, once the backend reports splits
        for key, curve in self.curves.items():
            # On the CPU "reserved" is the same RSS, and "device" is the whole machine's RAM, which
            # would squash the process line flat: those numbers are shown as text instead.
            visible = not (cpu and key in ("reserved", "device_used", "device_total", *SPLIT_KEYS))
            curve.setVisible(visible)
            curve.opts["name"] = names[key]
            if visible and key not in ("device_total", *SPLIT_KEYS):
                self.legend.addItem(curve, names[key])
        self._explain_legend()
        fit_legend(self.legend, self.plot_item)
        if cpu:
            self.title.setText("<b>Process RAM</b> — running on the CPU, so this is RAM, not GPU memory.")
        else:
            self.title.setText(f"<b>{probe.kind.upper()} memory</b> (hover here for what the lines mean)")
        tip = probe.description or ""
        if probe.kind == "cuda":
            tip += (
                "\n\nThe gap between 'device used' and 'reserved' is memory PyTorch cannot free: the CUDA "
                "context and other processes on the same GPU. The dashed line is the device total."
            )
        self.plot_widget.setToolTip(tip)
        self.title.setToolTip(tip)
        self.sample_now()
        if self._last is not None and self._last.inactive_split is None and probe.fragmentation_note:
            tip += "\n\n" + probe.fragmentation_note  # what this backend does not offer
            self.plot_widget.setToolTip(tip)
            self.title.setToolTip(tip)
        # Only where there is a device total to scale to (not the CPU's RAM, not MPS).
        total = self._last.device_total if self._last is not None else None
        self.whole_device.setVisible(not cpu and total is not None)

    def set_where(self, text: str | None) -> None:
        """Say where the work runs when this plot cannot show it (None: here, as the title says)."""
        self.where_label.setText(text or "")
        self.where_label.setVisible(bool(text))

    def sample_now(self) -> None:
        if self.probe is None:
            return
        try:
            sample = self.probe.sample()
        except Exception as exc:  # a probe must never take the window down
            self.readout.setText(f"Cannot read memory: {exc}")
            return
        self._last = sample
        self.history.append(
            (
                sample.time - self._t0,
                sample.allocated,
                sample.reserved,
                sample.peak,
                nan_if_none(sample.device_used),
                nan_if_none(sample.device_total),
                nan_if_none(sample.inactive_split),
                nan_if_none(sample.segments),
            )
        )
        if self.isVisible():  # a hidden or minimised window only records
            self._redraw()
        self.readout.setText(self.describe(sample))
        self.sampled.emit(sample)

    def now_s(self) -> float:
        return time.monotonic() - self._t0

    # -- drawing ----------------------------------------------------------------------------------
    def _redraw(self) -> None:
        data = self.history.array()
        if not len(data):
            return
        cpu = self.probe is not None and self.probe.kind == "cpu"
        top, show_total = scale_top(data, cpu, self.whole_device.isChecked(), self.marks.headroom())
        divisor = GIB if top >= 2 * GIB else MIB
        label = ("RAM" if cpu else "memory", "GiB" if divisor == GIB else "MiB")
        if label != self._axis_label:  # relabelling re-lays out the axis: only when it changes
            self._axis_label = label
            self.plot_item.setLabel("left", label[0], units=label[1])
        self._divisor = divisor
        t = data[:, 0]
        held, fragmented, _free = held_unused(data)
        split = {"held_unused": held, "fragmented": fragmented}
        split_shown = not cpu and not np.isnan(fragmented).all()  # the backend reports inactive splits
        for key, curve in self.curves.items():
            column = split[key] if key in split else data[:, COLUMNS.index(key)]
            hidden = (key == "device_total" and not show_total) or (key in split and not split_shown)
            if np.isnan(column).all() or hidden:
                curve.setData([], [])
                continue
            curve.setData(t, column / self._divisor, skipFiniteCheck=True)
        if split_shown != self._split_shown:  # name the held-but-unused curves while they are drawn
            self._split_shown = split_shown
            for key in SPLIT_KEYS:
                if split_shown:
                    self.legend.addItem(self.curves[key], self.curves[key].opts["name"])
                else:
                    self.legend.removeItem(self.curves[key])
            self._explain_legend()
            fit_legend(self.legend, self.plot_item)
        if show_total != self._total_shown:  # the legend names the total while it is drawn
            self._total_shown = show_total
            total = self.curves["device_total"]
            if show_total:
                self.legend.addItem(total, total.opts["name"])
            else:
                self.legend.removeItem(total)
            self._explain_legend()
            fit_legend(self.legend, self.plot_item)
        now = t[-1]
        self.plot_item.setXRange(max(0.0, now - self.window_s), max(now, 10.0), padding=0)
        self.plot_item.setYRange(0, max(top / self._divisor, 1.0), padding=0)
        self.marks.drop_older_than(now - self.window_s)
        self.marks.layout_labels()  # the time span grows until the history fills the window

    def describe(self, sample: MemorySample) -> str:
        if self.probe is not None and self.probe.kind == "cpu":
            text = f"Process RAM {format_bytes(sample.allocated)} · peak {format_bytes(sample.peak)}"
            if sample.device_total:
                text += (
                    f" · machine RAM used {format_bytes(sample.device_used)} of "
                    f"{format_bytes(sample.device_total)}"
                )
            return text
        text = (
            f"Allocated {format_bytes(sample.allocated)} · reserved {format_bytes(sample.reserved)} · "
            f"peak {format_bytes(sample.peak)}"
        )
        if sample.device_used is not None:
            text += f" · device used {format_bytes(sample.device_used)}"
        if sample.device_total is not None:
            text += f" of {format_bytes(sample.device_total)}"
        if sample.inactive_split is not None:
            text += " · " + held_text(sample.held_unused, sample.inactive_split, sample.segments)
        return text

    def _explain_legend(self) -> None:
        cpu = self.probe is not None and self.probe.kind == "cpu"
        explain_entries(self.legend, {**TIPS, **CPU_TIPS} if cpu else TIPS)

    # -- markers (ui/plot_markers.py) -------------------------------------------------------------
    @property
    def markers(self) -> deque[Marker]:
        """Every marker (up to 500), also those older than the plotted history: Export CSV has them."""
        return self.marks.markers

    def add_marker(self, kind: str, text: str) -> Marker:
        """A vertical line at the current time: run_start, run_end, failure or clear_cache."""
        marker = Marker(self.now_s(), kind, text)
        self.marks.add(marker)
        return marker

    def marker_lines(self) -> list[tuple[Marker, pg.InfiniteLine]]:
        return self.marks.lines()

    def _label_fill(self):
        # The plot's own background behind each label, so lines crossing it do not print through.
        color = self.palette().color(QPalette.ColorRole.Base)
        color.setAlpha(220)
        return pg.mkBrush(color)

    # -- actions ----------------------------------------------------------------------------------
    def clear_cache(self) -> ClearResult | None:
        if self.probe is None:
            return None
        result = self.probe.clear_cache()
        self.add_marker("clear_cache", result.message())
        self.sample_now()
        self.cache_cleared.emit(result)
        return result

    # -- hover read-out -----------------------------------------------------------------------------
    def values_at(self, time_s: float) -> np.ndarray | None:
        """The sample nearest to `time_s` (a row of COLUMNS), or None with no history."""
        data = self.history.array()
        if not len(data):
            return None
        index = int(np.clip(np.searchsorted(data[:, 0], time_s), 0, len(data) - 1))
        if index > 0 and abs(data[index - 1, 0] - time_s) < abs(data[index, 0] - time_s):
            index -= 1
        return data[index]

    def _on_mouse_moved(self, scene_pos) -> None:
        if not self.plot_item.sceneBoundingRect().contains(scene_pos):
            self.hover_line.setVisible(False)
            self.hover_label.setText(" ")
            return
        x = self.plot_item.vb.mapSceneToView(scene_pos).x()
        row = self.values_at(x)
        if row is None:
            return
        self.hover_line.setValue(row[0])
        self.hover_line.setVisible(True)
        parts = [f"at {row[0]:.1f} s:"]
        cpu = self.probe is not None and self.probe.kind == "cpu"
        labels = (
            (("allocated", "RAM"), ("peak", "peak"))
            if cpu
            else (
                ("allocated", "allocated"),
                ("reserved", "reserved"),
                ("peak", "peak"),
                ("device_used", "device used"),
            )
        )
        for key, label in labels:
            value = row[COLUMNS.index(key)]
            if not math.isnan(value):
                parts.append(f"{label} {format_bytes(value)}")
        inactive, segments = row[COLUMNS.index("inactive_split")], row[COLUMNS.index("segments")]
        if not cpu and not math.isnan(inactive):
            held = max(0.0, row[COLUMNS.index("reserved")] - row[COLUMNS.index("allocated")])
            parts.append(held_text(held, inactive, None if math.isnan(segments) else int(segments)))
        self.hover_label.setText(" ".join(parts[:1]) + " " + " · ".join(parts[1:]))

    # -- light and dark themes --------------------------------------------------------------------------
    def changeEvent(self, event: QEvent) -> None:
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._apply_palette()
        super().changeEvent(event)

    def _apply_palette(self) -> None:
        palette = self.palette()
        self.plot_widget.setBackground(palette.color(QPalette.ColorRole.Base))
        text = palette.color(QPalette.ColorRole.Text)
        for name in ("left", "bottom"):
            axis = self.plot_item.getAxis(name)
            axis.setPen(pg.mkPen(text))
            axis.setTextPen(pg.mkPen(text))
        self.legend.setLabelTextColor(text)
        self.legend.setBrush(pg.mkBrush(palette.color(QPalette.ColorRole.Base)))
        self.marks.set_fill(self._label_fill())
