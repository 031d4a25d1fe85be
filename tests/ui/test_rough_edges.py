"""The first hour's rough edges (issue 25, point 6), each through the real window: the default size on
small screens, Problems with room, previews that grow, where dialogs open, markers behind the data,
plain words, a status bar never stale, Open output folder, View > Theme and Help > User guide.
(A run ending on the run screen with Browse results: tests/ui/test_run_screen.py, the menus test.)"""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

from PySide6.QtCore import QRect, QUrl
from PySide6.QtGui import QPalette

from batchlens.core.resources import resource_path, sample_folder
from batchlens.ui.pages import first_start_geometry

ROOT = Path(__file__).resolve().parents[2]


def at_first_start_size(qtbot, window, screen_w: int, screen_h: int) -> None:
    geometry = first_start_geometry(QRect(0, 0, screen_w, screen_h))
    window.setGeometry(geometry)
    qtbot.waitUntil(lambda: window.size() == geometry.size())
    qtbot.wait(50)  # the scroll area's own pass


def test_the_default_window_fits_800x600_without_horizontal_scrolling(qtbot, window):
    window.prefill(model="demo-shapes", input_dir=sample_folder("demo-shapes"))
    at_first_start_size(qtbot, window, 800, 600)
    assert window.pages.run_scroll.horizontalScrollBar().maximum() == 0
    assert window.run_screen.width() <= window.pages.run_scroll.viewport().width()


def test_problems_show_four_rows_at_1280x720_and_previews_grow(qtbot, window):
    at_first_start_size(qtbot, window, 1280, 720)
    for i in range(6):
        window.problems.add(f"img_{i}.png", "The file is not a picture: it could not be read.")
    assert window.panel_tabs.tabText(1) == "Problems (6)"
    window.panel_tabs.setCurrentWidget(window.problems)
    tree = window.problems.tree
    qtbot.waitUntil(lambda: tree.viewport().height() > 0)
    row = tree.visualItemRect(tree.topLevelItem(0)).height()
    assert tree.viewport().height() >= 4 * row and window.pages.run_scroll.verticalScrollBar().maximum() == 0

    window.panel_tabs.setCurrentWidget(window.preview_box)
    small = window.previews.input_view.size()
    window.resize(1800, 1100)
    qtbot.waitUntil(lambda: window.previews.input_view.height() > small.height() * 1.5)
    assert window.previews.input_view.width() > small.width() * 1.5


