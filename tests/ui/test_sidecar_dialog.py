"""A model file without a sidecar, in the window: the dialog asks what is missing (prefilled with
ImageNet's choice), writes the sidecar beside the file or, when that folder is read-only, in the app's
data folder (where the loader finds it), and the run goes ahead. Plus the picker's other sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PySide6.QtCore import QCoreApplication, QStandardPaths

from batchlens.core.models import ModelInfo, load_model, sidecar_store
from batchlens.core.models.files import MODEL_FILE_SUFFIXES, sidecar_path_for
from batchlens.core.tasks import ADAPTERS
from batchlens.ui import model_picker
from batchlens.ui.model_picker import (
    MODEL_FILE_FILTER,
    OPEN_FILE,
    OPEN_HF_FOLDER,
    OPEN_TIMM,
    ROLE_INFO,
    ModelPicker,
)
from batchlens.ui.sidecar_dialog import SidecarDialog
from tests.core.modelkit import make_photos, read_jsonl
from tests.core.test_models_files import TinyClassifier

RUN_TIMEOUT_MS = 120_000
# torch 2.14 deprecates TorchScript; users' .pt files still load (issue 14 point 5 quiets it for users)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


def scripted(folder: Path, name: str = "net.pt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    torch.jit.save(torch.jit.script(TinyClassifier().eval()), str(path))
    return path


def test_defaults_write_the_imagenet_sidecar_beside_the_file(qtbot, tmp_path):
    model = scripted(tmp_path / "models")
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nfox\n")
    dialog = SidecarDialog(model)
    qtbot.addWidget(dialog)
    assert not dialog.arch.isVisibleTo(dialog)  # TorchScript knows its architecture
    assert "ImageNet" in dialog.explanation.text() and dialog.mean.text() == "0.485, 0.456, 0.406"
    assert dialog.interpolation.currentText() == "bilinear"
    dialog.labels.setText(str(labels))
    dialog.interpolation.setCurrentText("bicubic")
    dialog.accept()
    assert dialog.result() == SidecarDialog.DialogCode.Accepted
    assert dialog.saved == model.with_name("net.pt.json") == sidecar_path_for(model)
    data = json.loads(dialog.saved.read_text())
    assert data == {
        "task": "classification",
        "labels": ["cat", "dog", "fox"],
        "resize": 256,
        "crop": [224, 224],
        "interpolation": "bicubic",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    loaded = load_model(str(model), torch.device("cpu"))
    words = loaded.preprocessing.describe()
    assert "short side to 256 px" in words and "centre-crop 224x224" in words and "bicubic" in words
    assert loaded.adapter.labels == ["cat", "dog", "fox"]


def test_the_task_choices_are_each_tasks_own_words(qtbot, tmp_path):
    """The dialog offers every task an adapter exists for, in the words its kind gives (no list of
    task names of its own), and a choice saves that task's name."""
    dialog = SidecarDialog(scripted(tmp_path))
    qtbot.addWidget(dialog)
    choices = {dialog.task.itemData(i): dialog.task.itemText(i) for i in range(dialog.task.count())}
    assert set(choices) == set(ADAPTERS)
    segmentation = ADAPTERS["segmentation"].kind.title
    assert choices["segmentation"] == segmentation == "Segmentation: a class for every pixel"
    dialog.task.setCurrentIndex(dialog.task.findData("detection"))
    dialog.accept()
    assert json.loads(dialog.saved.read_text())["task"] == "detection"


def test_a_mistake_keeps_the_dialog_open_with_one_sentence(qtbot, tmp_path):
    weights = tmp_path / "w.safetensors"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, weights)
    dialog = SidecarDialog(weights)
    qtbot.addWidget(dialog)
    assert dialog.arch.isVisibleTo(dialog)
    dialog.accept()
    assert dialog.saved is None and "choose the architecture" in dialog.error.text()
    dialog.arch.setCurrentText("fasterrcnn_resnet50_fpn")
    assert dialog.task.currentData() == "detection"  # the architecture decides the task
    dialog.mean.setText("a, b")
    dialog.accept()
    assert dialog.saved is None and "numbers separated by commas" in dialog.error.text()


