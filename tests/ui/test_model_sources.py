"""The window's model sources: torchvision weights download with a progress dialog (from a local server
standing in for download.pytorch.org) then the run; the offline message; "Use weights file…"; and the
confirmation a full-pickle model file needs before it is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PySide6.QtWidgets import QMessageBox

from batchlens.core.models.catalogue import weights_for
from batchlens.ui.model_sources import TrustPickleDialog
from tests.core.modelkit import make_photos, random_model, save_state_dict
from tests.core.test_models_catalogue import ARCH, closed_port_url, hub, serve_weights, server  # noqa: F401
from tests.core.test_models_files import TinyClassifier

RUN_TIMEOUT_MS = 120_000


def point_at(window, model: str, folder: Path, out: Path) -> None:
    assert window.model_picker.set_current_model(model)
    window.form.input_edit.setText(str(folder))
    window.form.output_edit.setText(str(out))


def test_download_dialog_then_run(qtbot, window, hub, server, monkeypatch, tmp_path):  # noqa: F811
    root, url = server
    served = serve_weights(random_model(ARCH), root, url, monkeypatch)
    make_photos(tmp_path / "in", sizes=[(40, 30)])
    point_at(window, ARCH, tmp_path / "in", tmp_path / "out")
    assert window.model_sources.weights_button.isVisible()

    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        assert window.start_run() is False, "the download comes first"
        dialog = window.model_sources.download_dialog
        assert dialog is not None and "Downloading the weights of mobilenet_v3_small" in dialog.labelText()
    assert (hub / served.name).read_bytes() == served.read_bytes()
    assert dialog.value() == dialog.maximum() == 1000 and not dialog.isVisible()
    assert finished.args[0]["counts"]["ok"] == 1 and finished.args[0]["model"] == ARCH


def test_offline_download_shows_the_message(qtbot, window, hub, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setattr(weights_for(ARCH).value, "url", closed_port_url(f"{ARCH}-12345678.pth"))
    make_photos(tmp_path / "in", sizes=[(40, 30)])
    point_at(window, ARCH, tmp_path / "in", tmp_path / "out")
    assert window.start_run() is False
    qtbot.waitUntil(lambda: "offline" in window.controls.message.text(), timeout=RUN_TIMEOUT_MS)
    # The window names its own control, not the command line's --weights FILE.
    text = window.controls.message.text()
    assert "Weights button beside the model" in text and "--weights" not in text and not window.is_running()
    button = window.model_sources.weights_button  # named as it reads ("Weights: torchvision")
    assert button.isVisible() and button.text().split(":")[0] == "Weights"


def test_use_weights_file_needs_no_download(qtbot, window, hub, tmp_path):  # noqa: F811
    weights = save_state_dict(random_model(ARCH), tmp_path / "mine.pth")
    make_photos(tmp_path / "in", sizes=[(40, 30)])
    point_at(window, ARCH, tmp_path / "in", tmp_path / "out")
    sources = window.model_sources
    sources.weights_chooser = lambda parent: str(weights)
    sources.use_file_action.trigger()
    assert window.model_picker.current_options()["weights"] == str(weights)
    assert sources.weights_button.text() == "Weights: mine.pth"

    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        assert window.start_run() is True
    assert finished.args[0]["model"] == f"{ARCH} (mine.pth)" and finished.args[0]["counts"]["ok"] == 1
    assert not hub.exists(), "nothing was downloaded"

    sources.use_default_action.trigger()
    assert "weights" not in window.model_picker.current_options()
    assert sources.weights_button.text() == "Weights: torchvision"
    window.model_picker.set_current_model("demo-shapes")
    assert not sources.weights_button.isVisible(), "only torchvision architectures take a weights file"


def test_trust_dialog_defaults_to_cancel_and_says_why(qtbot, tmp_path):
    dialog = TrustPickleDialog(tmp_path / "model.pth", ["builtins.exec", "os.system"])
    qtbot.addWidget(dialog)
    assert "loading it can run code" in dialog.text()
    assert "builtins.exec, os.system" in dialog.informativeText()
    assert "can run any code" in dialog.informativeText()
    assert dialog.defaultButton() is dialog.cancel_button and dialog.escapeButton() is dialog.cancel_button
    dialog.open()
    dialog.cancel_button.click()
    assert not dialog.trusted()
    dialog.open()
    dialog.load_button.click()
    assert dialog.trusted() and dialog.result() != QMessageBox.StandardButton.Cancel


def test_pickled_model_runs_only_after_confirmation(qtbot, window, tmp_path):
    model_file = tmp_path / "models" / "whole.pth"
    model_file.parent.mkdir()
    torch.save(TinyClassifier().eval(), model_file)
    (model_file.parent / "whole.json").write_text(
        json.dumps({"task": "classification", "input_size": [32, 32]})
    )
    make_photos(tmp_path / "in", sizes=[(40, 30)])
    point_at(window, str(model_file), tmp_path / "in", tmp_path / "out")
    window.ask_questions = True  # the fresh folders raise no other question
    asked = []
    sources = window.model_sources

    sources.ask_trust = lambda parent, path, objects: asked.append((path, objects)) or False
    assert window.start_run() is False and not window.is_running()
    assert asked[0][0] == model_file and "tests.core.test_models_files.TinyClassifier" in asked[0][1]
    assert "was not loaded" in window.controls.message.text()
    assert not (tmp_path / "out" / "predictions.jsonl").exists()

    sources.ask_trust = lambda parent, path, objects: asked.append((path, objects)) or True
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        assert window.start_run() is True
    assert finished.args[0]["counts"]["ok"] == 1 and len(asked) == 2
    assert window.model_picker.current_options()["trust_pickle"] is True, "asked once per file and session"


def test_detection_and_segmentation_files_run_in_the_window(qtbot, window, tmp_path):
    """Model files opened in the window: the result pane shows the adapter's preview (boxes, overlay)."""
    from tests.core.test_tasks_detection import BlockFinder, make_block_images

    detector = tmp_path / "blocks.pt"
    torch.jit.save(torch.jit.script(BlockFinder()), str(detector))
    sidecar = {"task": "detection", "input_size": [100, 100], "labels": ["__background__", "block", "decoy"]}
    detector.with_suffix(".json").write_text(json.dumps(sidecar))
    segmenter = tmp_path / "halves.pt"
    torch.jit.save(torch.jit.script(torch.nn.Conv2d(3, 2, 1)), str(segmenter))
    segmenter.with_suffix(".json").write_text(json.dumps({"task": "segmentation"}))
    make_block_images(tmp_path / "in")

    for model, output_file in ((detector, "detections.coco.json"), (segmenter, "mask_classes.json")):
        out = tmp_path / f"out-{model.stem}"
        point_at(window, str(model), tmp_path / "in", out)
        with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
            assert window.start_run() is True
        assert finished.args[0]["counts"]["ok"] == 2 and (out / output_file).is_file()
        qtbot.waitUntil(lambda: window.previews.shown is not None)
        assert window.previews.output_view.has_image(), "the preview of the result is shown"
