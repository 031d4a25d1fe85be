"""The window's part of reliability: the "Fall back to CPU" checkbox, the question about an output
folder that holds a run (another folder, resume, overwrite), and memory notes (out-of-memory
recovery, leaks, an outsized image) marked on the plot."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from batchlens.core.run.config import RunConfig
from batchlens.core.run.runner import Runner
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


def answer(button_text: str, seen: list[dict]) -> None:
    """As click_in_dialog, remembering the text, the default button and which buttons are enabled."""

    def attempt() -> None:
        box = QApplication.activeModalWidget()
        if not isinstance(box, QMessageBox):
            QTimer.singleShot(20, attempt)
            return
        buttons = {b.text(): b.isEnabled() for b in box.buttons()}
        seen.append({"text": box.text(), "default": box.defaultButton().text(), "enabled": buttons})
        next(b for b in box.buttons() if b.text() == button_text).click()

    QTimer.singleShot(0, attempt)


def test_resume_offer_for_an_unfinished_run(qtbot, window, tmp_path):
    folder, out = tmp_path / "shapes", tmp_path / "out"
    make_shapes_folder(folder, 5)
    killed_run(folder, out, keep=2)
    window.ask_questions = True
    window.prefill(model="demo-shapes", input_dir=folder, output_dir=out, device="cpu")
    seen: list[dict] = []
    answer("Resume", seen)
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        qtbot.mouseClick(window.controls.run_button, Qt.MouseButton.LeftButton)
    assert len(seen) == 1
    assert f"already holds a run of demo-shapes over {folder.resolve()}, started " in seen[0]["text"]
    assert "2 image(s) done, 0 failed, not finished" in seen[0]["text"]
    assert seen[0]["default"] == "Another folder"
    summary = finished.args[0]
    assert summary["counts"]["already_done"] == 2 and summary["counts"]["ok"] == 3
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text("utf-8").splitlines()]
    assert [r["image"] for r in rows] == [f"shape_{i:04d}.png" for i in range(5)]  # one line each


def test_another_folder_overwrite_and_cancel_in_the_offer(qtbot, window, tmp_path):
    folder, out = tmp_path / "shapes", tmp_path / "out"
    make_shapes_folder(folder, 3)
    killed_run(folder, out, keep=1)
    before = (out / "predictions.jsonl").read_bytes()
    window.ask_questions = True
    seen: list[dict] = []
    answer("Overwrite", seen)
    assert window.choose_for_existing_run(out, "demo-shapes", folder) == ("overwrite", out)
    answer("Cancel", seen)
    assert window.choose_for_existing_run(out, "demo-shapes", folder) is None
    answer("Another folder", seen)
    assert window.choose_for_existing_run(out, "demo-shapes", folder) == ("plain", tmp_path / "out-2")
    assert window.form.output_text() == str(tmp_path / "out-2")
    assert "writes the results to " + str(tmp_path / "out-2") in seen[-1]["text"]
    window.prefill(model="demo-shapes", input_dir=folder, output_dir=out, device="cpu")
    answer("Cancel", seen)
    assert window.build_config() is None and not window.is_running()  # nothing started, nothing lost
    assert len(seen) == 4 and (out / "predictions.jsonl").read_bytes() == before


def test_resume_of_another_models_run_is_not_offered(qtbot, window, tmp_path):
    folder, out = tmp_path / "shapes", tmp_path / "out"
    make_shapes_folder(folder, 3)
    killed_run(folder, out, keep=1)
    window.ask_questions = True
    seen: list[dict] = []
    answer("Cancel", seen)
    assert window.choose_for_existing_run(out, "demo-denoise", folder) is None
    assert seen[0]["enabled"]["Resume"] is False and seen[0]["enabled"]["Overwrite"] is True
    assert "Resume is not possible: " in seen[0]["text"]
    assert "whose model differs from this run's (demo-shapes there, demo-denoise now)" in seen[0]["text"]
    window.ask_questions = False  # --start: never mixes, never deletes: a new folder beside it
    assert window.choose_for_existing_run(out, "demo-denoise", folder) == ("plain", tmp_path / "out-2")
    assert window.choose_for_existing_run(out, "demo-shapes", folder) == ("resume", out)


def test_memory_notes_are_marked_on_the_plot(qtbot, window, tmp_path, monkeypatch):
    from batchlens.core.run import runner
    from tests.core.test_oom import NearlyFullRamProbe

    folder = tmp_path / "shapes"
    make_shapes_folder(folder, 3)
    Image.new("RGB", (900, 700), (20, 20, 200)).save(folder / "huge.png")  # pre-flight warning...
    monkeypatch.setattr(runner, "probe_for", lambda device: NearlyFullRamProbe(16 << 20))  # ...RAM short
    window.prefill(model="demo-shapes", input_dir=folder, output_dir=tmp_path / "out", device="cpu")
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS):
        qtbot.mouseClick(window.controls.run_button, Qt.MouseButton.LeftButton)
    kinds = [m.kind for m in window.memory_plot.markers]
    assert kinds == ["run_start", "outsized_image", "run_end"]
    outsized = window.memory_plot.markers[1]
    assert "huge.png (900×700" in outsized.text