def test_read_only_folder_goes_to_the_app_data_folder(qtbot, tmp_path, monkeypatch):
    model = scripted(tmp_path / "shared")
    monkeypatch.delenv("BATCHLENS_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    # The data folder core computes without Qt is Qt's AppDataLocation for BatchLens.
    app = QCoreApplication.instance()
    names = app.organizationName(), app.applicationName()
    app.setOrganizationName("BatchLens")
    app.setApplicationName("BatchLens")
    try:
        qt_location = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    finally:
        app.setOrganizationName(names[0])
        app.setApplicationName(names[1])
    assert Path(qt_location) == sidecar_store.user_data_dir()
    # (the tests run as root, who may write anywhere: the folder's answer is given)
    monkeypatch.setattr(sidecar_store, "folder_is_writable", lambda folder: folder != model.parent)
    dialog = SidecarDialog(model)
    qtbot.addWidget(dialog)
    dialog.size_mode.setCurrentIndex(dialog.size_mode.findData("stretch"))
    dialog.height.setValue(32)
    dialog.width.setValue(48)
    dialog.accept()
    assert dialog.saved.parent == Path(qt_location) / "sidecars"
    assert not list(model.parent.glob("*.json")), "nothing is written in the read-only folder"
    assert sidecar_path_for(model) == dialog.saved
    loaded = load_model(str(model), torch.device("cpu"))
    assert "exactly 32x48" in loaded.preprocessing.describe()


def test_window_asks_then_runs(qtbot, window, tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHLENS_DATA_DIR", str(tmp_path / "data"))
    model = scripted(tmp_path / "models")
    make_photos(tmp_path / "in", sizes=[(40, 30), (50, 60)])
    asked = []

    def describe(parent, path):  # the real dialog, answered as a user would
        dialog = SidecarDialog(path, parent)
        dialog.size_mode.setCurrentIndex(dialog.size_mode.findData("stretch"))
        dialog.height.setValue(32)
        dialog.width.setValue(32)
        dialog.accept()
        asked.append(path)
        return dialog.saved

    window.model_sources.ask_sidecar = lambda parent, path: None  # first the user cancels
    window.model_sources._choose_file = lambda parent: ModelInfo(str(model), "from file", "file")
    window.model_picker.combo.setCurrentIndex(window.model_picker.row_of(OPEN_FILE))
    assert window.model_picker.current_model_id() != str(model), "cancelled: not added"

    window.model_sources.ask_sidecar = describe
    window.model_picker.combo.setCurrentIndex(window.model_picker.row_of(OPEN_FILE))
    assert window.model_picker.current_model_id() == str(model) and asked == [model]
    assert window.model_picker.current_model().task == "classification"
    window.form.input_edit.setText(str(tmp_path / "in"))
    window.form.output_edit.setText(str(tmp_path / "out"))
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        assert window.start_run() is True
    assert finished.args[0]["counts"]["ok"] == 2
    assert "exactly 32x32" in finished.args[0]["preprocessing"]["description"]
    assert len(read_jsonl(tmp_path / "out" / "predictions.jsonl")) == 2


def test_picker_filter_and_other_sources(qtbot, tmp_path):
    for suffix in MODEL_FILE_SUFFIXES:
        assert f"*{suffix}" in MODEL_FILE_FILTER
    folder = tmp_path / "hf-seg"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["SegformerForSemanticSegmentation"]}))
    picker = ModelPicker(models=[ModelInfo("demo-shapes", "classification", "built-in")])
    qtbot.addWidget(picker)
    texts = [picker.item_model.item(r).text() for r in range(picker.item_model.rowCount())]
    assert texts[-5:] == [
        "Add a model",
        "Hugging Face model by name…",
        "Open Hugging Face folder…",
        "timm model with a weights file…",
        "Open model file…",
    ]
    rows = {picker.item_model.item(r).data(ROLE_INFO): r for r in range(picker.item_model.rowCount())}

    from batchlens.core.models.hf_cache import hf_folder_info

    picker.folder_chooser = lambda parent: hf_folder_info(folder)
    with qtbot.waitSignal(picker.model_changed) as changed:
        picker.combo.setCurrentIndex(rows[OPEN_HF_FOLDER])
    assert changed.args == [str(folder)] and picker.current_model().task == "segmentation"
    assert picker.current_model().source == "huggingface"

    weights = tmp_path / "r.safetensors"
    picker.timm_chooser = lambda parent: (
        ModelInfo("timm:resnet18", "classification", "timm"),
        {"weights": str(weights)},
    )
    rows = {picker.item_model.item(r).data(ROLE_INFO): r for r in range(picker.item_model.rowCount())}
    with qtbot.waitSignal(picker.model_changed):
        picker.combo.setCurrentIndex(rows[OPEN_TIMM])
    assert picker.current_model_id() == "timm:resnet18"
    assert picker.current_options() == {"weights": str(weights)}
    assert picker.set_current_model(str(folder)) and picker.current_model().task == "segmentation"


