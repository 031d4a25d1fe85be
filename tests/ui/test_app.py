"""Starting the window: command-line options, --start, --self-test, the icon."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from batchlens.cli import build_parser
from batchlens.core.resources import sample_folder
from batchlens.ui.app import run_window
from batchlens.ui.main_window import MainWindow
from batchlens.ui.qt_app import app_icon


def test_window_options_do_not_clash_with_the_run_command():
    args = build_parser().parse_args(
        ["--model", "demo-denoise", "--input", "in", "--device", "cpu", "--start"]
    )
    assert args.command is None
    assert (args.window_model, args.window_input, args.window_device) == ("demo-denoise", Path("in"), "cpu")
    assert args.window_start and not args.self_test
    run = build_parser().parse_args(["run", "--model", "demo-shapes", "--input", "a", "--output", "b"])
    assert run.command == "run" and run.model == "demo-shapes" and run.window_model is None
    assert build_parser().parse_args(["--self-test"]).self_test


def test_the_app_icon_is_bundled(qapp):
    icon = app_icon()
    assert not icon.isNull()
    assert icon.pixmap(64, 64).width() == 64


def test_start_option_prefills_and_runs(qapp, shapes_folder, tmp_path):
    output = tmp_path / "out"
    args = build_parser().parse_args(
        [
            "--model",
            "demo-shapes",
            "--input",
            str(shapes_folder),
            "--output",
            str(output),
            "--device",
            "cpu",
            "--start",
        ]
    )
    seen = {}

    def close_when_done():
        for widget in QApplication.topLevelWidgets():
            if isinstance(widget, MainWindow) and widget.isVisible() and widget.last_summary is not None:
                seen["summary"] = widget.last_summary
                seen["input"] = widget.form.input_edit.text()
                widget.close()
                return
        QTimer.singleShot(50, close_when_done)

    QTimer.singleShot(0, close_when_done)
    QTimer.singleShot(120_000, qapp.quit)  # a safety net: never hang the test run
    assert run_window(args) == 0
    assert seen["input"] == str(shapes_folder)
    assert seen["summary"]["counts"]["ok"] == 12
    assert len((output / "predictions.jsonl").read_text("utf-8").splitlines()) == 12


def test_self_test_passes_and_leaves_nothing_behind(qapp, capsys, tmp_path):
    args = build_parser().parse_args(["--self-test"])
    assert run_window(args) == 0
    out = capsys.readouterr().out
    assert "self-test passed" in out
    shapes = len(list(sample_folder("demo-shapes").glob("*.png")))
    assert f"demo-shapes: {shapes} images ok" in out and "demo-denoise:" in out
    assert "memory plot:" in out


def test_self_test_fails_with_a_message(qapp, capsys, monkeypatch):
    # A broken build: the bundled samples are missing.
    monkeypatch.setattr("batchlens.ui.self_test.sample_folder", lambda model: Path("/nonexistent") / model)
    assert run_window(build_parser().parse_args(["--self-test"])) == 1
    assert "self-test FAILED" in capsys.readouterr().err


def test_no_display_is_a_clear_message_not_a_crash(monkeypatch, capsys):
    monkeypatch.setattr("sys.platform", "linux")
    for name in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    assert run_window(build_parser().parse_args([])) == 2
    assert "no display" in capsys.readouterr().err


def test_a_run_thread_that_outlives_the_close_is_left_behind_not_destroyed(monkeypatch, capsys):
    """If an image takes longer than the close waits, `batchlens` exits without it, never hangs."""
    import time
    from types import SimpleNamespace

    from PySide6.QtCore import QThread

    from batchlens.ui import app as app_module

    class SlowImage(QThread):
        def run(self):
            time.sleep(0.5)

    thread = SlowImage()
    thread.start()
    exits = []
    monkeypatch.setattr(app_module.os, "_exit", exits.append)
    app_module.finish(SimpleNamespace(thread=thread), 0)
    assert exits == [0]
    assert "still being processed" in capsys.readouterr().err
    assert thread.wait(5000)  # (the test itself lets it finish)
    assert app_module.finish(SimpleNamespace(thread=thread), 0) == 0


def test_start_refuses_a_folder_without_images_as_the_run_button_does(qapp, tmp_path):
    """`batchlens --input EMPTY --start` once ran at once (before the count) and wrote an empty
    predictions.jsonl; now it waits for the count and is refused with the Run button's sentence."""
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    output = tmp_path / "out"
    argv = ["--model", "demo-shapes", "--input", str(empty), "--output", str(output), "--device", "cpu"]
    seen = {}

    def close_when_refused():
        for widget in QApplication.topLevelWidgets():
            message = widget.statusBar().currentMessage() if isinstance(widget, MainWindow) else ""
            if message.startswith("Nothing to run"):
                seen["message"], seen["thread"] = message, widget.thread
                widget.close()
                return
        QTimer.singleShot(50, close_when_refused)

    QTimer.singleShot(0, close_when_refused)
    QTimer.singleShot(60_000, qapp.quit)  # a safety net: never hang the test run
    assert run_window(build_parser().parse_args([*argv, "--start"])) == 0
    assert f"there are no images in {empty}" in seen["message"], seen
    assert seen["thread"] is None  # no run started
    assert not (output / "predictions.jsonl").exists()


def test_a_missing_qt_system_library_is_named_in_one_sentence(monkeypatch, capsys):
    from batchlens.ui import qt_app

    asked = []

    def load(name: str) -> None:
        asked.append(name)
        if name == "libxcb-cursor.so.0":
            raise OSError(f"{name}: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(qt_app, "_load_library", load)
    monkeypatch.setattr("sys.platform", "linux")
    for name in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DISPLAY", ":0")
    assert run_window(build_parser().parse_args([])) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "libxcb-cursor.so.0" in err and "sudo apt-get install libxcb-cursor0" in err
    assert "libxcb-icccm.so.4" not in asked  # it stops at the first missing one
    # Where Qt will not use xcb, nothing is checked: offscreen, Wayland, no display.
    asked.clear()
    for env in ({"QT_QPA_PLATFORM": "offscreen"}, {"WAYLAND_DISPLAY": "wayland-0"}, {"DISPLAY": ""}):
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            assert qt_app.missing_xcb_library() is None
    assert asked == []
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")  # asked for by name: checked
    assert "libxcb-cursor0" in qt_app.missing_xcb_library()
