"""The model picker: every model from `list_models()`, grouped by where it comes from, plus
"Open model file…".

Built to be extended: `set_models()`/`add_model()` take ModelInfo from any source, `file_chooser` is the
callable behind "Open model file…" (swap it for a richer dialog), and `options` holds per-model
`RunConfig.model_options` that a source's dialog may fill in.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QLabel, QWidget

from batchlens.core.models import ModelInfo, list_models
from batchlens.core.models.files import file_model_info

ROLE_INFO = Qt.ItemDataRole.UserRole + 1
OPEN_FILE = "open-file"

SOURCE_TITLES = {
    "built-in": "Built-in demo models",
    "torchvision": "torchvision catalogue",
    "file": "Model files",
}
MODEL_FILE_FILTER = "Model files (*.pt *.pt2 *.pth *.ts *.safetensors);;All files (*)"


def choose_model_file(parent: QWidget) -> ModelInfo | None:
    """Default "Open model file…": pick a file; its id is the path (the engine decides if it can load it)."""
    path, _ = QFileDialog.getOpenFileName(parent, "Open model file", "", MODEL_FILE_FILTER)
    if not path:
        return None
    return file_model_info(path)


class ModelPicker(QWidget):
    model_changed = Signal(str)  # the id of the newly chosen model

    def __init__(self, models: list[ModelInfo] | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.file_chooser: Callable[[QWidget], ModelInfo | None] = choose_model_file
        self.options: dict[str, dict] = {}  # model id -> RunConfig.model_options
        self._infos: list[ModelInfo] = []
        self._previous = -1

        self.combo = QComboBox()
        self.combo.setMinimumContentsLength(24)
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
        for source, infos in groups.items():
            header = QStandardItem(SOURCE_TITLES.get(source, source.title()))
            header.setFlags(Qt.ItemFlag.NoItemFlags)  # a group title, not a choice
            font = QFont()
            font.setBold(True)
            header.setFont(font)
            self.item_model.appendRow(header)
            for info in infos:
                item = QStandardItem(f"{info.id}  —  {info.task}")
                item.setData(info, ROLE_INFO)
                item.setToolTip(info.description or info.id)
                self.item_model.appendRow(item)
        opener = QStandardItem("Open model file…")
        opener.setData(OPEN_FILE, ROLE_INFO)
        opener.setToolTip("Use a model saved in a file on this computer.")
        self.item_model.appendRow(opener)
        self.combo.blockSignals(False)
        if not (select_id and self.set_current_model(select_id)):
            first = next((row for row in range(self.item_model.rowCount()) if self._info_at(row)), -1)
            self.combo.setCurrentIndex(first)
        self._update_label()

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
        return False

    def _on_index_changed(self, row: int) -> None:
        if 0 <= row < self.item_model.rowCount() and self.item_model.item(row).data(ROLE_INFO) == OPEN_FILE:
            self.combo.blockSignals(True)
            self.combo.setCurrentIndex(self._previous)  # stay on the old choice unless a file is picked
            self.combo.blockSignals(False)
            info = self.file_chooser(self)
            if info is not None:
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
        self.task_label.setText(f"task: <b>{info.task}</b>" if info else "")
        if info:
            self.combo.setToolTip(f"{info.id} ({info.task}, {info.source}). {info.description}".strip())
