"""The run controls: Run, Pause, Cancel, the progress bar, the speed read-out, Open output folder,
Browse results, and the line under them that says how the run went.

Buttons only emit requests; the window decides what they do and tells the controls what to show.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from batchlens.core.run.run_speed import format_rate, images_per_second, seconds_left

ERROR_COLOR = "#e03131"


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class RunControls(QWidget):
    run_clicked = Signal()
    pause_clicked = Signal()
    cancel_clicked = Signal()
    open_output_clicked = Signal()
    browse_results_clicked = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Start the run (Ctrl+R).")
        self.run_button.setDefault(True)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Pause after the current image; press again to resume (Ctrl+P).")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current image; finished images stay saved (Esc).")
        self.open_output_button = QPushButton("Open output folder")
        self.open_output_button.setToolTip("Show the results folder in your file manager.")
        self.browse_results_button = QPushButton("Browse results")
        self.browse_results_button.setToolTip("Each image of the output folder with its result drawn on it.")
        self.browse_results_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m images (%p %)")
        self.progress.setToolTip("Images done out of the images to process in this run.")
        self.progress.setValue(0)
        self.rate_label = QLabel(" ")
        self.rate_label.setToolTip("Speed of the run and the estimated time left.")
        self.message = QLabel(" ")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.blocked_reason = QLabel()  # why Run is off, in plain words (hidden while it is on)
        self.blocked_reason.setWordWrap(True)
        self.blocked_reason.setVisible(False)

        row = QHBoxLayout()
        row.addWidget(self.run_button)
        row.addWidget(self.pause_button)
        row.addWidget(self.cancel_button)
        row.addWidget(self.progress, 1)
        row.addWidget(self.rate_label)
        # The outcome row: why Run is off, or how the run went, beside what to do with its results.
        said = QVBoxLayout()
        said.addWidget(self.blocked_reason)
        said.addWidget(self.message)
        outcome = QHBoxLayout()
        outcome.addLayout(said, 1)
        outcome.addWidget(self.browse_results_button, 0, Qt.AlignmentFlag.AlignTop)
        outcome.addWidget(self.open_output_button, 0, Qt.AlignmentFlag.AlignTop)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addLayout(outcome)
        self._running = False
        self._blocked: str | None = None

        self.run_button.clicked.connect(self.run_clicked)
        self.pause_button.clicked.connect(self.pause_clicked)
        self.cancel_button.clicked.connect(self.cancel_clicked)
        self.open_output_button.clicked.connect(self.open_output_clicked)
        self.browse_results_button.clicked.connect(self.browse_results_clicked)

    # -- state ----------------------------------------------------------------------------------------
    def set_running(self, running: bool) -> None:
        self._running = running
        self.run_button.setEnabled(not running and self._blocked is None)
        self.pause_button.setEnabled(running)
        self.cancel_button.setEnabled(running)
        self.set_paused(False)

    def set_paused(self, paused: bool) -> None:
        self.pause_button.setText("Resume" if paused else "Pause")
        self.pause_button.setToolTip(
            "Go on with the run (Ctrl+P)." if paused else "Pause after the current image (Ctrl+P)."
        )

    def set_cancelling(self) -> None:
        self.cancel_button.setEnabled(False)
        self.pause_button.setEnabled(False)

    def set_output_available(self, available: bool) -> None:
        self.open_output_button.setEnabled(available)

    def set_results_available(self, available: bool) -> None:
        self.browse_results_button.setEnabled(available)

    def set_blocked(self, reason: str | None) -> None:
        """Turn Run off with a plain reason (None: Run is on)."""
        self._blocked = reason
        self.run_button.setEnabled(not self._running and reason is None)
        self.run_button.setToolTip(f"Run is off: {reason}" if reason else "Start the run (Ctrl+R).")
        self.blocked_reason.setText(f"Nothing to run yet: {reason}" if reason else "")
        self.blocked_reason.setVisible(reason is not None and not self._running)

    # -- progress -------------------------------------------------------------------------------------
    def set_busy(self) -> None:
        """An indefinite bar: the run is starting and does not know its total yet."""
        self.progress.setRange(0, 0)

    def is_busy(self) -> bool:
        return self.progress.maximum() == 0

    def set_total(self, total: int) -> None:
        """The images to process (0 / total), or an empty bar that says there are none."""
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(0)
        self.progress.setFormat("%v / %m images (%p %)" if total > 0 else "no images")

    def set_done(self, done: int) -> None:
        self.progress.setValue(done)

    def set_finished(self) -> None:
        self.progress.setValue(self.progress.maximum())

    def set_rate(self, text: str) -> None:
        self.rate_label.setText(text or " ")

    def show_speed(self, done: int, total: int, running_seconds: float) -> None:
        """Images/s by core/run/run_speed.py's one definition (pauses left out), and the time left."""
        rate = images_per_second(done, running_seconds)
        if rate:
            left = seconds_left(done, total, rate) or 0.0
            self.set_rate(f"{format_rate(rate)} · {format_duration(left)} left")

    # -- the message line ------------------------------------------------------------------------------
    def show_message(self, text: str) -> None:
        self.message.setText(text or " ")

    def show_error(self, text: str) -> None:
        self.message.setText(f"<span style='color:{ERROR_COLOR}'><b>{text}</b></span>")