def test_file_dialogs_start_in_the_input_or_output_folder(window, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    from batchlens.ui.model_sources import choose_weights_file

    monkeypatch.chdir(ROOT)  # started from the source checkout: that is never where a dialog opens
    asked = []
    monkeypatch.setattr(
        QFileDialog, "getOpenFileName", lambda _p, _t, folder, *a: asked.append(folder) or ("", "")
    )
    choose_weights_file(window)
    assert asked[-1] == str(sample_folder("demo-shapes"))  # first start: the samples are the input
    window.form.set_input("")
    window.form.set_output("")
    choose_weights_file(window)
    assert asked[-1] == str(Path.home())  # nothing chosen: home, not the folder it was started from
    folder = tmp_path / "photos"
    folder.mkdir()
    window.form.set_input(folder)
    window.form.set_output(tmp_path / "photos-out")  # not made yet: the folder above it
    choose_weights_file(window)
    assert asked[-1] == str(folder)
    window.model_picker.file_chooser(window)  # Open model file… (through the sidecar check)
    assert asked[-1] == str(folder)
    assert Path(window.memory_plot._suggested("memory.png")).parent == tmp_path
    window.form.set_output("")
    window.memory_plot.set_save_folder(None)
    assert Path(window.memory_plot._suggested("memory.png")).parent == Path.home()


def test_markers_sit_behind_the_data_and_older_runs_fade(window):
    plot = window.memory_plot
    plot.add_marker("run_start", "Run started: demo-shapes")
    plot.add_marker("failure", "a.png: not a picture")
    plot.add_marker("run_end", "Run finished")
    lines = [line for _, line in plot.marks.lines()]
    curve_z = min(curve.zValue() for curve in plot.curves.values())
    assert all(line.zValue() < curve_z for line in lines)
    assert all(line.opacity() == 1.0 for line in lines)
    plot.add_marker("run_start", "Run started: demo-denoise")
    *older, newest = [line for _, line in plot.marks.lines()]
    assert all(line.opacity() < 0.5 for line in older) and newest.opacity() == 1.0


def test_plain_words_in_the_window(window):
    from batchlens.ui.wording import for_status, for_window

    assert for_status("Batch size auto: 8 (fastest measured; images/s by size so far: 1: 3.1, 8: 9.4).") == (
        "Processing 8 images at a time."
    )
    assert for_status("Batch size auto: chose 4 (memory; images/s by size: 1: 2.0).") == (
        "Processing 4 images at a time."
    )
    text = for_window(
        "The weights are fetched once into /tmp/hub/checkpoints (the torch hub cache; set TORCH_HOME to "
        "move it). Pillow cannot read this file."
    )
    assert "TORCH_HOME" not in text and "Pillow" not in text and "The image reader cannot" in text
    window.model_picker.set_current_model("demo-denoise")
    picker = window.model_picker
    shown = [picker.combo.itemText(i) for i in range(picker.combo.count())] + [picker.task_label.text()]
    assert not [t for t in shown if "image_to_image" in t] and "image to image" in picker.task_label.text()
    window.status("Batch size auto: 2 (fastest; images/s by size so far: 1: 3.0, 2: 5.0).")
    assert window.statusBar().currentMessage() == "Processing 2 images at a time."


def test_the_status_bar_is_never_stale_after_a_change(window, tmp_path):
    window.statusBar().showMessage("Finished.")
    window.form.set_input(tmp_path)
    assert window.statusBar().currentMessage() == ""
    window.statusBar().showMessage("Finished.")
    window.model_picker.set_current_model("demo-denoise")
    assert window.statusBar().currentMessage() == ""


def test_open_output_folder_is_on_exactly_when_the_folder_exists(qtbot, window, tmp_path):
    button = window.controls.open_output_button
    window.form.set_output(tmp_path)
    assert button.isEnabled()
    window.form.set_output(tmp_path / "not-yet")
    assert not button.isEnabled() and not window.controls.browse_results_button.isEnabled()
    window.form.set_output(tmp_path)
    assert button.isEnabled() and not window.controls.browse_results_button.isEnabled()
    (tmp_path / "predictions.jsonl").write_text("")
    window.form.set_output(tmp_path / "not-yet")
    window.form.set_output(tmp_path)
    assert window.controls.browse_results_button.isEnabled()


def test_view_theme_system_light_dark(qtbot, window):
    from PySide6.QtWidgets import QApplication

    from batchlens.ui.qt_app import create_app

    create_app()
    actions = {a.data(): a for a in window.menus.theme_actions.actions()}
    assert list(actions) == ["system", "light", "dark"] and actions["system"].isChecked()

    def dark() -> bool:
        return QApplication.instance().palette().color(QPalette.ColorRole.Window).lightness() < 128

    try:
        actions["dark"].trigger()
        assert dark() and window.settings.theme == "dark"
        actions["light"].trigger()
        assert not dark() and window.settings.theme == "light"
        actions["dark"].trigger()
        actions["system"].trigger()  # the offscreen platform has no scheme: the style's own, light
        assert not dark() and window.settings.theme is None
    finally:
        actions["system"].trigger()


def test_help_user_guide_opens_the_bundled_pages_inside_the_app(qtbot, window):
    window.menus.guide_action.trigger()
    guide = window._user_guide
    qtbot.waitUntil(guide.isVisible)
    assert guide.page == "window.md" and "Choosing what to run" in guide.browser.toPlainText()
    guide.show_link(QUrl("models.md#model-files-without-a-sidecar-in-the-window"))
    assert guide.page == "models.md"
    guide.show_link(QUrl("gpu-report.md"))  # a developers' page, not bundled: said so, with a way back
    assert "not part of this guide" in guide.browser.toPlainText()
    guide.show_link(QUrl("window.md"))
    assert guide.page == "window.md"
    assert str(ROOT / "docs") not in guide.browser.toPlainText()
    guide.show_page("window.md")  # its screenshots are not bundled: their captions, not broken pictures
    assert "(picture: The BatchLens window mid-run" in guide.browser.toPlainText()
    assert not guide.browser.document().toHtml().count("<img")
    guide.close()


def test_the_bundled_guide_is_the_same_as_docs():
    """resources/docs/ ships with the wheel and the bundle; `python scripts/bundle_docs.py` updates it."""
    bundled = resource_path("docs")
    names = sorted(os.listdir(bundled))
    assert "window.md" in names
    differ = [n for n in names if not filecmp.cmp(bundled / n, ROOT / "docs" / n, shallow=False)]
    assert not differ, f"{differ} differ from docs/: run `python scripts/bundle_docs.py`"
