"""A seeded random walk over every control of the window (issue #25: no crash without a word).

What a person can do, in any order: choose a model, type folders (good, broken, missing, a file),
choose a speed, Run / Pause / Cancel, Clear cache, the results browser (open, filter, an item, Back),
light and dark themes, every menu and the dialogs behind them (answered at random: the static
QFileDialog/QMessageBox calls are replaced, and any dialog left open is closed by a timer). Under
faulthandler (a segfault prints every thread's stack), and any Qt warning or Python exception in a
slot fails the walk with the seed and the last actions.

The default suite walks a few hundred steps; the long walk is
`python -m pytest tests/ui/test_soak_ui.py -m slow -s` (SOAK_STEPS, SOAK_SEED change it).
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import random
from collections import deque
from pathlib import Path

import pytest
from PySide6.QtCore import QTimer, QtMsgType, qInstallMessageHandler, qWarning
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QApplication, QDialog, QFileDialog, QInputDialog, QMessageBox

from batchlens.ui.qt_app import apply_color_scheme
from tests.helpers import make_shapes_folder

SHORT_STEPS = 250
#: Qt messages that are not the app's: the headless test platform ("offscreen") says these, a desktop not
OFFSCREEN_ONLY = {
    "This plugin does not support propagateSizeHints()",
    "This plugin does not support raise()",  # the user guide window raised on the offscreen platform
}


class Watch:
    """Qt warnings (a message handler) and Python exceptions in slots (pytest-qt's capture), recorded."""

    def __init__(self):
        self.warnings: list[str] = []
        self.exceptions: list = []

    def problems(self) -> list[str]:
        found = list(self.warnings)
        for _type, value, _tb in self.exceptions:
            found.append(f"exception in a slot: {type(value).__name__}: {value}")
        return found


@contextlib.contextmanager
def watched(qtbot):
    watch = Watch()

    def handler(mode, context, message):
        if mode not in (QtMsgType.QtDebugMsg, QtMsgType.QtInfoMsg) and message not in OFFSCREEN_ONLY:
            watch.warnings.append(f"Qt {mode.name}: {message} ({context.file}:{context.line})")
        if previous is not None:
            previous(mode, context, message)

    previous = qInstallMessageHandler(handler)
    was_enabled = faulthandler.is_enabled()
    if not was_enabled:
        faulthandler.enable()
    try:
        with qtbot.capture_exceptions() as exceptions:
            watch.exceptions = exceptions
            yield watch
    finally:
        qInstallMessageHandler(previous)
        if not was_enabled:
            faulthandler.disable()


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good"
    make_shapes_folder(good, 5, size=64)
    mixed = tmp_path / "mixed"
    make_shapes_folder(mixed / "sub", 3, size=64)
    (mixed / "broken.png").write_bytes((good / "shape_0000.png").read_bytes()[:200])
    (mixed / "notes.jpg").write_text("not a photo\n")
    (tmp_path / "a-file.txt").write_text("a file, not a folder\n")
    (tmp_path / "empty").mkdir()
    return {
        "good": good,
        "mixed": mixed,
        "empty": tmp_path / "empty",
        "missing": tmp_path / "no such folder",
        "file": tmp_path / "a-file.txt",
    }


@pytest.fixture
def answered(monkeypatch, tmp_path: Path):
    """Every static dialog answers from a seeded choice; nothing opens outside the test."""
    rng = random.Random(1)
    outputs = [tmp_path / "out-a", tmp_path / "out-b"]
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(rng.choice(outputs + [""])))
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: ("", ""))
    monkeypatch.setattr(
        QFileDialog, "getSaveFileName", lambda *a, **k: (rng.choice(["", str(tmp_path / "p.png")]), "")
    )
    monkeypatch.setattr(QInputDialog, "getText", lambda *a, **k: ("", False))
    buttons = [
        QMessageBox.StandardButton.Yes,
        QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.Cancel,
    ]
    for name in ("question", "warning", "information", "critical"):
        monkeypatch.setattr(QMessageBox, name, lambda *a, **k: rng.choice(buttons))
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda *a, **k: False)
    closer = QTimer()
    closer.setInterval(30)

    def close_dialogs():
        for widget in QApplication.topLevelWidgets():
            if isinstance(widget, QDialog) and widget.isVisible():
                widget.reject()

    closer.timeout.connect(close_dialogs)
    closer.start()
    yield
    closer.stop()


