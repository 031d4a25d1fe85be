"""The window's part of reliability: the "Fall back to CPU" checkbox, the Resume offer for an unfinished
run, and memory notes (out-of-memory recovery, leaks, an outsized image) marked on the plot."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from batchlens.core.config import RunConfig
from batchlens.core.runner import Runner
from tests.helpers import make_shapes_folder

RUN_TIMEOUT_MS = 120_000


def click_in_dialog(button_text: str, seen: list[str]) -> None:
    """Once a modal message box is up, remember its text and press the button called `button_text`."""

    def attempt() -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(20, attempt)
            return
        seen.append(box.text())
        next(b for b in box.buttons() if b.text() == button_text).click()

    QTimer.singleShot(0, attempt)


def killed_run(folder: Path, out: Path, keep: int) -> None:
    """An output folder as a killed run leaves it: `keep` finished lines, half a line, no summary."""
    list(Runner(RunConfig("demo-shapes", folder, out, device="cpu")).events())
    lines = (out / "predictions.jsonl").read_text("utf-8").splitlines(keepends=True)
    (out / "predictions.jsonl").write_text("".join(lines[:keep]) + lines[keep][:20], "utf-8")
    (out / "summary.json").unlink()


def test_fall_back_to_cpu_checkbox_reaches_the_run(window):
    box = window.form.cpu_fallback_check
    assert box.text() == "Fall back to CPU" and "CPU" in box.toolTip() and not box.isChecked()
    window.prefill(model="demo-shapes", input_dir=Path("."), output_dir=Path("/tmp/unused"), device="cpu")
    assert window.build_config().cpu_fallback is False
    box.click()
    assert window.build_config().cpu_fallback is True


def test_resume_offer_for_an_unfinished_run(qtbot, window, tmp_path):
    folder, out = tmp_path / "shapes", tmp_path / "out"
    make_shapes_folder(folder, 5)
    killed_run(folder, out, keep=2)
    window.ask_questions = True
    window.prefill(model="demo-shapes", input_dir=folder, output_dir=out, device="cpu")
    seen: list[str] = []
    click_in_dialog("Resume", seen)
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        qtbot.mouseClick(window.controls.run_button, Qt.MouseButton.LeftButton)
    assert len(seen) == 1 and "did not finish: 2 image(s) done, 0 failed" in seen[0]
    summary = finished.args[0]
    assert summary["counts"]["already_done"] == 2 and summary["counts"]["ok"] == 3
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text("utf-8").splitlines()]
    assert [r["image"] for r in rows] == [f"shape_{i:04d}.png" for i in range(5)]  # one line each
    assert window.offer_resume(out) is False  # finished now: nothing to offer, no dialog


def test_start_over_and_cancel_in_the_resume_offer(qtbot, window, tmp_path):
    folder, out = tmp_path / "shapes", tmp_path / "out"
    make_shapes_folder(folder, 3)
    killed_run(folder, out, keep=1)
    window.ask_questions = True
    seen: list[str] = []
    click_in_dialog("Start over", seen)
    assert window.offer_resume(out) is False
    click_in_dialog("Cancel", seen)
    assert window.offer_resume(out) is None
    window.prefill(model="demo-shapes", input_dir=folder, output_dir=out, device="cpu")
    click_in_dialog("Cancel", seen)
    assert window.build_config() is None and not window.is_running()  # nothing started, nothing lost
    assert len(seen) == 3 and (out / "predictions.jsonl").read_text("utf-8").count("\n") == 1


def test_memory_notes_are_marked_on_the_plot(qtbot, window, tmp_path):
    folder = tmp_path / "shapes"
    make_shapes_folder(folder, 3)
    Image.new("RGB", (900, 700), (20, 20, 200)).save(folder / "huge.png")  # pre-flight warning
    window.prefill(model="demo-shapes", input_dir=folder, output_dir=tmp_path / "out", device="cpu")
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS):
        qtbot.mouseClick(window.controls.run_button, Qt.MouseButton.LeftButton)
    kinds = [m.kind for m in window.memory_plot.markers]
    assert kinds == ["run_start", "outsized_image", "run_end"]
    outsized = window.memory_plot.markers[1]
    assert "huge.png (900×700" in outsized.text
