"""The "BatchLens closed unexpectedly" dialog (ui/crash_dialog.py) and the window start that shows it."""

from __future__ import annotations

from PySide6.QtCore import QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication

from batchlens.cli import build_parser
from batchlens.core.crash_log import CrashLog, CrashReport
from batchlens.core.data_dir import user_data_dir
from batchlens.ui.app import run_window
from batchlens.ui.crash_dialog import CrashDialog
from batchlens.ui.main_window import MainWindow
from tests.core.test_crash_log import fake_crashed_session

TRACE = (
    "Fatal Python error: Segmentation fault\n\nThread 0x01 (most recent call first):\n"
    + '  File "grid.py", line 9\n'
)


def a_report(state: str = "running") -> CrashReport:
    running = {"state": state, "model": "demo-shapes", "input": "/photos", "output": "/photos-out"}
    return CrashReport(TRACE, running, "2026-12-07 04:00:00", None)


def test_the_dialog_says_what_ran_where_its_results_are_and_copies_the_report(qtbot):
    report = a_report()
    dialog = CrashDialog(report)
    qtbot.addWidget(dialog)
    text = dialog.summary.text()
    assert dialog.windowTitle() == "BatchLens closed unexpectedly"
    assert "A run was running: demo-shapes on /photos, writing to /photos-out." in text
    assert "already safe in /photos-out/predictions.jsonl" in text and "choose Resume" in text
    assert "Segmentation fault" in dialog.trace.toPlainText()
    dialog.copy_button.click()
    assert QGuiApplication.clipboard().text() == report.text()
    assert "grid.py" in report.text() and "model: demo-shapes" in report.text()
    assert dialog.copy_button.text() == "Copied"


def test_no_resume_advice_when_no_run_was_going_on(qtbot):
    dialog = CrashDialog(CrashReport(TRACE, {}, "", None))
    qtbot.addWidget(dialog)
    assert "No run was going on." in dialog.summary.text() and "Resume" not in dialog.summary.text()


def _start_window_and_look(qapp) -> list[str]:
    """Start the window as `batchlens` does; note every crash dialog shown, then close it all."""
    seen: list[str] = []
    waited = [0]

    def look():
        windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        dialogs = [w for w in QApplication.topLevelWidgets() if isinstance(w, CrashDialog) and w.isVisible()]
        seen.extend(d.summary.text() for d in dialogs)
        waited[0] += 1
        if windows and (dialogs or waited[0] > 10):
            for dialog in dialogs:
                dialog.reject()
            windows[0].close()
            return
        QTimer.singleShot(50, look)

    QTimer.singleShot(0, look)
    QTimer.singleShot(60_000, qapp.quit)  # a safety net: never hang the test run
    assert run_window(build_parser().parse_args([])) == 0
    return seen


def test_the_next_start_shows_the_crash_once_and_a_clean_exit_shows_nothing(qapp):
    fake_crashed_session(user_data_dir() / "crashes")
    first = _start_window_and_look(qapp)
    assert len(first) == 1 and "closed unexpectedly" in first[0] and "demo-shapes" in first[0]
    assert _start_window_and_look(qapp) == []  # the first start ended cleanly; its crash was shown
    assert sorted(p.name.split("-")[0] for p in (user_data_dir() / "crashes").iterdir()) == ["crash"]
    assert CrashLog().folder == user_data_dir() / "crashes"