class Walker:
    def __init__(self, window, qtbot, folders: dict[str, Path], tmp_path: Path, seed: int):
        self.window, self.qtbot, self.folders = window, qtbot, folders
        self.rng = random.Random(seed)
        self.seed = seed
        self.outputs = [tmp_path / "out-a", tmp_path / "out-b", None]
        self.last: deque[str] = deque(maxlen=25)
        form = window.form
        self.models = [m.id for m in form.model_picker.models() if m.id.startswith("demo-")]
        self.actions = [
            (3, self.choose_model),
            (3, self.type_input),
            (2, self.type_output),
            (1, self.toggle_recursive),
            (1, self.choose_speed),
            (1, self.choose_device),
            (4, self.run),
            (2, self.pause),
            (2, self.cancel),
            (1, self.clear_cache),
            (2, self.open_results),
            (3, self.browse_results),
            (1, self.theme),
            (2, self.menu),
            (4, self.wait),
        ]
        self.weights = [w for w, _ in self.actions]
        self.done: dict[str, int] = {}  # what the walk saw happen: runs ended, results and items shown
        window.run_finished.connect(lambda summary: self._saw("runs ended"))
        window.pages.page_changed.connect(lambda page: self._saw(f"{page} page shown"))

    def _saw(self, what: str) -> None:
        self.done[what] = self.done.get(what, 0) + 1

    def step(self) -> None:
        _, action = self.rng.choices(self.actions, self.weights)[0]
        self.last.append(action.__name__)
        action()
        QApplication.processEvents()

    def where(self) -> str:
        return f"seed {self.seed}, last actions: {', '.join(self.last)}"

    # -- the run screen ----------------------------------------------------------------------------
    def choose_model(self):
        if self.window.form.isEnabled():
            self.window.form.model_picker.set_current_model(self.rng.choice(self.models))

    def type_input(self):
        form = self.window.form
        if form.isEnabled():
            path = str(self.folders[self.rng.choice(list(self.folders))])
            if self.rng.random() < 0.3:  # typed: each prefix of the path in turn, as keystrokes do
                for end in range(max(1, len(path) - 8), len(path) + 1):
                    form.input_edit.setText(path[:end])
            else:
                form.input_edit.setText(path)

    def type_output(self):
        form = self.window.form
        if form.isEnabled():
            output = self.rng.choice(self.outputs)
            form.output_edit.setText("" if output is None else str(output))

    def toggle_recursive(self):
        if self.window.form.isEnabled():
            self.window.form.recursive_check.click()

    def choose_speed(self):
        combo = self.window.form.speed_combo
        if self.window.form.isEnabled() and combo.count():
            combo.setCurrentIndex(self.rng.randrange(combo.count()))

    def choose_device(self):
        combo = self.window.form.device_combo
        if self.window.form.isEnabled():
            cpu = [i for i in range(combo.count()) if str(combo.itemData(i)) in ("cpu", "auto")]
            if cpu:
                combo.setCurrentIndex(self.rng.choice(cpu))

    def run(self):
        self.window.ask_questions = self.rng.random() < 0.3  # the questions' dialogs too, sometimes
        self.window.controls.run_button.click()
        self.window.ask_questions = False

    def pause(self):
        self.window.controls.pause_button.click()

    def cancel(self):
        self.window.controls.cancel_button.click()

    def clear_cache(self):
        self.window.memory_plot.clear_button.click()

    # -- the results browser -------------------------------------------------------------------------
    def open_results(self):
        output = self.rng.choice([o for o in self.outputs if o is not None])
        if output.is_dir():
            self.window.pages.show_results(output)

    def browse_results(self):
        browser = self.window.pages.results_browser
        if browser is None or not self.window.pages.showing_results():
            return
        choice = self.rng.randrange(6)
        if choice == 0 and browser.shown.rowCount():
            browser.open_row(self.rng.randrange(browser.shown.rowCount()))
            self._saw("items opened")
        elif choice == 1:
            browser.show_grid()
        elif choice == 2:
            browser.back_button.click()
        elif choice == 3:
            box = self.rng.choice(list(browser.filters.status_boxes.values()))
            box.click()
        elif choice == 4:
            browser.filters.reset_button.click()
        elif browser.showing_detail():
            browser.detail.step_requested.emit(self.rng.choice([-1, 1]))

    # -- the rest --------------------------------------------------------------------------------------
    def theme(self):
        from PySide6.QtCore import Qt

        apply_color_scheme(self.rng.choice([Qt.ColorScheme.Light, Qt.ColorScheme.Dark]))

    def menu(self):
        actions = []
        for top in self.window.menuBar().actions():
            if top.menu() is not None:
                actions += [a for a in top.menu().actions() if not a.isSeparator() and a.menu() is None]
        actions = [a for a in actions if a.isEnabled() and a is not self.window.menus.quit_action]
        if actions:
            self.rng.choice(actions).trigger()

    def wait(self):
        self.qtbot.wait(self.rng.choice([1, 5, 20, 60]))


