"""The run screen's rough edges (issue 15, part 2), each through the real widgets: totals and speed,
Run off with a reason, stale state cleared, the output folder that follows the input, the window's own
words for engine advice, the problems panel, the menus, the file manager, the theme."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QColor, QGuiApplication

from batchlens.core.resources import sample_folder
from batchlens.core.run.events import ImageResult
from batchlens.core.run.run_speed import RunClock, format_rate, images_per_second
from batchlens.ui.memory_plot import LINE_COLORS
from batchlens.ui.run_form import default_output_for
from batchlens.ui.wording import for_window
from tests.helpers import make_shapes_folder

RUN_TIMEOUT_MS = 120_000
CORE = Path(__file__).resolve().parents[2] / "app" / "batchlens" / "core"


def counted(qtbot, window, text: str) -> None:
    qtbot.waitUntil(lambda: window.form.count_label.text() == text, timeout=10_000)


# -- 1. totals and speed ---------------------------------------------------------------------------
def test_the_bar_shows_the_real_total_before_a_run(qtbot, window, shapes_folder, tmp_path):
    window.prefill(model="demo-shapes", input_dir=shapes_folder, output_dir=tmp_path / "out", device="cpu")
    counted(qtbot, window, "12 images found.")
    bar = window.controls.progress
    assert (bar.value(), bar.maximum(), bar.text()) == (0, 12, "0 / 12 images (0 %)")


def test_speed_stops_on_pause_and_cancel_and_matches_the_summary(qtbot, window, tmp_path):
    folder = tmp_path / "many"
    make_shapes_folder(folder, 12, size=48)

    def pause_after_third(worker):
        def on_event(event):
            if isinstance(event, ImageResult) and event.index == 3:
                worker.pause()

        worker.yielded.connect(on_event, Qt.ConnectionType.DirectConnection)

    window.worker_created.connect(pause_after_third)
    window.prefill(model="demo-shapes", input_dir=folder, output_dir=tmp_path / "out", device="cpu")
    assert window.start_run()
    qtbot.waitUntil(lambda: window.controls.pause_button.text() == "Resume", timeout=RUN_TIMEOUT_MS)
    # The preview timer has drawn the newest result, then ticked once more: neither put a speed back.
    qtbot.waitUntil(lambda: window.previews.shown is window._latest, timeout=RUN_TIMEOUT_MS)
    with qtbot.waitSignal(window.preview_timer.timeout, timeout=RUN_TIMEOUT_MS):
        pass
    assert window.controls.rate_label.text() == "paused"  # no speed or time left while paused
    qtbot.wait(400)  # (not a synchronisation: paused time that must not count against the speed)
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        window.cancel_run()
        assert window.controls.rate_label.text().strip() == ""  # stopped at once on Cancel
    summary = finished.args[0]
    assert summary["paused_seconds"] >= 0.4
    # One definition: images processed / (seconds - paused), shown the same way in both places.
    processed = summary["counts"]["ok"] + summary["counts"]["error"]
    running = summary["seconds"] - summary["paused_seconds"]
    expected = processed / running
    # Both times are rounded to the millisecond in summary.json: up to 1 ms off together.
    assert summary["images_per_second"] == pytest.approx(expected, rel=0.01 + 0.001 / running)
    shown = format_rate(summary["images_per_second"])
    assert window.controls.rate_label.text() == shown and f"({shown})" in window.controls.message.text()
    assert "left" not in window.controls.rate_label.text()


def test_the_run_clock_leaves_pauses_out():
    now = [0.0]
    clock = RunClock(lambda: now[0])
    clock.start()
    now[0] = 2.0
    clock.pause()
    now[0] = 12.0
    assert clock.running_seconds() == 2.0
    clock.resume()
    now[0] = 14.0
    assert clock.running_seconds() == 4.0 and clock.paused_seconds == 10.0
    assert images_per_second(8, clock.running_seconds()) == 2.0
    assert format_rate(0.5951) == "0.595 images/s" and format_rate(140.4) == "140 images/s"


# -- 2. Run off with a plain reason ----------------------------------------------------------------
def test_run_is_off_with_a_reason_when_there_is_nothing_to_run(qtbot, window, tmp_path):
    empty = tmp_path / "empty"
    (empty / "inner").mkdir(parents=True)
    (empty / "notes.txt").write_text("not an image")
    window.prefill(model="demo-shapes", input_dir=empty, output_dir=tmp_path / "out", device="cpu")
    counted(qtbot, window, "0 images found (1 other file will be skipped).")
    run = window.controls.run_button
    assert not run.isEnabled()
    reason = window.controls.blocked_reason
    assert reason.isVisible() and "no images in" in reason.text() and "Include subfolders" in reason.text()
    assert window.controls.progress.text() == "no images"
    assert not window.start_run()  # Ctrl+R and --start meet the same rule
    assert not (tmp_path / "out").exists()

    window.form.set_input(tmp_path / "missing")
    assert not run.isEnabled() and "does not exist" in reason.text()

    window.form.set_input(empty)
    counted(qtbot, window, "0 images found (1 other file will be skipped).")
    make_shapes_folder(empty, 2)  # images copied in from the file manager; back to the window:
    QGuiApplication.instance().applicationStateChanged.emit(Qt.ApplicationState.ApplicationActive)
    counted(qtbot, window, "2 images found (1 other file will be skipped).")
    assert run.isEnabled() and not reason.isVisible()


def test_a_folder_that_cannot_be_listed_is_said_so_not_counted_as_empty(tmp_path, monkeypatch):
    import os

    from batchlens.ui.run_form import NOT_COUNTED, count_images

    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.scandir

    def scandir(path="."):  # what the kernel answers to anyone but root for a chmod 000 folder
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    count, text = count_images(locked, recursive=False, exclude=None)
    assert count == NOT_COUNTED and "cannot be listed (permission denied)" in text and "0 images" not in text


def test_a_model_file_that_is_gone_turns_run_off(qtbot, window, shapes_folder, tmp_path):
    import torch

    model = tmp_path / "m.pt"
    torch.jit.script(torch.nn.Conv2d(3, 3, 1)).save(str(model))
    (tmp_path / "m.json").write_text('{"task": "image_to_image"}')
    window.prefill(model=str(model), input_dir=shapes_folder, output_dir=tmp_path / "out", device="cpu")
    counted(qtbot, window, "12 images found.")
    assert window.controls.run_button.isEnabled()
    model.unlink()
    window.form.recursive_check.setChecked(True)  # any change looks again
    assert not window.controls.run_button.isEnabled()
    assert "is not there any more" in window.controls.blocked_reason.text()


# -- 3. stale state --------------------------------------------------------------------------------
def test_a_change_clears_what_it_makes_stale(qtbot, window, tmp_path):
    folder = tmp_path / "mixed"
    make_shapes_folder(folder, 3)
    (folder / "broken.png").write_text("not a picture")
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS):
        window.prefill(model="demo-shapes", input_dir=folder, output_dir=tmp_path / "out", device="cpu")
        assert window.start_run()
    window.pages.show_run_screen()
    assert window.problems.title() == "Problems (1)" and window.previews.shown is not None
    assert "Finished" in window.controls.message.text()

    window.model_picker.set_current_model("demo-denoise")  # another model: the old results are stale
    assert window.problems.title() == "Problems" and window.problems.count() == 0
    assert window.previews.shown is None and not window.previews.input_view.has_image()
    assert not [b for b in window.thumbnails.buttons if not b.isHidden()]
    assert window.controls.message.text().strip() == "" and window.last_summary is None

    window.show_error("Something went wrong.")
    window.form.set_input(tmp_path)  # another input: the red error goes too
    assert "Something went wrong" not in window.controls.message.text()


# -- 4. the output folder follows the input until chosen -------------------------------------------
def test_the_output_follows_the_input_until_chosen_and_says_which(qtbot, window, tmp_path):
    a, b, mine = tmp_path / "a", tmp_path / "b", tmp_path / "mine"
    for folder in (a, b):
        make_shapes_folder(folder, 1)
    form = window.form
    form.set_input(a)
    form.follow_input()
    assert (
        Path(form.output_text()) == default_output_for(a) and "follows the input" in form.output_mode.text()
    )
    form.set_input(b)
    assert Path(form.output_text()) == default_output_for(b)
    qtbot.keyClicks(form.output_edit, "x")  # the user types an output folder: it stays put
    form.output_edit.setText(str(mine))
    form.output_edit.textEdited.emit(str(mine))
    form.set_input(a)
    assert form.output_text() == str(mine) and "chosen by you" in form.output_mode.text()
    form.output_mode.linkActivated.emit("follow")  # "follow the input folder instead"
    assert Path(form.output_text()) == default_output_for(a) and form.output_follows_input()


# -- 5. the window's own words ---------------------------------------------------------------------
def _core_message_options() -> set[str]:
    """Every --option named in a string of core/ (docstrings left out)."""
    found = set()
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text("utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                found.update(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", node.value))
    return found


def test_no_command_line_flag_reaches_the_window_bare():
    options = _core_message_options()
    assert {"--weights", "--cpu-fallback", "--resume", "--task"} <= options  # the scan finds them
    for option in sorted(options):
        shown = for_window(f"Something happened; pass {option} FILE or use {option} to fix it.")
        assert not re.search(r"(?<![\w`-])--[a-z]", shown.replace(f"`batchlens run {option}`", "")), shown


@pytest.mark.parametrize(
    "engine, window_words",
    [
        (
            "Could not download http://h/x.pth: [Errno -2] Name or service not known. Is this computer "
            "offline? ... or pass a weights file with --weights FILE.",
            "Could not download http://h/x.pth: the server's name could not be looked up. Is this computer "
            "offline? ... or choose a weights file with the Weights button beside the model.",
        ),
        (
            "the one most likely to run out of memory (consider --cpu-fallback, or resizing it).",
            "the one most likely to run out of memory (tick Fall back to CPU, or make the image smaller).",
        ),
        (
            "m.pt: BatchLens cannot tell which task this model does. Pass --task (classification, detection) "
            "or write a sidecar m.json next to it",
            "m.pt: BatchLens cannot tell which task this model does. Write a sidecar (with the task: "
            "classification, detection) m.json next to it",
        ),
        (
            "fix the cause and run again with --resume.",
            "fix the cause and press Run again and choose Resume.",
        ),
        (  # another program's command, quoted, stays as it is
            "No Ray cluster answers: start one with `ray start --head`, or check the host",
            "No Ray cluster answers: start one with `ray start --head`, or check the host",
        ),
    ],
)
def test_known_messages_read_in_the_windows_words(engine, window_words):
    assert for_window(engine) == window_words


def test_errors_in_the_window_name_its_controls(window):
    window.show_error("out of memory; allow it with --cpu-fallback")
    assert "Fall back to CPU" in window.controls.message.text() and "--" not in window.controls.message.text()


def test_a_long_message_in_a_small_window_squeezes_the_plot_not_over_its_readout(qtbot, tmp_path, fake_probe):
    """A three-line download error in a window opened at 1024x700 left the memory panel less height
    than its parts need: the readout was drawn over the plot's time axis. The plot gives way instead."""
    from batchlens.ui.main_window import MainWindow
    from batchlens.ui.settings import Settings

    window = MainWindow(Settings(tmp_path / "settings.ini"), probe_factory=lambda name: fake_probe)
    qtbot.addWidget(window)
    window.prefill(model="demo-shapes", input_dir=sample_folder("demo-shapes"))  # as at first start
    window.resize(1024, 700)
    window.show()
    qtbot.waitUntil(lambda: window.size().height() == 700)
    window.show_error(
        "Could not download https://download.pytorch.org/models/resnet18-f37072fd.pth: the server's "
        "name could not be looked up. Is this computer offline? The weights are fetched once into "
        "/tmp/hub/checkpoints (the torch hub cache; set TORCH_HOME to move it). Without a network, "
        "download the file on another machine and copy it there, or choose a weights file."
    )
    plot = window.memory_plot
    plot.readout.setText("Process RAM 851.7 MiB · peak 851.7 MiB · machine RAM used 6.7 GiB of 23.5 GiB")
    parts = [plot.title, plot.plot_widget, plot.readout, plot.hover_label, plot.clear_button]

    def laid_out_in_order() -> bool:
        tops = [w.geometry().top() for w in parts]
        bottoms = [w.geometry().bottom() for w in parts]
        return all(b < t for b, t in zip(bottoms, tops[1:])) and plot.readout.height() >= (
            plot.readout.heightForWidth(plot.readout.width())
        )

    message = window.controls.message
    qtbot.waitUntil(lambda: message.height() >= 3 * message.fontMetrics().lineSpacing())  # wrapped
    qtbot.waitUntil(laid_out_in_order)  # the layout's own pass after the message grew
    assert plot.plot_widget.height() >= 80, "squeezed, but still a plot"


