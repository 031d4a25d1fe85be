"""After the run in the window, through the real widgets: review keys in the large view (Enter, 1-9,
typing with completion; Delete and relabel for boxes), the review filter and its counts, reviews seen
again after a restart, the Evaluation view's matrix showing a cell's images in the grid, Sort into
folders (counts before acting, a clash refused) and Export."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from batchlens.cli import main
from batchlens.core.models.demo_data import SHAPES
from batchlens.core.outputs.reviews import REVIEWS
from batchlens.ui.results import ResultsBrowser, after_run_dialogs
from tests.helpers import make_shapes_folder


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("shapes-ui")
    flat, inputs, output = base / "flat", base / "in", base / "out"
    for i, label in enumerate(make_shapes_folder(flat, 12, seed=7, size=64)):
        (inputs / SHAPES[label]).mkdir(parents=True, exist_ok=True)
        shutil.move(flat / f"shape_{i:04d}.png", inputs / SHAPES[label] / f"shape_{i:04d}.png")
    args = ["run", "--model", "demo-shapes", "--input", str(inputs), "--output", str(output), "--recursive"]
    assert main([*args, "--device", "cpu", "--no-progress"]) == 0
    return inputs, output


@pytest.fixture
def run_copy(shapes_run, tmp_path) -> tuple[Path, Path, list[dict]]:
    inputs, output = tmp_path / "in", tmp_path / "out"
    shutil.copytree(shapes_run[0], inputs)
    shutil.copytree(shapes_run[1], output)
    manifest = json.loads((output / "run.json").read_text())
    manifest["input"] = str(inputs)
    (output / "run.json").write_text(json.dumps(manifest))
    lines = [json.loads(t) for t in (output / "predictions.jsonl").read_text().splitlines()]
    return inputs, output, lines


@pytest.fixture
def browser(qtbot):
    widget = ResultsBrowser(show_back=True)
    qtbot.addWidget(widget)
    widget.resize(1000, 700)
    widget.show()
    yield widget
    widget.shutdown()


def _reviews(output: Path) -> list[dict]:
    path = output / REVIEWS
    return [json.loads(t) for t in path.read_text().splitlines()] if path.exists() else []


def _open(qtbot, browser, output: Path, rows: int) -> None:
    browser.open_folder(output)
    qtbot.waitUntil(lambda: browser.results.rowCount() == rows, timeout=5_000)


def test_review_keys_write_reviews_and_the_filter_counts_them(qtbot, browser, run_copy):
    _, output, lines = run_copy
    _open(qtbot, browser, output, len(lines))
    browser.open_row(0)
    detail = browser.detail
    assert browser.showing_detail() and "Not reviewed" in detail.review.state.text()
    qtbot.keyClick(detail, Qt.Key.Key_Return)  # confirm the model's label
    assert detail.row == 1
    assert browser.grid.model().reviews[lines[0]["image"]].label == lines[0]["top"][0]["label"]
    qtbot.keyClick(detail, Qt.Key.Key_2)  # the model's second label
    assert detail.row == 2
    qtbot.keyClicks(detail, "c")  # typing: the entry takes over, completed as typed
    assert detail.review.entry.hasFocus() and detail.review.entry.text() == "c"
    qtbot.keyClicks(detail.review.entry, "ro")
    qtbot.keyClick(detail.review.entry, Qt.Key.Key_Return)
    written = _reviews(output)
    assert [r["image"] for r in written] == [x["image"] for x in lines[:3]]
    assert [r["label"] for r in written] == [
        lines[0]["top"][0]["label"],
        lines[1]["top"][1]["label"],
        "cross",
    ]
    assert (output / "predictions.jsonl").read_text().count("\n") == len(lines)  # never rewritten

    changed = sum(r["label"] != x["top"][0]["label"] for r, x in zip(written, lines))
    combo = browser.filters.review_combo
    assert [combo.itemText(i) for i in range(4)] == [
        f"All ({len(lines)})",
        "Reviewed (3)",
        f"Not reviewed ({len(lines) - 3})",
        f"Changed ({changed})",
    ]
    combo.setCurrentIndex(combo.findData("not reviewed"))
    assert browser.shown.rowCount() == len(lines) - 3
    # Reviewing with "not reviewed" shown: the reviewed image leaves the grid, the next one opens.
    browser.open_row(0)
    image = browser.detail.record.image
    qtbot.keyClick(browser.detail, Qt.Key.Key_Return)
    assert browser.shown.rowCount() == len(lines) - 4 and browser.detail.record.image != image
    combo.setCurrentIndex(combo.findData("changed"))
    assert browser.shown.rowCount() == changed

    # A restart: another browser on the same folder sees every review.
    again = ResultsBrowser()
    qtbot.addWidget(again)
    _open(qtbot, again, output, len(lines))
    assert again.filters.review_combo.itemText(1) == "Reviewed (4)"
    again.open_row(2)
    word = "confirmed" if lines[2]["top"][0]["label"] == "cross" else "changed to"
    assert f"{word} <b>cross</b>" in again.detail.review.state.text()
    again.shutdown()


def test_reviews_while_the_run_is_still_writing(qtbot, browser, run_copy):
    _, output, lines = run_copy
    text = (output / "predictions.jsonl").read_text().splitlines(keepends=True)
    (output / "predictions.jsonl").write_text("".join(text[:3]))
    (output / "summary.json").unlink()
    _open(qtbot, browser, output, 3)
    browser.open_row(2)
    qtbot.keyClick(browser.detail, Qt.Key.Key_1)
    with open(output / "predictions.jsonl", "a") as f:
        f.write("".join(text[3:]))
    qtbot.waitUntil(lambda: browser.results.rowCount() == len(lines), timeout=5_000)
    assert browser.filters.review_combo.itemText(1) == "Reviewed (1)"
    assert _reviews(output)[0]["label"] == lines[2]["top"][0]["label"]


def test_detection_review_deletes_a_box_and_changes_a_label(qtbot, browser, tmp_path):
    inputs, output = tmp_path / "in", tmp_path / "out"
    make_shapes_folder(inputs, 1, size=64)
    output.mkdir()
    line = {
        "image": "shape_0000.png",
        "status": "ok",
        "error": None,
        "seconds": 0.1,
        "size": [64, 64],
        "detections": [
            {"label": "cat", "index": 1, "score": 0.9, "box": [1, 1, 30, 30]},
            {"label": "dog", "index": 2, "score": 0.8, "box": [20, 20, 60, 60]},
            {"label": "cat", "index": 1, "score": 0.3, "box": [0, 0, 5, 5]},
        ],
    }
    (output / "predictions.jsonl").write_text(json.dumps(line) + "\n")
    (output / "run.json").write_text(json.dumps({"task": "detection", "input": str(inputs)}))
    _open(qtbot, browser, output, 1)
    browser.open_row(0)
    detail = browser.detail
    qtbot.keyClick(detail, Qt.Key.Key_Tab)
    qtbot.keyClick(detail, Qt.Key.Key_Tab)  # the third box
    qtbot.keyClick(detail, Qt.Key.Key_Delete)
    qtbot.keyClicks(detail, "c")  # relabel the selected (now the second) box
    qtbot.keyClicks(detail.review.entry, "a")
    qtbot.keyClick(detail.review.entry, Qt.Key.Key_Return)
    qtbot.keyClick(detail, Qt.Key.Key_Return)  # confirm the boxes
    [review] = _reviews(output)
    assert review["boxes"] == [
        {"label": "cat", "box": [1.0, 1.0, 30.0, 30.0], "score": 0.9},
        {"label": "cat", "box": [20.0, 20.0, 60.0, 60.0]},  # the person's label: no model score
    ]
    assert browser.filters.review_combo.itemText(3) == "Changed (1)"


def test_evaluate_sort_and_export_point_and_click(qtbot, browser, run_copy, tmp_path):
    inputs, output, lines = run_copy
    _open(qtbot, browser, output, len(lines))
    view = after_run_dialogs.evaluate(browser)
    qtbot.addWidget(view)
    report = json.loads((output / "evaluation.json").read_text())
    assert "Accuracy" in view.headline.text() and (output / "confusion.png").is_file()
    labels, matrix = report["confusion"]["labels"], report["confusion"]["matrix"]
    assert view.matrix.rowCount() == len(labels)
    i, j = next((i, j) for i, row in enumerate(matrix) for j, n in enumerate(row) if n)
    view.show_cell(i, j)  # as a click on the cell does
    assert browser.shown.rowCount() == matrix[i][j]
    shown = {browser.shown.record(r).image for r in range(browser.shown.rowCount())}
    assert all(im.split("/")[0] == labels[i] for im in shown)
    assert f"true {labels[i]}" in browser.count_label.text()
    browser.filters.reset_button.click()
    assert browser.shown.rowCount() == len(lines)
    view.close()

    dialog = after_run_dialogs.sort_into_folders(browser)
    qtbot.addWidget(dialog)
    dialog.into.setText(str(tmp_path / "sorted"))
    assert dialog.counts.text().startswith(f"{len(lines)} file(s) to be copied into")
    assert dialog.sort_button.isEnabled()
    dialog.sort_button.click()
    assert len(list((tmp_path / "sorted").rglob("*.png"))) == len(lines)
    assert "batchlens sort --undo" in browser.message.text()
    again = after_run_dialogs.sort_into_folders(browser)
    qtbot.addWidget(again)
    again.into.setText(str(tmp_path / "sorted"))
    assert "already holds a sort" in again.counts.text() and not again.sort_button.isEnabled()
    assert not again.undo_button.isHidden()
    again.undo_button.click()  # undo from the window: the copies go, the input stays
    assert not list((tmp_path / "sorted").rglob("*.png")) and len(list(inputs.rglob("*.png"))) == len(lines)
    assert "Undid the sort" in browser.message.text() and again.sort_button.isEnabled()
    again.reject()

    export = after_run_dialogs.export(browser)
    qtbot.addWidget(export)
    export.to.setText(str(tmp_path / "results.csv"))
    export.export()
    rows = list(csv.DictReader((tmp_path / "results.csv").read_text("utf-8-sig").splitlines()))
    assert len(rows) == len(lines) and "reviewed_label" in rows[0]
    refused = after_run_dialogs.export(browser)
    qtbot.addWidget(refused)
    refused.to.setText(str(tmp_path / "results.csv"))
    refused.export()
    assert "already exists" in refused.message.text() and refused.isVisible()


def test_detection_threshold_recounts_boxes_and_sets_the_export(qtbot, browser, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    boxes = [("cat", 0.9), ("dog", 0.6), ("cat", 0.3)]
    lines = [
        {
            "image": f"i{n}.png",
            "status": "ok",
            "error": None,
            "seconds": 0.1,
            "size": [64, 64],
            "detections": [
                {"label": label, "index": 1, "score": s, "box": [1, 1, 9, 9]} for label, s in boxes[n:]
            ],
        }
        for n in range(3)
    ]
    (output / "predictions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (output / "run.json").write_text(json.dumps({"task": "detection"}))
    _open(qtbot, browser, output, 3)
    view = after_run_dialogs.evaluate(browser)
    qtbot.addWidget(view)
    assert view.headline.text() == "Choose the COCO JSON file of the true boxes, then Measure."
    assert view.box_counts.text().startswith("At 0.00: 6 box(es) (cat 4, dog 2)")
    view.threshold.setValue(0.5)
    assert view.box_counts.text() == "At 0.50: 3 box(es) (dog 2, cat 1); 1 image(s) with none."
    dialog = after_run_dialogs.export(browser)
    qtbot.addWidget(dialog)
    assert dialog.min_score.value() == 0.5
    dialog.format.setCurrentIndex(dialog.format.findData("coco"))
    dialog.export()
    written = json.loads(Path(dialog.to.text()).read_text())
    assert len(written["annotations"]) == 3


def test_each_tasks_kind_says_what_evaluate_sort_and_export_ask_for(qtbot, browser, tmp_path):
    """Segmentation (many classes, no scored boxes): Evaluate asks for its folder of true masks, and
    neither Sort nor Export offers a box threshold; detection's side is the test above."""
    output = tmp_path / "out"
    output.mkdir()
    classes = [{"index": 0, "label": "background", "pixels": 50}, {"index": 1, "label": "road", "pixels": 14}]
    line = {"image": "a.png", "status": "ok", "error": None, "seconds": 0.1, "size": [8, 8]}
    line["classes"] = classes
    (output / "predictions.jsonl").write_text(json.dumps(line) + "\n")
    (output / "run.json").write_text(json.dumps({"task": "segmentation"}))
    _open(qtbot, browser, output, 1)
    view = after_run_dialogs.evaluate(browser)
    qtbot.addWidget(view)
    view.truth.setCurrentIndex(view.truth.findData("file"))
    view.measure()
    assert view.headline.text() == "Choose the folder of true masks, then Measure."
    assert not view.threshold.isVisibleTo(view) and not view.box_counts.isVisibleTo(view)
    dialog = after_run_dialogs.export(browser)
    qtbot.addWidget(dialog)
    assert not dialog.min_score.isVisibleTo(dialog)
