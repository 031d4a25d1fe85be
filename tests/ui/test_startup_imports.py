"""The window opens, and `batchlens models` and the command line's mistakes answer, before PyTorch
loads: none of them imports torch, torchvision, transformers, timm or triton (issue #25: a window in
3 s). Each check runs in a fresh Python, where nothing was imported before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PySide6.QtCore import Qt

from batchlens.core.resources import sample_folder
from batchlens.ui.engine import LOADING, Engine
from batchlens.ui.main_window import MainWindow
from batchlens.ui.settings import Settings

APP = str(Path(__file__).resolve().parents[2] / "app")
HEAVY = ("torch", "torchvision", "transformers", "timm", "triton", "torch._dynamo")
REPORT = f"import json, sys; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"


def fresh_python(code: str, tmp_path: Path) -> tuple[list[str], str]:
    """Run `code` in a new interpreter; (the heavy modules it imported, its other output)."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([APP, os.environ.get("PYTHONPATH", "")]),
        QT_QPA_PLATFORM="offscreen",
        HOME=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        TORCH_HOME=str(tmp_path / "torch"),
    )
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{REPORT}"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    *lines, last = done.stdout.strip().splitlines()
    return json.loads(last), "\n".join(lines) + done.stderr


def test_the_window_opens_with_its_model_list_without_torch(tmp_path):
    code = """
import sys
from batchlens.ui.qt_app import create_app
app = create_app()
from batchlens.ui.engine import Engine
from batchlens.ui.main_window import MainWindow
window = MainWindow(engine=Engine())
window.show()
app.processEvents()
picker = window.model_picker
texts = [picker.item_model.item(row).text() for row in range(picker.item_model.rowCount())]
print(next(t for t in texts if t.startswith("resnet50 ")))
print("pyqtgraph before the paint:", "pyqtgraph" in sys.modules)
window.build_memory_plot()  # what app.py does after the first paint, before the engine loads
print("plot:", window.memory_plot.parent() is not None, window.memory_plot.probe)
"""
    heavy, out = fresh_python(code, tmp_path)
    assert heavy == [], f"the window imported {heavy} before its first paint"
    assert "resnet50  —  classification  (needs a 97.8 MiB download)" in out
    assert "pyqtgraph before the paint: False" in out  # the memory plot's 1-2 s come after it
    assert "plot: True None" in out  # in its panel, waiting for the devices (auto) to be known


def test_batchlens_models_and_the_command_lines_mistakes_need_no_torch(tmp_path):
    missing, output = tmp_path / "no such folder", tmp_path / "o"
    code = f"""
from batchlens.cli import main
assert main(["models", "resnet50"]) == 0
assert main(["run", "--model", "demo-shapes", "--input", {str(missing)!r}, "--output", {str(output)!r}]) == 2
assert main(["run", "--model", "resnet5", "--input", {str(tmp_path)!r}, "--output", {str(output)!r}]) == 2
"""
    heavy, out = fresh_python(code, tmp_path)
    assert heavy == []
    assert "resnet50" in out and "(needs a 97.8 MiB download)" in out
    assert f"The input folder {missing} does not exist." in out
    assert "Unknown model 'resnet5'" in out
    assert not (tmp_path / "o").exists()  # nothing is written for a run that cannot start


def test_run_waits_for_the_engine_with_a_note_then_starts(qtbot, tmp_path):
    engine = Engine()  # not loaded yet, as when the window has just opened
    window = MainWindow(Settings(tmp_path / "settings.ini"), engine=engine)
    window.ask_questions = False
    qtbot.addWidget(window)
    window.show()
    output = tmp_path / "out"
    window.prefill(
        model="demo-shapes", input_dir=sample_folder("demo-shapes"), output_dir=output, device="cpu"
    )
    qtbot.waitUntil(lambda: window.run_blocker() is None, timeout=10_000)
    qtbot.mouseClick(window.controls.run_button, Qt.MouseButton.LeftButton)
    assert not window.is_running()
    assert LOADING in window.controls.message.text()
    with qtbot.waitSignal(window.run_finished, timeout=120_000) as finished:
        engine.load_in_background()  # its `ready` comes to the GUI thread and starts the run
    assert finished.args[0]["counts"]["ok"] > 0
    assert window.device_name() == "cpu"
    window.close()


def test_a_gpu_saved_before_the_devices_are_known_is_asked_for_once_they_are(qtbot, tmp_path):
    engine = Engine()
    window = MainWindow(Settings(tmp_path / "settings.ini"), engine=engine)
    qtbot.addWidget(window)
    window.prefill(device="cuda:7")
    assert window.device_name() == "auto"  # the list holds auto and cpu until torch has loaded
    with qtbot.waitSignal(engine.ready, timeout=60_000):
        engine.load_in_background()
    assert window.device_name() == "auto"
    assert "Device 'cuda:7' is not available here" in window.controls.message.text()
    window.close()


def test_an_engine_that_cannot_load_is_one_sentence_not_a_crash(qtbot, tmp_path, monkeypatch):
    monkeypatch.setattr("batchlens.ui.engine.ENGINE_MODULES", ("batchlens_no_such_module",))
    engine = Engine()
    window = MainWindow(Settings(tmp_path / "settings.ini"), engine=engine)
    qtbot.addWidget(window)
    with qtbot.waitSignal(engine.failed, timeout=10_000):
        engine.load_in_background()
    assert "PyTorch could not be loaded" in window.controls.message.text()
    assert window.start_run() is False
    window.close()
