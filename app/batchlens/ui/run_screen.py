"""The run screen's layout: the choices, the run controls, and under them the Previews and Problems
tabs beside the memory panel. Problems is a tab of its own (its title counts the rows), so at 1280×720
it shows many rows without scrolling and the previews keep the height the window gives them; the
combo boxes size to a short text, so the window's default size on an 800×600 screen needs no
horizontal scrolling."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QGroupBox,
    QLabel,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from batchlens.ui.gpu_panel import GpuProcessesPanel
from batchlens.ui.previews import PreviewBox
from batchlens.ui.problems_panel import ProblemsPanel
from batchlens.ui.run_controls import RunControls
from batchlens.ui.run_form import RunForm

PREVIEWS_TAB, PROBLEMS_TAB = 0, 1
#: Characters a combo box's closed width is sized for; longer entries show in full in the open list.
COMBO_CHARS = {"model": 22, "device": 14}


class PanelTabs(QTabWidget):
    """Previews and Problems as two tabs; the Problems tab's title follows the panel's count."""

    def __init__(self, preview_box: PreviewBox, problems: ProblemsPanel, parent: QWidget | None = None):
        super().__init__(parent)
        self.addTab(preview_box, "Previews")
        self.addTab(problems, problems.title())
        problems.title_changed.connect(lambda title: self.setTabText(PROBLEMS_TAB, title))


def narrow_combos(form: RunForm) -> None:
    """Size the model and device lists by a short text, not their longest entry ("resnet50 — classification
    (needs a 97.8 MiB download)"), so that the form fits an 800×600 screen."""
    for combo, chars in (
        (form.model_picker.combo, COMBO_CHARS["model"]),
        (form.device_combo, COMBO_CHARS["device"]),
    ):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(chars)
        combo.view().setMinimumWidth(combo.view().sizeHintForColumn(0))


def build_run_screen(window, find_devices: bool) -> QWidget:
    """Make the run screen's widgets as the window's attributes (form, controls, preview_box, previews,
    thumbnails, problems, panel_tabs, memory_box, top_splitter) and return the screen."""
    window.form = form = RunForm(find_devices=find_devices)
    narrow_combos(form)
    window.controls = RunControls()
    window.preview_box = PreviewBox()
    window.previews = window.preview_box.panel
    window.thumbnails = window.preview_box.thumbnails
    window.memory_box = QGroupBox("Memory")
    # pyqtgraph takes a second or two to import: the plot comes after the paint (build_memory_plot)
    window.memory_plot = None
    window._memory_placeholder = QLabel("The memory plot appears in a moment…")
    window._memory_placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
    window.gpu_panel = GpuProcessesPanel()  # who holds the GPU, beside the plot
    window.memory_splitter = QSplitter(Qt.Orientation.Horizontal)
    window.memory_splitter.addWidget(window._memory_placeholder)
    window.memory_splitter.addWidget(window.gpu_panel)
    window.memory_splitter.setStretchFactor(0, 3)
    window.memory_splitter.setStretchFactor(1, 1)
    QVBoxLayout(window.memory_box).addWidget(window.memory_splitter)
    window.problems = ProblemsPanel()
    window.panel_tabs = PanelTabs(window.preview_box, window.problems)

    window.top_splitter = splitter = QSplitter(Qt.Orientation.Horizontal)
    splitter.addWidget(window.panel_tabs)
    splitter.addWidget(window.memory_box)
    splitter.setStretchFactor(0, 1)
    splitter.setStretchFactor(1, 1)
    splitter.setChildrenCollapsible(False)

    screen = QWidget()
    layout = QVBoxLayout(screen)
    layout.setContentsMargins(6, 6, 6, 6)  # a few points narrower: 800×600 with a GPU's plot buttons
    layout.addWidget(form)
    layout.addWidget(window.controls)
    layout.addWidget(splitter, 1)
    return screen
