"""The real window, offscreen: run the demo models, pause, cancel, close mid-run, clear the cache."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, QRect, QSize, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QApplication

from batchlens.core.resources import sample_folder
from batchlens.core.run.events import ImageResult
from batchlens.ui.main_window import MainWindow
from batchlens.ui.pages import DEFAULT_WINDOW_SIZE
from batchlens.ui.previews import THUMBNAILS
from batchlens.ui.run_form import default_output_for
from batchlens.ui.settings import Settings
from tests.helpers import make_shapes_folder, pin_machine_load
from tests.ui.conftest import GIB, MIB

RUN_TIMEOUT_MS = 120_000


def jsonl(output: Path) -> list[dict]:
    path = output / "predictions.jsonl"
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()] if path.exists() else []


def pause_at(window: MainWindow, index: int) -> None:
    """Press Pause on the worker thread right after image `index` (as a user could), deterministically."""

    def hook(worker):
        def on_event(event):
            if isinstance(event, ImageResult) and event.index == index:
                worker.pause()

        worker.yielded.connect(on_event, Qt.ConnectionType.DirectConnection)

    window.worker_created.connect(hook)


def start(qtbot, window: MainWindow, model: str, folder: Path, output: Path, speed: str = "") -> None:
    """Start a run as a user would; `speed` "exact" for tests that stop after a given image (the
    default speed batches, and a pause or cancel takes effect after the current batch)."""
    if speed:
        window.form.speed_combo.setCurrentIndex(window.form.speed_combo.findData(speed))
    window.prefill(model=model, input_dir=folder, output_dir=output, device="cpu")
    qtbot.mouseClick(window.controls.run_button, Qt.MouseButton.LeftButton)
    assert window.is_running()


def test_run_demo_on_a_generated_folder_to_the_end(qtbot, window, shapes_folder, tmp_path):
    output = tmp_path / "out"
    window.prefill(model="demo-shapes", input_dir=shapes_folder, output_dir=output, device="cpu")
    qtbot.waitUntil(lambda: window.form.count_label.text() == "12 images found.", timeout=10_000)
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        qtbot.mouseClick(window.controls.run_button, Qt.MouseButton.LeftButton)
    summary = finished.args[0]
    lines = jsonl(output)
    assert [line["image"] for line in lines] == [f"shape_{i:04d}.png" for i in range(12)]
    assert summary["counts"]["ok"] == 12 and not summary["cancelled"]
    assert window.controls.progress.maximum() == 12 and window.controls.progress.value() == 12
    # The previews show the last image: its input and its ranked labels as score bars.
    shown = window.previews.shown
    assert shown.image == "shape_0011.png"
    assert window.previews.input_view.has_image()
    assert window.previews.result_stack.currentWidget() is window.previews.bars
    ranking = window.previews.bars.ranking()
    assert ranking[0][0] == lines[-1]["top"][0]["label"]
    assert ranking[0][1] == pytest.approx(lines[-1]["top"][0]["score"], abs=1e-3)
    assert "shape_0011.png" in window.previews.caption.text()
    # The thumbnail strip has its fixed bound, newest last.
    visible = [b for b in window.thumbnails.buttons if not b.isHidden()]
    assert len(visible) == min(12, THUMBNAILS)
    assert "shape_0011.png" in visible[0].toolTip()  # newest first, always in view
    assert "shape_0004.png" in visible[-1].toolTip()
    assert "Finished: 12 image(s) ok" in window.controls.message.text()
    # A count of the same folder that lands after the run (one started before it, slow on a busy
    # machine) must not turn the finished "12 / 12" back into "0 / 12".
    with qtbot.waitSignal(window.form.counted, timeout=10_000):
        window.form.count_now()
    assert window.controls.progress.value() == 12
    assert window.controls.run_button.isEnabled() and window.controls.open_output_button.isEnabled()
    assert not window.is_running()
    assert [m.kind for m in window.memory_plot.markers] == ["run_start", "run_end"]


def test_image_to_image_shows_output_beside_input_with_a_slider(qtbot, window, denoise_folder, tmp_path):
    output = tmp_path / "out"
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS):
        start(qtbot, window, "demo-denoise", denoise_folder, output)
    assert len(jsonl(output)) == 6
    previews = window.previews
    assert previews.shown.image == "noisy_0005.png"
    assert previews.result_stack.currentIndex() == 2 and previews.output_view.has_image()
    assert previews.output_view.image_size() == previews.input_view.image_size()
    # The before/after divider is dragged on the picture itself: input left of it, output right.
    view = previews.output_view
    target = view._target()
    qtbot.mousePress(view, Qt.MouseButton.LeftButton, pos=target.center() - QPoint(target.width() // 5, 0))
    assert view.split == pytest.approx(0.3, abs=0.02)
    qtbot.keyClick(view, Qt.Key.Key_Right)
    assert view.split == pytest.approx(0.35, abs=0.02)


def test_bad_images_are_listed_and_the_run_goes_on(qtbot, window, tmp_path):
    folder = tmp_path / "mixed"
    make_shapes_folder(folder, 3)
    (folder / "notes.jpg").write_text("not a picture")
    output = tmp_path / "out"
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS):
        start(qtbot, window, "demo-shapes", folder, output)
    lines = jsonl(output)
    assert [line["status"] for line in lines].count("ok") == 3
    assert window.problems.count() == 1
    row = window.problems.tree.topLevelItem(0)
    assert row.text(0) == "notes.jpg" and "notes.jpg" in row.text(1)
    assert window.problems.title() == "Problems (1)"
    assert "failure" in [m.kind for m in window.memory_plot.markers]


def test_pause_then_resume(qtbot, window, tmp_path):
    folder = tmp_path / "many"
    make_shapes_folder(folder, 20, size=48)
    output = tmp_path / "out"
    pause_at(window, 3)
    held = threading.Event()  # the run's thread has reached its pause and waits there

    def note_the_wait(worker):
        runner, wait = worker.runner, worker.runner._wait_until_resumed
        runner._wait_until_resumed = lambda: (held.set(), wait())[1]

    window.worker_created.connect(note_the_wait)
    start(qtbot, window, "demo-shapes", folder, output)
    qtbot.waitUntil(lambda: window.controls.pause_button.text() == "Resume", timeout=RUN_TIMEOUT_MS)
    qtbot.waitUntil(held.is_set, timeout=RUN_TIMEOUT_MS)
    qtbot.waitUntil(lambda: window.controls.progress.value() == 3, timeout=5000)
    # Held in its pause: nothing more can happen until Resume.
    assert len(jsonl(output)) == 3 and window.controls.progress.value() == 3
    assert window.statusBar().currentMessage().startswith("Paused")
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        qtbot.mouseClick(window.controls.pause_button, Qt.MouseButton.LeftButton)
    assert not finished.args[0]["cancelled"]
    assert len(jsonl(output)) == 20 and window.controls.progress.value() == 20


def test_cancel_with_escape_keeps_what_was_done(qtbot, window, tmp_path):
    folder = tmp_path / "many"
    make_shapes_folder(folder, 20, size=48)
    output = tmp_path / "out"
    pause_at(window, 4)
    start(qtbot, window, "demo-shapes", folder, output, speed="exact")
    qtbot.waitUntil(lambda: window.controls.pause_button.text() == "Resume", timeout=RUN_TIMEOUT_MS)
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        qtbot.keyClick(window, Qt.Key.Key_Escape)
    summary = finished.args[0]
    assert summary["cancelled"] and summary["counts"]["not_processed"] == 16
    assert [line["image"] for line in jsonl(output)] == [f"shape_{i:04d}.png" for i in range(4)]
    assert window.controls.progress.value() == 4
    assert "Cancelled" in window.controls.message.text()
    assert window.controls.run_button.isEnabled() and not window.controls.cancel_button.isEnabled()


@pytest.mark.parametrize("paused", [True, False], ids=["paused", "running"])
def test_closing_mid_run_stops_the_thread_and_keeps_results(qtbot, qtlog, window, tmp_path, paused):
    folder = tmp_path / "many"
    make_shapes_folder(folder, 30, size=48)
    output = tmp_path / "out"
    if paused:
        pause_at(window, 2)
    start(qtbot, window, "demo-shapes", folder, output, speed="exact")
    qtbot.waitUntil(lambda: window.controls.progress.value() >= (2 if paused else 1), timeout=RUN_TIMEOUT_MS)
    thread = window.thread
    window.close()
    assert not thread.isRunning()
    lines = jsonl(output)
    assert lines and all(line["status"] == "ok" for line in lines)  # every written line is whole
    if paused:
        assert len(lines) == 2
    summary = json.loads((output / "summary.json").read_text("utf-8"))
    assert summary["counts"]["ok"] == len(lines)
    assert not [r for r in qtlog.records if "QThread" in r.message]


def test_clear_cache_button_reports_what_was_freed(qtbot, window, fake_probe):
    fake_probe.freed = int(1.2 * GIB)
    fake_probe.still = 340 * MIB
    qtbot.mouseClick(window.memory_plot.clear_button, Qt.MouseButton.LeftButton)
    assert fake_probe.clear_calls == 1
    assert window.statusBar().currentMessage() == (
        "Freed 1.2 GiB of cached memory; 340.0 MiB still allocated by live tensors."
    )
    assert window.memory_plot.markers[-1].kind == "clear_cache"


def test_the_plot_samples_its_probe_on_a_timer_without_a_run(qtbot, window, fake_probe):
    calls = fake_probe.calls
    qtbot.waitUntil(lambda: fake_probe.calls >= calls + 3, timeout=5000)
    _, allocated = window.memory_plot.curves["allocated"].getData()
    # 1 GiB used of an 8 GiB device: the scale follows the lines, in MiB.
    assert window.memory_plot.plot_item.getAxis("left").labelUnits == "MiB"
    assert np.allclose(allocated * MIB, 100 * MIB)  # the fake probe's 100 MiB


def test_first_start_preselects_the_demo_and_remembers_choices(qtbot, tmp_path, fake_probe, shapes_folder):
    settings_file = tmp_path / "fresh.ini"
    first = MainWindow(Settings(settings_file), probe_factory=lambda name: fake_probe)
    qtbot.addWidget(first)
    assert first.model_picker.current_model_id() == "demo-shapes"
    assert Path(first.form.input_edit.text()) == sample_folder("demo-shapes")
    output = Path(first.form.output_edit.text())
    assert not output.resolve().is_relative_to(sample_folder("demo-shapes").resolve())
    qtbot.waitUntil(lambda: first.form.count_label.text() == "32 images found.", timeout=10_000)
    # Choosing the other demo moves the input to its samples.
    first.model_picker.set_current_model("demo-denoise")
    assert Path(first.form.input_edit.text()) == sample_folder("demo-denoise")
    first.form.input_edit.setText(str(shapes_folder))
    assert (
        Path(first.form.output_edit.text())
        == default_output_for(shapes_folder)
        == shapes_folder.parent / "shapes-batchlens"
    )
    first.form.recursive_check.setChecked(True)
    first.form.cpu_fallback_check.setChecked(True)
    first.form.speed_combo.setCurrentIndex(first.form.speed_combo.findData("fastest"))
    first.form.cluster_edit.setText("ray://head:10001")
    first.set_device("cpu")
    first.show()
    size = first.minimumSizeHint().expandedTo(QSize(600, 500)) + QSize(7, 5)  # not the default size
    first.resize(size)
    qtbot.waitUntil(lambda: first.size() == size)
    first.close()

    second = MainWindow(Settings(settings_file), probe_factory=lambda name: fake_probe)
    qtbot.addWidget(second)
    assert second.model_picker.current_model_id() == "demo-denoise"
    assert second.form.input_edit.text() == str(shapes_folder)
    assert second.form.recursive_check.isChecked() and second.form.cpu_fallback_check.isChecked()
    assert second.form.speed_combo.currentText() == "Fastest"
    assert second.form.cluster_edit.text() == "ray://head:10001"
    assert second.device_name() == "cpu"
    second.show()
    assert second.size() == size
    second.close()


def test_first_start_fits_a_small_screen_and_a_saved_geometry_comes_back(qtbot, tmp_path, fake_probe):
    """The offscreen screen (800×800) is smaller than the default 1280×820: a first start takes 90 % of
    it, centred, status bar on screen; a place and size the user chose come back; a saved window from a
    bigger monitor comes back inside this screen (Qt's restoreGeometry does that part)."""
    available = QApplication.primaryScreen().availableGeometry()
    assert available.height() < DEFAULT_WINDOW_SIZE.height()  # otherwise this test checks nothing

    def open_window() -> MainWindow:
        window = MainWindow(Settings(tmp_path / "settings.ini"), probe_factory=lambda name: fake_probe)
        qtbot.addWidget(window)
        window.show()
        qtbot.waitExposed(window)
        return window

    def status_bar_on_screen(window: MainWindow) -> bool:
        status_bar = window.statusBar()
        return available.contains(QRect(status_bar.mapToGlobal(QPoint(0, 0)), status_bar.size()))

    first = open_window()
    assert first.size() == QSize(available.width() * 9 // 10, available.height() * 9 // 10)
    assert abs(first.frameGeometry().center().x() - available.center().x()) <= 1
    assert abs(first.frameGeometry().center().y() - available.center().y()) <= 1
    assert available.contains(first.frameGeometry()) and status_bar_on_screen(first)
    chosen = QRect(60, 50, 640, 560)
    first.setGeometry(chosen)
    qtbot.waitUntil(lambda: first.geometry() == chosen)
    first.close()

    second = open_window()
    assert second.geometry() == chosen
    second.setGeometry(QRect(2000, 100, 1600, 1000))  # as on a big monitor beside the laptop
    qtbot.waitUntil(lambda: second.width() == 1600)
    second.close()

    third = open_window()  # shrunk and moved by Qt to the screen's free area (its border may overhang)
    assert available.contains(third.geometry()) and status_bar_on_screen(third)
    third.close()


def test_fastest_speed_batches_prefetches_and_decodes_jpegs_small(qtbot, window, tmp_path, monkeypatch):
    """The Speed choice reaches the engine: batch size measured (auto), 2 batches decoded ahead, and
    JPEGs decoded at a reduced scale (demo-shapes takes 64×64; these photos are 256×192)."""
    from batchlens.core.run.bench import make_synthetic_folder

    pin_machine_load(monkeypatch, 1.0)  # busy: batches are decoded ahead
    assert window.form.speed_combo.currentText() == "Standard"  # the default: the engine's own defaults
    folder = make_synthetic_folder(tmp_path / "photos", 6, (256, 192))
    window.form.speed_combo.setCurrentIndex(window.form.speed_combo.findData("fastest"))
    window.prefill(model="demo-shapes", input_dir=folder, output_dir=tmp_path / "out", device="cpu")
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        qtbot.mouseClick(window.controls.run_button, Qt.MouseButton.LeftButton)
    summary = finished.args[0]
    assert summary["counts"]["ok"] == 6
    assert summary["prefetch"] == 2 and summary["threads"]["decode_in_step"] is False
    assert summary["fast_decode"] is True
    assert summary["batch_size_auto"] is not None and summary["batch_size"] >= 1


def test_dropping_a_folder_sets_the_input(qtbot, window, shapes_folder):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(shapes_folder))])
    event = QDropEvent(
        QPointF(10, 10),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    window.dropEvent(event)
    assert window.form.input_edit.text() == str(shapes_folder)
    qtbot.waitUntil(lambda: window.form.count_label.text() == "12 images found.", timeout=10_000)


def test_a_run_problem_is_shown_not_raised(qtbot, window, shapes_folder, tmp_path):
    output = tmp_path / "out"
    output.write_text("a file where the output folder should be")
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        start(qtbot, window, "demo-shapes", shapes_folder, output)
    assert finished.args[0] is None
    assert "out" in window.controls.message.text() and window.last_error
    assert window.controls.run_button.isEnabled()
    assert window.controls.progress.maximum() > 0  # no busy indicator left running
    # The preview does not go on saying "Loading the model…" for a run that stopped.
    assert "Loading" not in window.previews.message.text()


def test_every_control_has_a_tooltip(window):
    from PySide6.QtWidgets import QAbstractButton, QComboBox, QLineEdit, QProgressBar, QSlider

    missing = [
        f"{type(w).__name__} {getattr(w, 'text', lambda: '')()!r}"
        for kind in (QAbstractButton, QComboBox, QLineEdit, QSlider, QProgressBar)
        for w in window.findChildren(kind)
        if not w.isHidden()
        and not w.toolTip()
        and not (isinstance(w, QLineEdit) and isinstance(w.parent(), QComboBox))
    ]
    assert missing == []


def test_shortcuts_run_and_cancel(qtbot, window, tmp_path):
    folder = tmp_path / "many"
    make_shapes_folder(folder, 10, size=48)
    window.prefill(model="demo-shapes", input_dir=folder, output_dir=tmp_path / "out", device="cpu")
    pause_at(window, 1)
    qtbot.keyClick(window, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    assert window.is_running()
    qtbot.waitUntil(lambda: window.controls.pause_button.text() == "Resume", timeout=RUN_TIMEOUT_MS)
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        qtbot.keyClick(window, Qt.Key.Key_Escape)
    assert finished.args[0]["cancelled"]


def test_the_plot_follows_a_dark_palette(qtbot, window):
    from PySide6.QtGui import QColor, QPalette

    dark = QPalette(window.palette())
    dark.setColor(QPalette.ColorRole.Base, QColor("#1e1e1e"))
    dark.setColor(QPalette.ColorRole.Text, QColor("#e6e6e6"))
    window.setPalette(dark)
    plot = window.memory_plot
    qtbot.waitUntil(lambda: plot.plot_widget.backgroundBrush().color() == QColor("#1e1e1e"), timeout=2000)
    assert plot.plot_item.getAxis("left").textPen().color() == QColor("#e6e6e6")


def test_an_output_folder_inside_the_input_needs_a_yes(qtbot, window, shapes_folder, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    asked = []

    def answer(*args, **kwargs):
        asked.append(args[2])
        return QMessageBox.StandardButton.No

    monkeypatch.setattr(QMessageBox, "question", answer)
    window.ask_questions = True
    window.prefill(
        model="demo-shapes", input_dir=shapes_folder, output_dir=shapes_folder / "results", device="cpu"
    )
    assert not window.start_run()
    assert asked and "inside the folder of images" in asked[0]
    assert not (shapes_folder / "results").exists()


def test_the_cluster_choice_is_offered_only_where_ray_is_installed(qtbot, window, monkeypatch):
    from batchlens.ui import run_form

    combo = window.form.device_combo
    names = lambda: [combo.itemData(i) for i in range(combo.count())]  # noqa: E731
    monkeypatch.setattr(run_form, "ray_installed", lambda: True)
    window.form.fill_devices()
    assert run_form.CLUSTER in names()
    monkeypatch.setattr(run_form, "ray_installed", lambda: False)  # as in the installers
    window.form.fill_devices()
    assert run_form.CLUSTER not in names() and names()[-1] == "cpu"


def test_gpu_cache_policy_is_chosen_in_the_settings_menu_and_remembered(
    qtbot, window, shapes_folder, tmp_path
):
    menus = window.menus
    assert menus.empty_cache() == "never"  # the default: keep the cache (docs/gpu.md says why)
    every_image = next(a for a in menus.cache_actions.actions() if a.data() == "image")
    every_image.trigger()
    assert menus.empty_cache() == "image" and every_image.isChecked()
    output = tmp_path / "out"
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        start(qtbot, window, "demo-shapes", shapes_folder, output)
    assert finished.args[0]["empty_cache"] == "image"
    window.settings.sync()
    probe = window.memory_plot.probe
    again = MainWindow(Settings(tmp_path / "settings.ini"), probe_factory=lambda name: probe)
    qtbot.addWidget(again)
    assert again.menus.empty_cache() == "image"


def test_whole_gpu_is_remembered_and_scales_the_next_start_to_the_card(qtbot, window, fake_probe, tmp_path):
    def reopen() -> MainWindow:
        again = MainWindow(Settings(tmp_path / "settings.ini"), probe_factory=lambda name: fake_probe)
        qtbot.addWidget(again)
        again.show()
        return again

    box = window.memory_plot.whole_device
    assert box.isVisible() and not box.isChecked()  # the default: the scale follows the run's lines
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton)
    window.close()
    second = reopen()
    assert second.memory_plot.whole_device.isChecked()
    # The fake card's 8 GiB total is drawn and the scale goes up to it (1 GiB used: MiB unticked).
    qtbot.waitUntil(lambda: second.memory_plot.curves["device_total"].getData()[1] is not None)
    _, total = second.memory_plot.curves["device_total"].getData()
    assert np.allclose(total, 8.0) and second.memory_plot.plot_item.getAxis("left").labelUnits == "GiB"
    qtbot.mouseClick(second.memory_plot.whole_device, Qt.MouseButton.LeftButton)
    second.close()
    third = reopen()
    assert not third.memory_plot.whole_device.isChecked()
    qtbot.waitUntil(lambda: third.memory_plot.plot_item.getAxis("left").labelUnits == "MiB")
    _, total = third.memory_plot.curves["device_total"].getData()
    assert total is None or len(total) == 0  # not drawn: the run's lines are far below it
    third.close()


def test_speeds_map_to_the_engine_settings(window, tmp_path):
    from batchlens.core.run.config import EXACT_SETTINGS

    form = window.form
    assert [form.speed_combo.itemData(i) for i in range(form.speed_combo.count())] == [
        "exact",
        "standard",
        "fastest",
    ]
    for speed, on_cpu, on_gpu in (
        ("exact", EXACT_SETTINGS, EXACT_SETTINGS),
        ("standard", {}, {"precision": "auto"}),  # the engine defaults; on a GPU fp16 where checked
        (
            "fastest",
            {"fast_decode": True},
            {"fast_decode": True, "precision": "fp16", "channels_last": True, "gpu_decode": True},
        ),
    ):
        form.speed_combo.setCurrentIndex(form.speed_combo.findData(speed))
        assert form.speed_settings("cpu") == on_cpu and form.speed_settings("cuda") == on_gpu
    settings = Settings(tmp_path / "old.ini")
    settings.speed = "faster"  # what an earlier version remembered
    form.restore(settings)
    assert form.speed() == "standard"