# -- 9. the problems panel -------------------------------------------------------------------------
def test_problems_wrap_show_whole_and_copy(qtbot, window):
    panel = window.problems
    long = "A very long explanation of what went wrong with this image, " * 6
    panel.add("a.jpg", long)
    panel.add("(run)", "a note", warning=True)
    assert panel.tree.wordWrap() and panel.tree.minimumHeight() >= 4 * panel.tree.fontMetrics().height()
    window.panel_tabs.setCurrentWidget(panel)  # Problems is a tab beside Previews
    assert window.panel_tabs.tabText(1) == "Problems (2)"
    panel.tree.setCurrentItem(panel.tree.topLevelItem(0))
    assert panel.detail.isVisible() and long.strip() in panel.detail.text()
    panel.tree.setFocus()
    qtbot.keyClick(panel.tree, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    assert QGuiApplication.clipboard().text() == f"a.jpg\t{long}\n"
    panel.copy_all_action.trigger()
    assert QGuiApplication.clipboard().text().splitlines()[1] == "(run) (note)\ta note"


# -- 10. the file manager --------------------------------------------------------------------------
def test_open_output_folder_says_so_when_no_file_manager_opens(window, tmp_path, monkeypatch):
    from PySide6.QtGui import QDesktopServices

    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url) and False)
    window.form.set_output(tmp_path)
    assert window.open_output_folder() is False and opened
    assert (
        "No file manager" in window.controls.message.text()
        and str(tmp_path) in window.controls.message.text()
    )


