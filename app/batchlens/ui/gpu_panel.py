"""Who holds the GPU: a panel beside the memory plot listing every process on the chosen GPU (name,
PID, memory, utilisation where the driver gives it), BatchLens's own row highlighted, read through NVML
(`core/machine/gpu_processes.py`) once a second on a pool thread, since an NVML call can block while
the driver is busy. Where NVML cannot answer, the panel says why in one sentence."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QObject, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (
    QAbstractButton,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from batchlens.core.machine.gpu_processes import GpuProcessReader, GpuReport

COLUMNS = ("process", "PID", "memory", "GPU %")
OWN_COLOR = QColor(61, 139, 253, 60)  # the memory plot's "allocated" blue, light


def _size(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


class _Relay(QObject):
    """Carries a reading from the pool thread to the GUI thread (a queued signal)."""

    read = Signal(object, object)  # (the reader it came from, GpuReport)


class GpuProcessesPanel(QWidget):
    """`set_device(type, index)` chooses the GPU; `reader_factory` is injectable (tests pass a reader
    over a recorded fake NVML)."""

    updated = Signal(object)  # GpuReport, once shown

    def __init__(
        self,
        reader_factory: Callable[[str, int], GpuProcessReader] = GpuProcessReader,
        interval_ms: int = 1000,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.reader_factory = reader_factory
        self.reader: GpuProcessReader | None = None
        self.report: GpuReport | None = None
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._busy = False
        self._relay = _Relay(self)
        self._relay.read.connect(self._show)

        self.title = QLabel("<b>Processes on the GPU</b>")
        self.title.setToolTip(
            "Every process using the chosen GPU, as the NVIDIA driver (NVML) reports it: memory is what "
            "each holds on the card; GPU % is its share of the card's compute over the last second, where "
            "the driver gives it. BatchLens's own process is highlighted."
        )
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setCornerButtonEnabled(False)
        for corner in self.table.findChildren(QAbstractButton):  # the table's own corner button
            corner.setToolTip("The processes on the GPU, one a row.")
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QTableWidget.SelectionMode.NoSelection)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in range(1, len(COLUMNS)):
            self.table.horizontalHeader().setSectionResizeMode(
                column, QHeaderView.ResizeMode.ResizeToContents
            )
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)
        for label in (self.title, self.summary):  # wrapped, so a long sentence never widens the window
            label.setWordWrap(True)
        self.setMinimumWidth(100)

        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.refresh)

    def set_device(self, device_type: str, index: int = 0) -> None:
        """Read another GPU (or say why none can be read); the first reading comes at once."""
        self.shutdown()
        self.reader = self.reader_factory(device_type, index)
        self.report = None
        reason = self.reader.unavailable()
        if reason:  # known without asking NVML: said at once, no thread, no timer
            self._show(self.reader, GpuReport(reason=reason))
            return
        self.refresh()
        self.timer.start()

    def refresh(self) -> None:
        """Start a reading on the pool thread unless one is still under way (a slow driver)."""
        if self.reader is None or self._busy:
            return
        self._busy = True
        reader, relay = self.reader, self._relay
        self._pool.start(lambda: relay.read.emit(reader, reader.read()))

    def wait(self, ms: int = 5000) -> bool:
        """Wait for the reading under way (tests, and closing the window)."""
        return self._pool.waitForDone(ms)

    def shutdown(self) -> None:
        self.timer.stop()
        self.wait()
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        self._busy = False

    def _show(self, reader: GpuProcessReader, report: GpuReport) -> None:
        self._busy = False
        if reader is not self.reader:  # a reading of the GPU chosen before
            return
        self.report = report
        if report.reason:
            self.summary.setText(report.reason)
            self.table.setRowCount(0)
            self.table.setVisible(False)
            if self.timer.isActive():  # nothing will change until another device is chosen
                self.timer.stop()
            self.updated.emit(report)
            return
        self.table.setVisible(True)
        others = report.others
        text = f"{report.device_name}: {_size(report.used)} of {_size(report.total)} in use"
        if report.utilisation is not None:
            text += f", busy {report.utilisation}%"
        text += f"; {len(others)} other process{'es' if len(others) != 1 else ''}"
        if others:
            text += f" hold {_size(report.others_used())}"
        self.summary.setText(text + ".")
        self.table.setRowCount(len(report.processes))
        bold = QFont(self.font())
        bold.setBold(True)
        for row, process in enumerate(report.processes):
            used = process.used
            cells = (
                process.name + (" (BatchLens)" if process.own else ""),
                str(process.pid),
                _size(used),
                "—" if process.sm_percent is None else f"{process.sm_percent}%",
            )
            for column, value in enumerate(cells):
                item = QTableWidgetItem(value)
                if column:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if process.own:
                    item.setBackground(QBrush(OWN_COLOR))
                    item.setFont(bold)
                if column == 2 and used is None:
                    item.setToolTip("The driver does not say how much memory this process holds.")
                if column == 3 and process.sm_percent is None:
                    item.setToolTip("The driver gave no utilisation for this process over the last second.")
                if column == 0:
                    item.setToolTip(f"{process.name}, PID {process.pid}: {process.kind}")
                self.table.setItem(row, column, item)
        self.updated.emit(report)
