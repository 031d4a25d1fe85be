"""The model picker: every model from `list_models()` (the Hugging Face cache under "On this
computer"), grouped by where it comes from, plus "Hugging Face model by name…", "Open Hugging Face
folder…", "timm model…" and "Open model file…" under "Add a model". The user's own models and those
entries come before the long torchvision catalogue, so a newcomer sees them without scrolling.

Built to be extended: `set_models()`/`add_model()` take ModelInfo from any source; `hub_chooser`,
`file_chooser`, `folder_chooser` and `timm_chooser` are the callables behind the four entries (swap
them for richer dialogs, or for answers in tests), and `options` holds per-model
`RunConfig.model_options` that a source's dialog may fill in.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QInputDialog, QLabel, QMessageBox, QWidget

from batchlens.core.errors import BatchLensError
from batchlens.core.models import ModelInfo, list_models
from batchlens.core.models.files import MODEL_FILE_SUFFIXES, file_model_info
from batchlens.core.models.hf_cache import HF_PREFIX, hf_folder_info, hub_model_info
from batchlens.core.models.info import TIMM_PREFIX
from batchlens.ui.start_folder import start_folder
from batchlens.ui.wording import task_words

ROLE_INFO = Qt.ItemDataRole.UserRole + 1
OPEN_FILE = "open-file"
OPEN_HF_FOLDER = "open-hf-folder"
OPEN_TIMM = "open-timm"
OPEN_HF_HUB = "open-hf-hub"
ACTIONS = (  # the entries under "Add a model", in order: (data, text, tooltip)
    (
        OPEN_HF_HUB,
        "Hugging Face model by name…",
        "A model on the Hugging Face hub (ORG/NAME): downloaded once when the run starts, then kept.",
    ),
    (OPEN_HF_FOLDER, "Open Hugging Face folder…", "A folder with config.json and model.safetensors."),
    (OPEN_TIMM, "timm model with a weights file…", "A timm architecture by name and your checkpoint."),
    (OPEN_FILE, "Open model file…", "Use a model saved in a file on this computer."),
)

SOURCE_TITLES = {  # in the order the groups are listed; the catalogue (~80 rows) comes last
    "built-in": "Built-in demo models",
    "file": "Model files",
    "huggingface": "On this computer (Hugging Face)",
    "timm": "timm",
    "torchvision": "torchvision catalogue",
}
ACTIONS_TITLE = "Add a model"
ACTIONS_BEFORE = "torchvision"  # the "Add a model" group comes just before this one
# Every extension `batchlens run --model FILE` reads.
MODEL_FILE_FILTER = f"Model files ({' '.join(f'*{s}' for s in sorted(MODEL_FILE_SUFFIXES))});;All files (*)"


def choose_model_file(parent: QWidget) -> ModelInfo | None:
    """Default "Open model file…": pick a file; its id is the path (the engine decides if it can load it)."""
    path, _ = QFileDialog.getOpenFileName(parent, "Open model file", start_folder(parent), MODEL_FILE_FILTER)
    if not path:
        return None
    return file_model_info(path)


def choose_hub_model(parent: QWidget) -> ModelInfo | None:
    """Default "Hugging Face model by name…": the name (or the model page's address)."""
    text, ok = QInputDialog.getText(
        parent,
        "Hugging Face model",
        "Model name on the Hugging Face hub (ORG/NAME, e.g. google/vit-base-patch16-224, or one of\n"
        "timm's, e.g. timm/resnet50.a1_in1k), or the address of its page. It is downloaded once,\n"
        "when the run starts.",
    )
    if not ok or not text.strip():
        return None
    try:
        return hub_model_info(text)
    except BatchLensError as exc:
        QMessageBox.warning(parent, "Not a Hugging Face model name", str(exc))
        return None


def choose_hf_folder(parent: QWidget) -> ModelInfo | None:
    """Default "Open Hugging Face folder…": pick a folder; say in a sentence why it cannot be used."""
    path = QFileDialog.getExistingDirectory(parent, "Open Hugging Face model folder", start_folder(parent))
    if not path:
        return None
    try:
        return hf_folder_info(Path(path))
    except BatchLensError as exc:
        QMessageBox.warning(parent, "Not a model BatchLens can run", str(exc))
        return None


def choose_timm_model(parent: QWidget) -> tuple[ModelInfo, dict] | None:
    """Default "timm model…": the architecture's timm name, then the checkpoint file."""
    name, ok = QInputDialog.getText(
        parent, "timm model", "timm architecture name (as in timm.list_models(), e.g. resnet50):"
    )
    if not ok or not name.strip():
        return None
    weights, _ = QFileDialog.getOpenFileName(
        parent,
        f"Weights for {name.strip()}",
        start_folder(parent),
        "Weights (*.safetensors *.pth *.bin);;All files (*)",
    )
    if not weights:
        return None
    return timm_info(name.strip(), weights), {"weights": weights}


def timm_info(name: str, weights: str | None = None) -> ModelInfo:
    model_id = name if name.startswith(TIMM_PREFIX) else TIMM_PREFIX + name
    where = f" with {Path(weights).name}" if weights else ""
    return ModelInfo(model_id, "classification", "timm", f"timm {model_id.removeprefix(TIMM_PREFIX)}{where}")


class ModelPicker(QWidget):
    model_changed = Signal(str)  # the id of the newly chosen model

    def __init__(self, models: list[ModelInfo] | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.hub_chooser: Callable[[QWidget], ModelInfo | None] = choose_hub_model
        self.file_chooser: Callable[[QWidget], ModelInfo | None] = choose_model_file
        self.folder_chooser: Callable[[QWidget], ModelInfo | None] = choose_hf_folder
        self.timm_chooser: Callable[[QWidget], tuple[ModelInfo, dict] | None] = choose_timm_model
        self.options: dict[str, dict] = {}  # model id -> RunConfig.model_options
        self._infos: list[ModelInfo] = []
        self._previous = -1

        self.combo = QComboBox()
        self.combo.setMinimumContentsLength(24)
        self.combo.setMaxVisibleItems(20)
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.combo.setToolTip("The model to run. Built-in demo models work offline with no set-up.")
        self.item_model = QStandardItemModel(self)
        self.combo.setModel(self.item_model)
        self.task_label = QLabel()
        self.task_label.setToolTip("What the chosen model does with each image.")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo, 1)
        layout.addWidget(self.task_label)
        self.combo.currentIndexChanged.connect(self._on_index_changed)
        self.set_models(list_models() if models is None else models)

    # -- contents ---------------------------------------------------------------------------------
    def set_models(self, models: list[ModelInfo]) -> None:
        keep = self.current_model_id()
        self._infos = list(models)
        self._rebuild(keep)

    def add_model(self, info: ModelInfo, select: bool = True) -> None:
        self._infos = [m for m in self._infos if m.id != info.id] + [info]
        self._rebuild(info.id if select else self.current_model_id())

    def models(self) -> list[ModelInfo]:
        return list(self._infos)

    def _rebuild(self, select_id: str | None) -> None:
        self.combo.blockSignals(True)
        self.item_model.clear()
        groups: dict[str, list[ModelInfo]] = {}
        for info in self._infos:
            groups.setdefault(info.source, []).append(info)
        order = [s for s in SOURCE_TITLES if s in groups] + [s for s in groups if s not in SOURCE_TITLES]
        for source in order:
            if source == ACTIONS_BEFORE:
                self._add_actions()
            self._add_header(SOURCE_TITLES.get(source, source.title()))
            for info in groups[source]:
                note = info.download_note()  # "needs a 97.8 MiB download", before Run is pressed
                item = QStandardItem(
                    f"{info.id}  —  {task_words(info.task)}" + (f"  ({note})" if note else "")
                )
                item.setData(info, ROLE_INFO)
                item.setToolTip(info.description or info.id)
                self.item_model.appendRow(item)
        if ACTIONS_BEFORE not in order:
            self._add_actions()
        self.combo.blockSignals(False)
        if not (select_id and self.set_current_model(select_id)):
            first = next((row for row in range(self.item_model.rowCount()) if self._info_at(row)), -1)
            self.combo.setCurrentIndex(first)
        self._update_label()

    def _add_header(self, title: str) -> None:
        header = QStandardItem(title)
        header.setFlags(Qt.ItemFlag.NoItemFlags)  # a group title, not a choice
        font = QFont()
        font.setBold(True)
        header.setFont(font)
        self.item_model.appendRow(header)

    def _add_actions(self) -> None:
        self._add_header(ACTIONS_TITLE)
        for action, text, tooltip in ACTIONS:
            opener = QStandardItem(text)
            opener.setData(action, ROLE_INFO)
            opener.setToolTip(tooltip)
            self.item_model.appendRow(opener)

    def row_of(self, action: str) -> int:
        """The row of an "Add a model" entry (OPEN_FILE, OPEN_HF_HUB, ...)."""
        for row in range(self.item_model.rowCount()):
            if self.item_model.item(row).data(ROLE_INFO) == action:
                return row
        raise KeyError(action)

    def _info_at(self, row: int) -> ModelInfo | None:
        data = self.item_model.item(row).data(ROLE_INFO) if 0 <= row < self.item_model.rowCount() else None
        return data if isinstance(data, ModelInfo) else None

    # -- selection --------------------------------------------------------------------------------
    def current_model(self) -> ModelInfo | None:
        return self._info_at(self.combo.currentIndex())

    def current_model_id(self) -> str | None:
        info = self.current_model()
        return info.id if info else None

    def current_options(self) -> dict:
        return dict(self.options.get(self.current_model_id() or "", {}))

    def set_current_model(self, model_id: str) -> bool:
        """Select `model_id`; a path to an existing file not in the list is added as a model file."""
        for row in range(self.item_model.rowCount()):
            info = self._info_at(row)
            if info and info.id == model_id:
                self.combo.setCurrentIndex(row)
                return True
        if Path(model_id).is_file():
            self.add_model(file_model_info(model_id), select=True)
            return True
        if (Path(model_id) / "config.json").is_file():
            try:
                self.add_model(hf_folder_info(Path(model_id)), select=True)
            except BatchLensError:
                return False
            return True
        if model_id.startswith(HF_PREFIX):  # a hub name not in the cache: downloaded before the run
            try:
                self.add_model(hub_model_info(model_id))
            except BatchLensError:
                return False
            return True
        if model_id.startswith(TIMM_PREFIX):
            self.add_model(timm_info(model_id, self.options.get(model_id, {}).get("weights")), select=True)
            return True
        return False

    def _on_index_changed(self, row: int) -> None:
        action = self.item_model.item(row).data(ROLE_INFO) if 0 <= row < self.item_model.rowCount() else None
        if action in (OPEN_FILE, OPEN_HF_FOLDER, OPEN_HF_HUB, OPEN_TIMM):
            self.combo.blockSignals(True)
            self.combo.setCurrentIndex(self._previous)  # stay on the old choice unless a model is picked
            self.combo.blockSignals(False)
            options = None
            if action == OPEN_FILE:
                info = self.file_chooser(self)
            elif action == OPEN_HF_HUB:
                info = self.hub_chooser(self)
            elif action == OPEN_HF_FOLDER:
                info = self.folder_chooser(self)
            else:
                info, options = self.timm_chooser(self) or (None, None)
            if info is not None:
                if options:
                    self.options.setdefault(info.id, {}).update(options)
                self.add_model(info, select=True)
                self.model_changed.emit(info.id)
            return
        self._previous = row
        self._update_label()
        if self.current_model_id():
            self.model_changed.emit(self.current_model_id())

    def _update_label(self) -> None:
        info = self.current_model()
        self._previous = self.combo.currentIndex()
        self.task_label.setText(f"task: <b>{task_words(info.task)}</b>" if info else "")
        if info:
            self.combo.setToolTip(
                f"{info.id} ({task_words(info.task)}, {info.source}). {info.description}".strip()
            )
