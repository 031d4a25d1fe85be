"""The window's part of issue 24 (the guarded output folder): a run whose predictions.jsonl is deleted
mid-run stops, and the window shows the engine's one sentence, never "Finished"."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt

from tests.core.test_hostile_output_folder import attack_after_second_image
from tests.helpers import make_shapes_folder


def test_the_window_shows_the_sentence_when_predictions_jsonl_is_deleted_mid_run(
    qtbot, window, tmp_path: Path, monkeypatch
):
    folder = tmp_path / "shapes"
    make_shapes_folder(folder, 6, size=40)
    out = tmp_path / "out"
    attack_after_second_image(monkeypatch, lambda: (out / "predictions.jsonl").unlink())
    window.prefill(model="demo-shapes", input_dir=folder, output_dir=out, device="cpu")

    with qtbot.waitSignal(window.run_finished, timeout=120_000) as finished:
        qtbot.mouseClick(window.controls.run_button, Qt.MouseButton.LeftButton)

    assert finished.args == [None]  # no summary: the run is not reported finished
    assert window.last_error is not None
    assert window.last_error.startswith(f"{out / 'predictions.jsonl'} was deleted during the run")
    shown = window.statusBar().currentMessage()  # in the window's words: "press Run again and choose Resume"
    assert shown.startswith(f"{out / 'predictions.jsonl'} was deleted during the run") and "Resume" in shown
    assert not (out / "summary.json").exists()


def test_overwrite_is_not_offered_for_a_folder_without_run_json(qtbot, window, tmp_path: Path):
    from batchlens.core.run.config import RunConfig
    from batchlens.core.run.runner import Runner
    from tests.ui.test_reliability_ui import answer

    folder, out = tmp_path / "shapes", tmp_path / "out"
    make_shapes_folder(folder, 3, size=40)
    list(Runner(RunConfig("demo-shapes", folder, out, device="cpu")).events())
    (out / "run.json").unlink()  # as an older BatchLens, or a person, left it
    window.ask_questions = True
    seen: list[dict] = []
    answer("Cancel", seen)
    assert window.choose_for_existing_run(out, "demo-shapes", folder) is None
    assert seen[0]["enabled"]["Overwrite"] is False and seen[0]["enabled"]["Resume"] is True
    assert f"Overwrite is not possible: {out} holds no run.json" in seen[0]["text"]