def tiny_vit_folder(folder: Path) -> Path:
    """A seeded two-class ViT saved as a Hugging Face model folder (config, weights, image processor)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        num_labels=2,
        id2label={0: "plain", 1: "busy"},
        label2id={"plain": 0, "busy": 1},
    )
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_window_runs_a_hugging_face_folder(qtbot, window, tmp_path):
    """Picked with "Open Hugging Face folder…", run in the window like any model."""
    folder = tiny_vit_folder(tmp_path / "vit")
    make_photos(tmp_path / "in", sizes=[(40, 30), (50, 60)])
    picker = window.model_picker
    from batchlens.core.models.hf_cache import hf_folder_info

    picker.folder_chooser = lambda parent: hf_folder_info(folder)
    rows = {picker.item_model.item(r).data(ROLE_INFO): r for r in range(picker.item_model.rowCount())}
    picker.combo.setCurrentIndex(rows[OPEN_HF_FOLDER])
    assert picker.current_model_id() == str(folder) and picker.current_model().task == "classification"
    window.form.input_edit.setText(str(tmp_path / "in"))
    window.form.output_edit.setText(str(tmp_path / "out"))
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        assert window.start_run() is True
    assert finished.args[0]["counts"]["ok"] == 2
    labels = {r["top"][0]["label"] for r in read_jsonl(tmp_path / "out" / "predictions.jsonl")}
    assert labels <= {"plain", "busy"}


def test_a_hub_model_by_name_typed_or_pasted(qtbot, tmp_path, monkeypatch):
    """ "Hugging Face model by name…" through its real dialog (QInputDialog answered here): a model in
    the cache comes with its task, one that is not with "from the hub" (downloaded when the run
    starts), the page's address works as its name, and a text that is no name gets one sentence."""
    hub = tmp_path / "hub"
    snapshot = hub / "models--acme--tiny-vit" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"architectures": ["ViTForImageClassification"]}))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    answers, warnings = [], []
    monkeypatch.setattr(model_picker.QInputDialog, "getText", lambda *a, **k: (answers.pop(0), True))
    warn = lambda _parent, _title, text: warnings.append(text)  # noqa: E731
    monkeypatch.setattr(model_picker.QMessageBox, "warning", warn)
    picker = ModelPicker(models=[ModelInfo("demo-shapes", "classification", "built-in")])
    qtbot.addWidget(picker)

    def choose(text: str) -> None:
        answers.append(text)
        rows = {picker.item_model.item(r).data(ROLE_INFO): r for r in range(picker.item_model.rowCount())}
        picker.combo.setCurrentIndex(rows[model_picker.OPEN_HF_HUB])

    with qtbot.waitSignal(picker.model_changed) as changed:
        choose("https://huggingface.co/acme/tiny-vit/tree/main")
    assert changed.args == ["hf:acme/tiny-vit"] and picker.current_model().task == "classification"
    choose("  google/vit-base-patch16-224 ")
    assert picker.current_model_id() == "hf:google/vit-base-patch16-224"
    assert picker.current_model().task == "from the hub"
    for text in ("vit-base", "acme/../../etc", "acme/tiny vit"):
        choose(text)
        assert warnings.pop(0).startswith(f"{text!r} is not a Hugging Face model name")
        assert picker.current_model_id() == "hf:google/vit-base-patch16-224"  # the choice stays


