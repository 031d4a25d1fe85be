"""The model picker on its own: grouping by source, tasks shown, "Open model file…"."""

from __future__ import annotations

from batchlens.core.models import ModelInfo, list_models
from batchlens.ui.model_picker import ACTIONS_TITLE, OPEN_FILE, ROLE_INFO, ModelPicker
from batchlens.ui.wording import task_words


def rows(picker: ModelPicker) -> list[str]:
    return [picker.item_model.item(r).text().strip() for r in range(picker.item_model.rowCount())]


def test_lists_every_model_grouped_by_source_with_its_task(qtbot):
    picker = ModelPicker()
    qtbot.addWidget(picker)
    texts = rows(picker)
    assert texts[0] == "Built-in demo models"
    assert not picker.item_model.item(0).isEnabled()  # a group title cannot be chosen
    for info in list_models():
        note = info.download_note()  # "needs a 97.8 MiB download" for weights not downloaded yet
        assert f"{info.id}  —  {task_words(info.task)}" + (f"  ({note})" if note else "") in texts
    assert texts[-1] != "Open model file…", "the catalogue comes last, after the entries that add a model"
    assert picker.current_model_id() == list_models()[0].id
    assert picker.current_model().task in picker.task_label.text()


def test_choosing_emits_the_id_and_unknown_ids_are_refused(qtbot):
    picker = ModelPicker()
    qtbot.addWidget(picker)
    with qtbot.waitSignal(picker.model_changed) as changed:
        assert picker.set_current_model("demo-denoise")
    assert changed.args == ["demo-denoise"]
    assert "image to image" in picker.task_label.text()  # the window's words, not the code's
    assert not picker.set_current_model("no-such-model")
    assert picker.current_model_id() == "demo-denoise"


def test_open_model_file_uses_the_chooser_and_adds_a_file_group(qtbot, tmp_path):
    weights = tmp_path / "mine.pt"
    weights.write_bytes(b"x")
    picker = ModelPicker()
    qtbot.addWidget(picker)
    picker.set_current_model("demo-shapes")
    answers = [None, ModelInfo(id=str(weights), task="classification", source="file")]
    picker.file_chooser = lambda parent: answers.pop(0)
    opener = picker.row_of(OPEN_FILE)

    picker.combo.setCurrentIndex(opener)  # the user cancels the file dialog
    assert picker.current_model_id() == "demo-shapes"

    with qtbot.waitSignal(picker.model_changed) as changed:
        picker.combo.setCurrentIndex(opener)
    assert changed.args == [str(weights)]
    assert picker.current_model_id() == str(weights)
    assert "Model files" in rows(picker)
    assert picker.item_model.item(picker.combo.currentIndex()).data(ROLE_INFO).source == "file"
    texts = rows(picker)
    assert texts.index("Model files") < texts.index(ACTIONS_TITLE), "the user's own models come first"


def test_adding_a_model_is_in_view_before_the_long_catalogue(qtbot):
    """A newcomer opens the list and sees "Add a model" without scrolling past ~80 catalogue rows."""
    picker = ModelPicker()
    qtbot.addWidget(picker)
    texts = rows(picker)
    catalogue = texts.index("torchvision catalogue")
    assert texts[catalogue - 5 : catalogue] == [
        ACTIONS_TITLE,
        "Hugging Face model by name…",
        "Open Hugging Face folder…",
        "timm model with a weights file…",
        "Open model file…",
    ]
    assert texts.index("Open model file…") < picker.combo.maxVisibleItems(), "visible when the list opens"
    assert len(texts) - catalogue > 20, "the catalogue really is long (else this test proves little)"
    assert not picker.item_model.item(texts.index(ACTIONS_TITLE)).isEnabled()


def test_other_sources_and_their_options_plug_in(qtbot):
    picker = ModelPicker(models=[ModelInfo("demo-shapes", "classification", "built-in")])
    qtbot.addWidget(picker)
    picker.add_model(ModelInfo("resnet18", "classification", "torchvision"), select=True)
    picker.options["resnet18"] = {"weights": "DEFAULT"}
    assert "torchvision catalogue" in rows(picker)
    assert picker.current_model_id() == "resnet18"
    assert picker.current_options() == {"weights": "DEFAULT"}


def test_a_model_file_shows_the_task_its_sidecar_names(qtbot, tmp_path):
    import json

    detector = tmp_path / "boxes.pt"
    detector.write_bytes(b"x")
    (tmp_path / "boxes.json").write_text(json.dumps({"task": "detection"}))
    by_arch = tmp_path / "birds.safetensors"
    by_arch.write_bytes(b"x")
    (tmp_path / "birds.safetensors.json").write_text(json.dumps({"arch": "deeplabv3_resnet50"}))
    bare = tmp_path / "bare.pt"
    bare.write_bytes(b"x")
    picker = ModelPicker()
    qtbot.addWidget(picker)
    for path, task in ((detector, "detection"), (by_arch, "segmentation"), (bare, "from file")):
        assert picker.set_current_model(str(path))
        assert picker.current_model().task == task and f"<b>{task}</b>" in picker.task_label.text()
        assert picker.current_model_id() == str(path)