# -- 11. menus -------------------------------------------------------------------------------------
def test_menus_open_results_and_copy_system_info(qtbot, window, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    titles = [a.text() for a in window.menuBar().actions()]
    assert titles == ["&File", "&View", "&Settings", "&Help"]
    menus = window.menus
    assert menus.quit_action.shortcut().toString() == "Ctrl+Q"
    text = menus.copy_system_info()
    assert text == QGuiApplication.clipboard().text()
    for name in ("BatchLens", "PyTorch", "CUDA", "GPU", "Qt"):
        assert f"\n{name}: " in f"\n{text}"

    folder = tmp_path / "shapes"
    make_shapes_folder(folder, 2)
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS):
        window.prefill(model="demo-shapes", input_dir=folder, output_dir=tmp_path / "out", device="cpu")
        assert window.start_run()
    # The run ends on the run screen, its last preview and the plot still there; Browse results opens
    # the browser on the output folder.
    assert not window.pages.showing_results() and window.previews.shown is not None
    assert window.controls.browse_results_button.isEnabled()
    qtbot.mouseClick(window.controls.browse_results_button, Qt.MouseButton.LeftButton)
    assert window.pages.showing_results()
    window.pages.show_run_screen()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(tmp_path / "out"))
    menus.open_results_action.trigger()
    assert window.pages.showing_results() and window.pages.results_browser.folder is not None
    menus.panel_actions["memory"].setChecked(False)
    assert window.memory_box.isHidden()