def test_a_hub_model_typed_in_the_window_downloads_then_runs(qtbot, window, tmp_path, monkeypatch, fake_hub):
    """The whole way a user goes: "Hugging Face model by name…", the name typed, Run; the download
    dialog fetches it through huggingface_hub's own code (from a hub on this machine), the run starts
    by itself when it is there, and a second Run needs no download."""
    repo = tiny_vit_folder(tmp_path / "repo")
    fake_hub.add_folder("acme/tiny-vit", repo)
    monkeypatch.setattr(model_picker.QInputDialog, "getText", lambda *a, **k: ("acme/tiny-vit", True))
    picker = window.model_picker
    with qtbot.waitSignal(picker.model_changed):
        picker.combo.setCurrentIndex(picker.row_of(model_picker.OPEN_HF_HUB))
    assert picker.current_model_id() == "hf:acme/tiny-vit" and picker.current_model().task == "from the hub"
    make_photos(tmp_path / "in", sizes=[(40, 30), (50, 60), (64, 64)])
    window.form.input_edit.setText(str(tmp_path / "in"))
    window.form.output_edit.setText(str(tmp_path / "out"))

    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        assert window.start_run() is False  # the download goes first, then the run starts itself
        dialog = window.model_sources.download_dialog
        assert dialog is not None and "hf:acme/tiny-vit" in dialog.labelText()
    assert finished.args[0]["counts"]["ok"] == 3 and not dialog.isVisible()
    assert picker.current_model().task == "classification"  # read from the downloaded config.json
    assert {r["top"][0]["label"] for r in read_jsonl(tmp_path / "out" / "predictions.jsonl")} <= {
        "plain",
        "busy",
    }
    fetched = sorted(
        r.rsplit("/", 1)[1] for r in fake_hub.requests if r.startswith("GET /acme/tiny-vit/resolve/")
    )
    assert fetched == ["config.json", "model.safetensors", "preprocessor_config.json"]

    fake_hub.requests.clear()
    window.form.output_edit.setText(str(tmp_path / "again"))
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        assert window.start_run() is True  # in the cache now: no download dialog
    assert finished.args[0]["counts"]["ok"] == 3 and fake_hub.requests == []


def test_a_hub_model_without_safetensors_is_downloaded_once_then_explained(qtbot, window, tmp_path, fake_hub):
    """All of its files fetched, still no weights BatchLens loads (only a pickled pytorch_model.bin on
    the hub): the window downloads once, and the run says why, instead of downloading again and again."""
    repo = tiny_vit_folder(tmp_path / "repo")
    (repo / "model.safetensors").rename(repo / "pytorch_model.bin")  # (its bytes do not matter here)
    fake_hub.add_folder("acme/pickled-vit", repo)
    assert window.model_picker.set_current_model("hf:acme/pickled-vit")
    make_photos(tmp_path / "in", sizes=[(40, 30)])
    window.form.input_edit.setText(str(tmp_path / "in"))
    window.form.output_edit.setText(str(tmp_path / "out"))
    with qtbot.waitSignal(window.run_finished, timeout=RUN_TIMEOUT_MS):
        assert window.start_run() is False  # the download first; the run starts by itself after it
    qtbot.waitUntil(lambda: "no model.safetensors" in window.controls.message.text(), timeout=RUN_TIMEOUT_MS)
    # The dialog's download, and the run's own look for what is missing: twice, not for ever.
    looked = [r for r in fake_hub.requests if "/revision/" in r]
    assert looked == ["GET /api/models/acme/pickled-vit/revision/main"] * 2
    assert not any(r.endswith("pytorch_model.bin") for r in fake_hub.requests)


