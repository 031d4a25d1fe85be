"""The dialog that describes a model file: what it does, its labels, and how its images must be
prepared. For a file without a sidecar it is prefilled with the common ImageNet choice, explained in
plain words; for one with a sidecar, with what that sidecar says (keys the dialog does not show are
kept). It writes the sidecar beside the model (over the one in use), or into BatchLens's data folder
when that folder is read-only (where the loader also looks: core/models/sidecar_store.py)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from batchlens.core.errors import BatchLensError
from batchlens.core.models.catalogue_index import catalogue_tasks
from batchlens.core.models.files import is_weights_file, read_labels, sidecar_path_for
from batchlens.core.models.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INTERPOLATIONS,
    SIDECAR_KEYS,
    Preprocessing,
)
from batchlens.core.models.sidecar import normalise_task, read_json_file
from batchlens.core.models.sidecar_store import save_sidecar, sidecar_target
from batchlens.core.tasks.kinds import KINDS

SIZE_MODES = {
    "crop": "Resize the short side, then cut out the centre (most ImageNet models)",
    "stretch": "Stretch to an exact size",
    "keep": "Keep each image's own size",
    "short": "Resize the short side, keep the whole image",
}
# The keys the dialog's fields set; a sidecar's other keys (name, description, color_mode...) are kept.
DIALOG_KEYS = (
    "task",
    "arch",
    "input_size",
    "resize",
    "keep_ratio",
    "crop",
    "crop_pct",
    "interpolation",
    "mean",
    "std",
    "mean_std_units",
)
EXPLANATION = (
    "A model gives good answers only when images are prepared the way its training images were. "
    "Most models trained on ImageNet want the short side resized to 256 pixels, the centre 224×224 "
    "cut out, and each colour channel shifted by the mean and divided by the std below (ImageNet's "
    "own averages). If the model's page or code says otherwise, use its numbers; if unsure, keep these."
)


def _numbers(text: str) -> list[float]:
    return [float(part) for part in text.replace(";", ",").split(",") if part.strip()]


class SidecarDialog(QDialog):
    """Asks for what a model file's sidecar must say; `saved` is where it was written once accepted."""

    def __init__(self, model_path: Path, parent: QWidget | None = None, current: Path | None = None):
        super().__init__(parent)
        self.model_path = Path(model_path)
        self.current = Path(current) if current else None  # the sidecar in use, edited in place
        self.saved: Path | None = None
        self.setWindowTitle(f"Describe {self.model_path.name}")
        intro = self._intro()
        labels_row = self._build_model_fields()
        self._build_size_fields()
        self._build_colour_fields()
        form = self._build_form(labels_row)
        self.weights_only = is_weights_file(self.model_path)
        self.arch.setVisible(self.weights_only)
        self.arch_label.setVisible(self.weights_only)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(form)
        layout.addWidget(self.explanation)
        layout.addWidget(self.error)
        layout.addWidget(buttons)
        self.existing = self._read_current()
        self._prefill(self.existing)

    # -- built once, by __init__ ------------------------------------------------------------------
    def _intro(self) -> QLabel:
        if self.current:
            text = f"What <b>{self.model_path.name}</b> is, as its sidecar {self.current.name} says it."
        else:
            text = (
                f"<b>{self.model_path.name}</b> has no sidecar saying what the model does. Tell BatchLens "
                "once; it saves the answers in a small file next to the model."
            )
        intro = QLabel(text)
        intro.setWordWrap(True)
        return intro

    def _build_model_fields(self) -> QHBoxLayout:
        """What the model does, its architecture (a weights file only) and its labels file (the row)."""
        self.task = QComboBox()
        for kind in KINDS.values():
            self.task.addItem(kind.title, kind.task)
        self.arch = QComboBox()
        self.arch.setEditable(True)
        self.arch.addItem("")
        self.arch.addItems(sorted(catalogue_tasks()))
        self.arch.setToolTip("The torchvision architecture these weights belong to (a weights file only).")
        self.arch.currentTextChanged.connect(self._on_arch_changed)
        self.labels = QLineEdit()
        self.labels.setPlaceholderText("optional: a text file, one label per line, or a JSON list")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_labels)
        labels_row = QHBoxLayout()
        labels_row.addWidget(self.labels, 1)
        labels_row.addWidget(browse)
        return labels_row

    def _build_size_fields(self) -> None:
        """The image size: a mode (SIZE_MODES), and each mode's numbers on its own page of `sizes`."""
        self.size_mode = QComboBox()
        for key, text in SIZE_MODES.items():
            self.size_mode.addItem(text, key)
        self.resize_to = self._spin(256, "The short side becomes this many pixels; the shape is kept.")
        self.crop = self._spin(224, "Then the centre square of this size is cut out.")
        self.height = self._spin(224, "Images are stretched to exactly this height…")
        self.width = self._spin(224, "…and this width.")
        self.short_side = self._spin(520, "The short side becomes this many pixels; nothing is cut off.")
        self.sizes = QStackedWidget()
        pages = (
            (self.resize_to, "then crop", self.crop),
            (self.height, "×", self.width),
            (),
            (self.short_side,),
        )
        for widgets in pages:
            page = QWidget()
            row = QHBoxLayout(page)
            row.setContentsMargins(0, 0, 0, 0)
            for widget in widgets:
                row.addWidget(QLabel(widget) if isinstance(widget, str) else widget)
            row.addStretch(1)
            self.sizes.addWidget(page)
        self.size_mode.currentIndexChanged.connect(self.sizes.setCurrentIndex)

    def _build_colour_fields(self) -> None:
        """Resampling, mean and std, the explanation of them, and the line for a mistake."""
        self.interpolation = QComboBox()
        self.interpolation.addItems(list(INTERPOLATIONS))
        self.interpolation.setCurrentText("bilinear")  # torchvision's and most models' choice
        self.normalise = QCheckBox("Subtract the mean and divide by the std (per colour channel, 0–1 units)")
        self.normalise.setChecked(True)
        self.mean = QLineEdit(", ".join(str(v) for v in IMAGENET_MEAN))
        self.std = QLineEdit(", ".join(str(v) for v in IMAGENET_STD))
        self.normalise.toggled.connect(self.mean.setEnabled)
        self.normalise.toggled.connect(self.std.setEnabled)
        self.explanation = QLabel(EXPLANATION)
        self.explanation.setWordWrap(True)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #b00020")

    def _build_form(self, labels_row: QHBoxLayout) -> QFormLayout:
        form = QFormLayout()
        form.addRow("What it does", self.task)
        self.arch_label = QLabel("Architecture")
        form.addRow(self.arch_label, self.arch)
        form.addRow("Labels file", labels_row)
        form.addRow("Image size", self.size_mode)
        form.addRow("", self.sizes)
        form.addRow("Resampling", self.interpolation)
        form.addRow("", self.normalise)
        form.addRow("Mean", self.mean)
        form.addRow("Std", self.std)
        return form

    def _read_current(self) -> dict:
        if self.current is None:
            return {}
        try:
            data = read_json_file(self.current)
        except BatchLensError as exc:
            self.error.setText(f"{exc} Saving replaces it.")
            return {}
        return data if isinstance(data, dict) else {}

    def _prefill(self, data: dict) -> None:
        """Show what a sidecar says (nothing to show: the defaults stay)."""
        if self.task.findData(normalise_task(data.get("task"))) >= 0:
            self.task.setCurrentIndex(self.task.findData(normalise_task(data["task"])))
        if isinstance(data.get("arch"), str):
            self.arch.setCurrentText(data["arch"])
        if data.get("labels"):
            self.labels.setPlaceholderText("the sidecar's labels are kept; choose a file to replace them")
        try:
            pre = Preprocessing.from_sidecar(
                {k: data[k] for k in SIDECAR_KEYS if k in data}, str(self.current)
            )
        except BatchLensError as exc:
            self.error.setText(str(exc))
            return
        if not data:
            return
        resize, crop = pre.resize or (), pre.crop
        mode = "keep"
        if len(resize) == 1 and crop:
            mode = "crop"
            self.resize_to.setValue(resize[0])
            self.crop.setValue(crop[0])
        elif len(resize) == 1:
            mode = "short"
            self.short_side.setValue(resize[0])
        elif resize:
            mode = "stretch"
            self.height.setValue(resize[0])
            self.width.setValue(resize[1])
        self.size_mode.setCurrentIndex(self.size_mode.findData(mode))
        self.interpolation.setCurrentText(pre.interpolation)
        self.normalise.setChecked(pre.mean is not None)
        if pre.mean is not None:
            self.mean.setText(", ".join(f"{v:g}" for v in pre.mean))
            self.std.setText(", ".join(f"{v:g}" for v in pre.std))

    @staticmethod
    def _spin(value: int, tooltip: str) -> QSpinBox:
        spin = QSpinBox()
        spin.setRange(1, 8192)
        spin.setValue(value)
        spin.setSuffix(" px")
        spin.setToolTip(tooltip)
        return spin

    def _on_arch_changed(self, arch: str) -> None:
        task = catalogue_tasks().get(arch.strip())
        if task:  # the architecture decides the task
            self.task.setCurrentIndex(self.task.findData(task))

    def _browse_labels(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Labels file", str(self.model_path.parent))
        if path:
            self.labels.setText(path)

    def sidecar_data(self) -> dict:
        """The sidecar the fields describe (BatchLensError with one sentence when one is wrong)."""
        data = {key: value for key, value in self.existing.items() if key not in DIALOG_KEYS}
        data["task"] = self.task.currentData()
        arch = self.arch.currentText().strip()
        if self.weights_only and not arch:
            raise BatchLensError(
                f"{self.model_path.name} holds only weights: choose the architecture they belong to."
            )
        if self.weights_only:
            data["arch"] = arch
        if self.labels.text().strip():
            data["labels"] = read_labels(Path(self.labels.text().strip()))  # kept in the sidecar itself
        elif isinstance(data.get("labels"), str) and self.current is not None:
            target = sidecar_target(self.model_path, self.current)
            if target.parent != self.current.parent:  # a labels file named relative to the old place
                data["labels"] = read_labels(self.current.parent / data["labels"])
        mode = self.size_mode.currentData()
        if mode == "crop":
            data["resize"], data["crop"] = self.resize_to.value(), [self.crop.value()] * 2
        elif mode == "stretch":
            data["resize"] = [self.height.value(), self.width.value()]
        elif mode == "short":
            data["resize"] = self.short_side.value()
        if mode not in ("crop", "short"):
            data.pop("max_size", None)  # (it only caps a short-side resize)
        data["interpolation"] = self.interpolation.currentText()
        if self.normalise.isChecked():
            try:
                data["mean"], data["std"] = _numbers(self.mean.text()), _numbers(self.std.text())
            except ValueError:
                raise BatchLensError("Mean and std must be numbers separated by commas.") from None
        return data

    def accept(self) -> None:
        try:
            self.saved = save_sidecar(self.model_path, self.sidecar_data(), self.current)
        except BatchLensError as exc:
            self.error.setText(str(exc))
            return
        except OSError as exc:
            self.error.setText(f"Could not save the sidecar: {exc.strerror or exc}.")
            return
        super().accept()


def ask_sidecar(parent: QWidget, model_path: Path) -> Path | None:
    """Show the dialog (over the sidecar in use, if any); the path of the sidecar it wrote, or None
    when the user cancelled."""
    dialog = SidecarDialog(model_path, parent, sidecar_path_for(Path(model_path)))
    dialog.exec()
    return dialog.saved