def walk(window, qtbot, folders, tmp_path, steps: int, seed: int) -> Walker:
    walker = Walker(window, qtbot, folders, tmp_path, seed)
    window.form.input_edit.setText(str(folders["good"]))
    window.form.output_edit.setText(str(tmp_path / "out-a"))
    window.form.model_picker.set_current_model("demo-shapes")
    with watched(qtbot) as watch:
        for _ in range(steps):
            walker.step()
            assert not watch.problems(), f"{watch.problems()[0]} ({walker.where()})"
        walker.cancel()
        qtbot.waitUntil(lambda: not window.is_running(), timeout=60_000)
        qtbot.wait(50)
    assert not watch.problems(), f"{watch.problems()[0]} ({walker.where()})"
    return walker


@pytest.mark.traceback_ok("the slot raises on purpose, to show the watch catches it")
def test_the_watch_catches_a_qt_warning_and_an_exception_in_a_slot(qtbot):
    """The walk's checks themselves can fail (else the walk would prove nothing)."""
    with watched(qtbot) as watch:
        qWarning("a warning from Qt")

        def broken_slot():
            raise ValueError("a bug in a slot")

        QTimer.singleShot(0, broken_slot)
        qtbot.wait(20)
    assert any("a warning from Qt" in w for w in watch.warnings)
    assert any("a bug in a slot" in p for p in watch.problems())


def test_the_steps_of_the_issue_run_results_item_back_then_type_an_input(
    window, qtbot, folders, tmp_path, answered
):
    """The steps that segfaulted once: the demo runs, the results open, one item, Back, a typed path."""
    window.form.model_picker.set_current_model("demo-shapes")
    window.form.input_edit.setText(str(folders["good"]))
    window.form.output_edit.setText(str(tmp_path / "out-a"))
    with watched(qtbot) as watch:
        for _ in range(3):
            assert window.start_run()
            qtbot.waitUntil(lambda: not window.is_running(), timeout=60_000)
            window.controls.browse_results_button.click()  # a run ends on the run screen
            assert window.pages.showing_results()
            browser = window.pages.results_browser
            qtbot.waitUntil(lambda b=browser: b.shown.rowCount() == 5, timeout=10_000)
            browser.open_row(0)
            qtbot.waitUntil(lambda b=browser: b.loader.made > 0, timeout=10_000)
            browser.back_button.click()
            assert not window.pages.showing_results()
            with qtbot.waitSignal(window.form.counted, timeout=5_000):  # the typed folder's count lands
                qtbot.keyClicks(window.form.input_edit, "/new")
            assert "/new" in window.form.input_edit.text()
            window.form.input_edit.setText(str(folders["good"]))
    assert not watch.problems()


def test_a_short_random_walk_over_every_control(window, qtbot, folders, tmp_path, answered):
    walker = walk(window, qtbot, folders, tmp_path, SHORT_STEPS, seed=int(os.environ.get("SOAK_SEED", 25)))
    print(walker.done)
    assert len(walker.models) >= 2
    assert walker.done["runs ended"] >= 3 and walker.done["results page shown"] >= 1


@pytest.mark.slow
def test_a_long_random_walk_over_every_control(window, qtbot, folders, tmp_path, answered):
    steps = int(os.environ.get("SOAK_STEPS", 5000))
    walker = walk(window, qtbot, folders, tmp_path, steps, seed=int(os.environ.get("SOAK_SEED", 2025)))
    print(walker.done)
    assert walker.done["runs ended"] >= 50 and walker.done["items opened"] >= 20  # (runs take their own time)
