"""The results browser through its real widgets: a 20,000-line predictions.jsonl made here (a few real
image files, many lines pointing at them or at missing ones), scrolled to the end, filtered, sorted,
opened with the keyboard; memory after scrolling stays bounded; a file that grows shows its new lines."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import psutil
import pytest
from PySide6.QtCore import Qt

from batchlens.cli import main
from batchlens.core.outputs.results_index import read_line
from batchlens.ui.results import ResultsBrowser
from batchlens.ui.results.model import natural_key
from batchlens.ui.results.thumbnails import CACHE_BYTES, CACHE_ENTRIES
from tests.helpers import make_shapes_folder

LINES = 20_000
LABELS = ["circle", "square", "triangle", "cross"]
REAL_FILES = 6


def _line(i: int) -> dict:
    """Line i: 6 in 7 name one of the REAL_FILES real images, the others a file that is not there."""
    image = f"shape_{i % REAL_FILES:04d}.png" if i % 7 != 6 else f"gone/img_{i:05d}.png"
    if i % 10 == 3:
        return {"image": image, "status": "error", "error": "is empty (0 bytes)", "seconds": 0.001}
    score = round(0.25 + 0.75 * ((i * 7919) % 1000) / 1000, 6)
    best = LABELS[(i * 31) % 4]
    top = [{"label": best, "index": LABELS.index(best), "score": score}]
    top += [
        {"label": other, "index": LABELS.index(other), "score": round((1 - score) / 3, 6)}
        for other in LABELS
        if other != best
    ]
    line = {
        "image": image,
        "status": "ok",
        "error": None,
        "seconds": round(0.01 + (i % 97) / 1000, 4),
        "top": top,
    }
    if i % 50 == 8:
        line["recovered"] = ["batch split to 1"]
    return line


@pytest.fixture
def big_output(tmp_path: Path) -> tuple[Path, list[dict]]:
    """An input folder of REAL_FILES real images and an output folder holding a finished run's 20,000
    lines about them (and about missing files)."""
    inputs, output = tmp_path / "in", tmp_path / "out"
    make_shapes_folder(inputs, REAL_FILES, size=64)
    lines = [_line(i) for i in range(LINES)]
    output.mkdir()
    (output / "predictions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    summary = {"model": "demo-shapes", "task": "classification", "input": str(inputs), "counts": {}}
    (output / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return output, lines


@pytest.fixture
def browser(qtbot):
    widget = ResultsBrowser(show_back=True)
    qtbot.addWidget(widget)
    widget.resize(1000, 700)
    widget.show()
    yield widget
    widget.shutdown()
    assert widget.loader.pool.activeThreadCount() == 0


def _tile_key(browser: ResultsBrowser, row: int) -> tuple:
    return ("tile", browser.generation, browser.shown.record(row).offset)


def test_20000_results_scroll_filter_sort_and_open(qtbot, browser, big_output):
    output, lines = big_output
    rss_before = psutil.Process().memory_info().rss
    browser.open_folder(output)
    qtbot.waitUntil(lambda: browser.results.rowCount() == LINES, timeout=10_000)
    assert browser.count_label.text() == "Showing 20,000 of 20,000"
    assert not browser.notice.isVisible()  # the input folder is here

    # Scroll through the whole grid, then to the very end: the tiles in view get drawn.
    grid = browser.grid
    bar = grid.verticalScrollBar()
    for step in range(1, 11):
        made = browser.loader.made
        bar.setValue(bar.maximum() * step // 10)
        qtbot.waitUntil(lambda made=made: browser.loader.made > made, timeout=10_000)  # the new view drawn
    grid.scrollToBottom()
    last = browser.shown.rowCount() - 1
    qtbot.waitUntil(lambda: _tile_key(browser, last) in browser.cache, timeout=10_000)
    assert not browser.cache.get(_tile_key(browser, last)).isNull()  # line 19,999 has its file
    missing = browser.shown.index(6, 0)
    grid.scrollTo(missing)
    qtbot.waitUntil(lambda: _tile_key(browser, 6) in browser.cache, timeout=10_000)
    assert browser.cache.get(_tile_key(browser, 6)).isNull()  # its file is gone: "no picture"
    # Only what was on screen was made, and the cache is bounded.
    assert browser.loader.made < 2_000
    assert len(browser.cache) <= CACHE_ENTRIES and browser.cache.bytes <= CACHE_BYTES
    growth = psutil.Process().memory_info().rss - rss_before
    print(f"RSS growth after opening and scrolling 20,000 results: {growth / 2**20:.1f} MiB")
    assert growth < 100 * 2**20

    # The label table counts the top labels; a click on one filters.
    counts = Counter(line["top"][0]["label"] for line in lines if line["status"] == "ok")
    table = browser.filters.labels_table
    shown = {
        table.item(r, 0).text(): int(table.item(r, 1).text().replace(",", ""))
        for r in range(table.rowCount())
    }
    assert shown == {"All": LINES, **counts}
    row_of_circle = next(r for r in range(table.rowCount()) if table.item(r, 0).text() == "circle")
    table.selectRow(row_of_circle)
    assert browser.shown.rowCount() == counts["circle"]
    assert browser.count_label.text() == f"Showing {counts['circle']:,} of 20,000"

    # Status and score range, on top of the label.
    browser.filters.status_boxes["ok"].setChecked(False)
    browser.filters.status_boxes["error"].setChecked(False)
    recovered_circles = [x for x in lines if x.get("recovered") and x["top"][0]["label"] == "circle"]
    assert browser.shown.rowCount() == len(recovered_circles) > 0
    browser.filters.reset()
    assert browser.shown.rowCount() == LINES
    browser.filters.score_slider.setValue((0.5, 0.9))
    in_range = [x for x in lines if x["status"] == "ok" and 0.5 <= x["top"][0]["score"] <= 0.9]
    assert browser.shown.rowCount() == len(in_range)
    browser.filters.status_boxes["ok"].setChecked(False)
    browser.filters.status_boxes["recovered"].setChecked(False)
    assert browser.shown.rowCount() == 0  # failed images have no score: outside any narrowed range
    browser.filters.reset()
    browser.filters.status_boxes["ok"].setChecked(False)
    browser.filters.status_boxes["recovered"].setChecked(False)
    assert browser.shown.rowCount() == sum(x["status"] == "error" for x in lines)
    browser.filters.reset()

    # Sorting: by score, highest first (images without a score last); by time taken; back to run order.
    combo = browser.filters.sort_combo
    grid.setCurrentIndex(browser.shown.index(5, 0))
    chosen = browser.shown.record(5)
    combo.setCurrentIndex(combo.findData("score"))
    browser.filters.direction.setChecked(True)
    assert browser.shown.record(grid.currentIndex().row()) is chosen  # the current item moves with it
    scores = [browser.shown.record(r).score for r in range(browser.shown.rowCount())]
    having = [s for s in scores if s is not None]
    assert having == sorted(having, reverse=True) and scores[: len(having)] == having
    assert having[0] == max(x["top"][0]["score"] for x in lines if x["status"] == "ok")
    combo.setCurrentIndex(combo.findData("seconds"))
    browser.filters.direction.setChecked(False)
    seconds = [browser.shown.record(r).seconds for r in range(browser.shown.rowCount())]
    assert seconds == sorted(seconds)
    combo.setCurrentIndex(combo.findData("name"))
    names = [browser.shown.record(r).image for r in range(LINES)]
    assert names[0] == "gone/img_00006.png" and names[-1] == "shape_0005.png"
    assert names == sorted(names, key=natural_key)
    combo.setCurrentIndex(combo.findData("run order"))

    # Open one with Enter, move with the arrows, go back with Esc; the grid keeps the place.
    grid.setCurrentIndex(browser.shown.index(12, 0))
    grid.setFocus()
    qtbot.keyClick(grid, Qt.Key.Key_Return)
    assert browser.showing_detail()
    detail = browser.detail
    assert detail.record.offset == browser.results.records[12].offset
    assert detail.position.text() == "13 of 20,000"
    qtbot.waitUntil(lambda: detail.panel.input_view.has_image(), timeout=5_000)
    assert detail.panel.bars.ranking()[0][0] == lines[12]["top"][0]["label"]
    qtbot.keyClick(detail, Qt.Key.Key_Right)
    assert detail.record.offset == browser.results.records[13].offset  # line 13 failed: its message
    assert detail.record.status == "error"
    qtbot.waitUntil(lambda: "is empty (0 bytes)" in detail.panel.message.text(), timeout=5_000)
    qtbot.keyClick(detail, Qt.Key.Key_Left)
    qtbot.keyClick(detail, Qt.Key.Key_Left)
    assert detail.record.offset == browser.results.records[11].offset
    qtbot.keyClick(detail, Qt.Key.Key_Escape)
    assert not browser.showing_detail()
    assert grid.currentIndex().row() == 11
    with qtbot.waitSignal(browser.back_requested, timeout=1000):
        qtbot.keyClick(grid, Qt.Key.Key_Escape)


def test_a_growing_file_shows_new_lines(qtbot, browser, tmp_path):
    """A run still going: lines appear, a half-written last line waits until it is whole."""
    output = tmp_path / "out"
    output.mkdir()
    predictions = output / "predictions.jsonl"
    predictions.write_text("".join(json.dumps(_line(i)) + "\n" for i in range(10)), encoding="utf-8")
    browser.open_folder(output)
    assert browser.results.rowCount() == 10
    assert "not finished" in browser.title.text()
    assert browser.notice.isVisible()  # nothing says where the inputs are: said so
    with open(predictions, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(_line(i)) + "\n" for i in range(10, 15)))
        partial = json.dumps(_line(15))
        f.write(partial[:20])
    qtbot.waitUntil(lambda: browser.results.rowCount() == 15, timeout=3_000)
    assert browser.count_label.text() == "Showing 15 of 15"
    with open(predictions, "a", encoding="utf-8") as f:
        f.write(partial[20:] + "\n")
    qtbot.waitUntil(lambda: browser.results.rowCount() == 16, timeout=3_000)
    assert read_line(predictions, browser.results.records[15]) == _line(15)
    # A resume rewrites the file: the browser reads it afresh.
    predictions.write_text("".join(json.dumps(_line(i)) + "\n" for i in range(3)), encoding="utf-8")
    qtbot.waitUntil(lambda: browser.results.rowCount() == 3, timeout=3_000)


def test_a_real_run_from_another_machine(qtbot, browser, shapes_folder, tmp_path):
    """A real demo-shapes run, then the input folder gone (as on another computer): results still
    shown, without the input pictures, saying so; choosing the folder brings the pictures back."""
    from batchlens.core.run.config import RunConfig
    from batchlens.core.run.runner import Runner

    output = tmp_path / "out"
    events = list(Runner(RunConfig("demo-shapes", shapes_folder, output, device="cpu")).events())
    assert events[-1].summary["counts"]["ok"] == 12
    moved = tmp_path / "moved"
    shapes_folder.rename(moved)
    browser.open_folder(output)
    assert browser.results.rowCount() == 12 and browser.folder.finished
    assert browser.notice.isVisible() and str(shapes_folder) in browser.notice.text()
    qtbot.waitUntil(lambda: _tile_key(browser, 0) in browser.cache, timeout=5_000)
    assert browser.cache.get(_tile_key(browser, 0)).isNull()  # classification: no picture without input
    browser.open_row(0)
    qtbot.waitUntil(lambda: "not on this computer" in browser.detail.details.text(), timeout=5_000)
    assert not browser.detail.panel.input_view.has_image()
    browser.show_grid()

    browser.set_input_folder(moved)
    assert not browser.notice.isVisible()
    qtbot.waitUntil(lambda: _tile_key(browser, 0) in browser.cache, timeout=5_000)
    assert not browser.cache.get(_tile_key(browser, 0)).isNull()


def test_the_tile_cache_forgets_the_least_recently_used_first():
    from PySide6.QtGui import QImage

    from batchlens.ui.results.thumbnails import ThumbnailCache

    tile = QImage(100, 100, QImage.Format.Format_RGBA8888)  # 40,000 bytes
    cache = ThumbnailCache(max_bytes=3 * tile.sizeInBytes(), max_entries=10)
    for key in "abc":
        cache.put(key, tile)
    assert cache.get("a") is not None  # "a" is now the most recently used
    cache.put("d", tile)
    assert "b" not in cache and all(k in cache for k in "acd") and cache.bytes == 3 * tile.sizeInBytes()
    failed = ThumbnailCache(max_bytes=10**9, max_entries=2)  # null tiles cost no bytes: counted too
    for key in "xyz":
        failed.put(key, QImage())
    assert len(failed) == 2 and "x" not in failed


def test_inputs_are_only_read_inside_the_input_folder(tmp_path):
    from batchlens.ui.results.thumbnails import input_path

    assert input_path(tmp_path, "a/b.png") == tmp_path / "a" / "b.png"
    assert input_path(tmp_path, "a/../b.png") == tmp_path / "b.png"
    for outside in ("../b.png", "a/../../b.png", "/etc/passwd", ".."):
        assert input_path(tmp_path, outside) is None
    assert input_path(None, "a.png") is None


def test_cli_results_refuses_a_folder_without_results(tmp_path, capsys):
    assert main(["--results", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["--results", str(tmp_path)]) == 2
    assert "holds no results" in capsys.readouterr().err


def test_the_results_window_opens_a_folder(qtbot, tmp_path):
    """What `batchlens --results DIR` shows: the browser in its own window, with File > Open results…"""
    from batchlens.ui.results.window import ResultsWindow

    output = tmp_path / "out"
    output.mkdir()
    lines = "".join(json.dumps(_line(i)) + "\n" for i in range(4))
    (output / "predictions.jsonl").write_text(lines, encoding="utf-8")
    window = ResultsWindow()
    qtbot.addWidget(window)
    window.browser.open_folder(output)
    assert str(output) in window.windowTitle()
    assert window.browser.count_label.text() == "Showing 4 of 4"
    actions = [a.text() for a in window.menuBar().actions()[0].menu().actions()]
    assert actions == ["&Open results…", "&Export…", "&Quit"]
    window.close()
    assert not window.browser.timer.isActive()


def test_the_label_list_is_named_by_the_tasks_kind(qtbot, browser, tmp_path):
    """One label an image (classification) is a list of Labels; many classes an image (detection,
    segmentation) a list of Classes, as the task's kind says (core/tasks/kinds.py), whether the task
    is recorded in summary.json or read from the lines' shape."""
    ok = {"status": "ok", "error": None, "seconds": 0.01}
    runs = {
        "detection": {"detections": [{"label": "cat", "score": 0.9, "box": [0, 0, 5, 5]}]},
        "segmentation": {"classes": [{"index": 0, "label": "background"}, {"index": 1, "label": "road"}]},
        "classification": {"top": [{"label": "cat", "index": 0, "score": 0.9}]},
    }
    seen = {}
    for recorded in (False, True):
        for task, fields in runs.items():
            output = tmp_path / f"{task}-{recorded}"
            output.mkdir()
            line = {"image": "a.png", **ok, **fields}
            (output / "predictions.jsonl").write_text(json.dumps(line) + "\n", encoding="utf-8")
            if recorded:
                summary = {"model": "m", "task": task, "counts": {}}
                (output / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
            browser.open_folder(output)
            table = browser.filters.labels_table
            seen[task, recorded] = (browser.filters.labels_title.text(), table.horizontalHeaderItem(0).text())
            assert table.rowCount() >= 2  # "All" and the result's names
    for recorded in (False, True):
        assert seen["detection", recorded] == ("<b>Classes</b>", "Class")
        assert seen["segmentation", recorded] == ("<b>Classes</b>", "Class")
        assert seen["classification", recorded] == ("<b>Labels</b>", "Label")