# -- 13. theme -------------------------------------------------------------------------------------
def test_the_window_follows_the_colour_scheme(qtbot, window):
    """The system's scheme arrives as QStyleHints.colorSchemeChanged; the offscreen test platform has no
    scheme of its own, so the test emits the signal as a desktop would."""
    from PySide6.QtGui import QPalette

    from batchlens.ui.qt_app import create_app

    create_app()  # connects the signal (once)
    hints = QGuiApplication.styleHints()
    plot = window.memory_plot
    try:
        for scheme, dark in ((Qt.ColorScheme.Dark, True), (Qt.ColorScheme.Light, False)):
            hints.colorSchemeChanged.emit(scheme)
            qtbot.waitUntil(
                lambda dark=dark: (
                    (window.palette().color(QPalette.ColorRole.Window).lightness() < 128) == dark
                )
            )
            background = plot.plot_widget.backgroundBrush().color()
            qtbot.waitUntil(
                lambda: plot.plot_widget.backgroundBrush().color() == window.palette().base().color()
            )
            background = plot.plot_widget.backgroundBrush().color()
            assert (background.lightness() < 128) == dark
            axis_text = plot.plot_item.getAxis("left").textPen().color()
            assert abs(axis_text.lightness() - background.lightness()) > 120  # readable on it
            for color in LINE_COLORS.values():  # every line reads on both backgrounds
                assert abs(QColor(color).lightness() - background.lightness()) > 40, (
                    color,
                    background.name(),
                )
    finally:
        hints.colorSchemeChanged.emit(Qt.ColorScheme.Light)


def test_the_divider_is_dragged_on_the_picture(qtbot):
    from PIL import Image

    from batchlens.ui.previews import ImageView

    view = ImageView()
    qtbot.addWidget(view)
    view.resize(200, 100)
    view.set_image(Image.new("RGB", (200, 100), "white"), compare=Image.new("RGB", (200, 100), "black"))
    view.show()
    qtbot.mousePress(view, Qt.MouseButton.LeftButton, pos=QPoint(50, 50))
    qtbot.mouseMove(view, QPoint(150, 50))
    assert view.split == pytest.approx(0.25, abs=0.02) or view.split == pytest.approx(0.75, abs=0.02)
    qtbot.mousePress(view, Qt.MouseButton.LeftButton, pos=QPoint(60, 50))
    image = view.grab().toImage()
    # The input (black) shows left of the divider, the output (white) right of it.
    assert image.pixelColor(20, 70).lightness() < 60 and image.pixelColor(180, 70).lightness() > 200


def test_a_splash_says_loading_pytorch_before_the_heavy_imports(qtbot):
    """The start-up window needs only Qt: importing the window's entry point loads no PyTorch, and the
    splash it shows first says what the wait is for."""
    import subprocess
    import sys

    check = "import sys, batchlens.ui.app; print('torch' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True).stdout
    assert loaded.strip() == "False"
    from batchlens.ui.app import show_splash

    splash = show_splash()
    qtbot.addWidget(splash)
    assert splash.isVisible() and splash.message() == "Loading PyTorch…"
    splash.close()
