"""The dialog shown at start when the last session closed without a word (core/crash_log.py): what was
running, the trace, Copy report, and where that run's finished images are."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from batchlens.core.crash_log import CrashLog, CrashReport

TITLE = "BatchLens closed unexpectedly"


def safe_results_sentence(report: CrashReport) -> str:
    """Where the interrupted run's finished images are, and how to go on from there."""
    output = report.running.get("output")
    if not output or report.running.get("state") in (None, "idle"):
        return ""
    if report.running.get("state") in ("finished", "cancelled", "stopped"):
        return f"That run's results are in {output}/predictions.jsonl."
    return (
        f"The images it finished are already safe in {output}/predictions.jsonl. To go on from there, "
        "choose the same model and folders, press Run and choose Resume."
    )


class CrashDialog(QDialog):
    def __init__(self, report: CrashReport, parent: QWidget | None = None):
        super().__init__(parent)
        self.report = report
        self.setWindowTitle(TITLE)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        where = f" A copy of this report is kept in {report.saved_as}." if report.saved_as else ""
        parts = [
            f"<b>{TITLE}</b> the last time it ran.",
            html.escape(report.describe_run()),
            html.escape(safe_results_sentence(report)),
            "If it happens again, Copy report and send it with a note of what you were doing."
            + html.escape(where),
        ]
        self.summary.setText("<p>" + "</p><p>".join(p for p in parts if p) + "</p>")
        self.trace = QPlainTextEdit(report.trace.rstrip())
        self.trace.setReadOnly(True)
        self.trace.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.trace.setMinimumSize(560, 200)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.copy_button = QPushButton("Copy report")
        self.copy_button.setToolTip(
            "Copy the whole report (what was running, and the trace) to the clipboard."
        )
        buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        self.copy_button.clicked.connect(self.copy_report)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(QLabel("What Python saw when it stopped:"))
        layout.addWidget(self.trace, 1)
        layout.addWidget(buttons)

    def copy_report(self) -> None:
        QGuiApplication.clipboard().setText(self.report.text())
        self.copy_button.setText("Copied")


def offer_report(window: QWidget, report: CrashReport) -> CrashDialog:
    """Show the dialog over `window` without blocking it (window-modal, `open()`)."""
    dialog = CrashDialog(report, window)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.open()
    return dialog


def follow_runs(window, log: CrashLog) -> None:
    """Keep the crash log's note of what is running current: a run starts, pauses, goes on, ends."""

    def created(worker) -> None:
        config = worker.config
        log.note_run("running", config.model, config.input_dir, config.output_dir)
        worker.paused.connect(lambda: log.note_run("paused"))
        worker.resumed.connect(lambda: log.note_run("running"))

    def ended(summary) -> None:
        log.note_run(
            "stopped" if summary is None else "cancelled" if summary.get("cancelled") else "finished"
        )

    window.worker_created.connect(created)
    window.run_finished.connect(ended)