def test_window_says_plainly_when_a_hub_model_cannot_be_downloaded(qtbot, window, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    make_photos(tmp_path / "in", sizes=[(40, 30)])
    assert window.model_picker.set_current_model("hf:acme/not-here")
    window.form.input_edit.setText(str(tmp_path / "in"))
    window.form.output_edit.setText(str(tmp_path / "out"))
    assert window.start_run() is False  # the download dialog goes first
    qtbot.waitUntil(lambda: "HF_HUB_OFFLINE is set" in window.controls.message.text(), timeout=RUN_TIMEOUT_MS)
    assert not window.is_running() and not (tmp_path / "out" / "predictions.jsonl").exists()
    # What to do instead, in the window's words, with a command the installed huggingface_hub has.
    text = window.controls.message.text()
    assert "hf download acme/not-here --local-dir not-here" in text
    assert "open it with Open Hugging Face folder… in the model list" in text
    window.model_picker.row_of(OPEN_HF_FOLDER)  # the entry the message names is there


def test_the_download_advice_names_a_command_the_installed_hub_library_has():
    """The `hf download` the window advises (above) is a console script of huggingface_hub."""
    pytest.importorskip("huggingface_hub", reason='needs the hf extra: pip install -e ".[hf]"')
    from importlib.metadata import entry_points

    hf_command = [e for e in entry_points(group="console_scripts") if e.name == "hf"]
    assert hf_command and hf_command[0].value.startswith("huggingface_hub"), "the advice names a real command"


def test_describe_edits_the_sidecar_in_use_and_keeps_what_it_does_not_show(qtbot, window, tmp_path):
    model = scripted(tmp_path / "models")
    (tmp_path / "models" / "birds.txt").write_text("robin\nwren\njay\n")
    current = tmp_path / "models" / "net.json"
    current.write_text(
        json.dumps(
            {
                "task": "classification",
                "labels": "birds.txt",
                "input_size": 224,
                "crop_pct": 0.875,
                "interpolation": "bicubic",
                "mean": [123.675, 116.28, 103.53],
                "std": [58.395, 57.12, 57.375],
                "mean_std_units": "0-255",
                "description": "Garden birds",
            }
        )
    )
    sources = window.model_sources
    assert window.model_picker.set_current_model(str(model))
    assert sources.describe_button.isVisibleTo(window)
    shown = []

    def edit(parent, path):
        dialog = SidecarDialog(path, parent, sidecar_path_for(path))
        shown.append(
            (
                dialog.size_mode.currentData(),
                dialog.resize_to.value(),
                dialog.crop.value(),
                dialog.interpolation.currentText(),
                dialog.mean.text(),
            )
        )
        dialog.crop.setValue(200)
        dialog.accept()
        return dialog.saved

    sources.ask_sidecar = edit
    assert sources.describe_current() == current
    assert shown == [("crop", 256, 224, "bicubic", "0.485, 0.456, 0.406")]  # crop_pct and 0-255 understood
    data = json.loads(current.read_text())
    assert data["labels"] == "birds.txt" and data["description"] == "Garden birds"
    assert (data["resize"], data["crop"], data["interpolation"]) == (256, [200, 200], "bicubic")
    assert "crop_pct" not in data and "mean_std_units" not in data and data["mean"] == [0.485, 0.456, 0.406]
    assert not (tmp_path / "models" / "net.pt.json").exists(), "edited in place, no second sidecar"
    loaded = load_model(str(model), torch.device("cpu"))
    assert (
        loaded.adapter.labels == ["robin", "wren", "jay"]
        and "centre-crop 200x200" in loaded.preprocessing.describe()
    )
    window.model_picker.set_current_model("demo-shapes")
    assert not sources.describe_button.isVisibleTo(window)
