"""The BatchLens main window: layout and wiring only.

The engine runs in RunWorker on its own QThread; the window only receives its signals. Previews are
refreshed from the latest result on a short timer, so a fast model cannot flood the GUI thread; the
memory plot samples its probe on its own timer whether or not a run is going.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Qt, QThread, QThreadPool, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QStatusBar,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from batchlens.core.cluster import ClusterConfig, ClusterRunner, ray_installed
from batchlens.core.config import RunConfig
from batchlens.core.devices import available_devices, resolve_device
from batchlens.core.errors import BatchLensError
from batchlens.core.events import ImageResult, RunFinished, RunNote, RunStarted
from batchlens.core.images import ScanStats, scan_images
from batchlens.core.memory import ClearResult, MemoryProbe, format_bytes, probe_for
from batchlens.core.resources import resource_path, sample_folder
from batchlens.core.results import unfinished_run
from batchlens.ui.memory_plot import MemoryPlot
from batchlens.ui.model_picker import ModelPicker
from batchlens.ui.model_sources import ModelSources
from batchlens.ui.previews import PreviewPanel, ThumbnailStrip
from batchlens.ui.settings import Settings
from batchlens.ui.worker import RunWorker, start_in_thread

log = logging.getLogger(__name__)

DEFAULT_MODEL = "demo-shapes"
CLUSTER = "cluster"  # the device picker's Ray cluster choice (core/cluster.py); its address is beside it
CLOSE_WAIT_MS = 5000  # how long closing the window waits for the current image to finish
PREVIEW_INTERVAL_MS = 80

#: The window's speed choices: (label, tooltip, RunConfig settings). The command line has the same
#: settings as separate options (--batch-size, --prefetch, --fast-decode); README "Performance".
SPEEDS = {
    "standard": (
        "Standard",
        "One image at a time: the least memory, and results exactly as a plain PyTorch loop gives them.",
        {},
    ),
    "faster": (
        "Faster",
        "Several images per forward pass (the batch size is measured at the start) while the next "
        "images are decoded in the background. Same results, more memory.",
        {"batch_size": "auto", "prefetch": 2},
    ),
    "fastest": (
        "Fastest",
        "As Faster, and classification models decode large JPEG photos at a reduced size when the "
        "model shrinks them anyway: much less work per photo; scores can differ very slightly.",
        {"batch_size": "auto", "prefetch": 2, "fast_decode": True},
    ),
}


def probe_for_name(name: str) -> MemoryProbe:
    return probe_for(resolve_device(name))


def default_output_for(input_dir: Path) -> Path:
    """A results folder beside the input (never inside it); the bundled samples get one in Documents."""
    input_dir = Path(input_dir).expanduser()
    name = f"{input_dir.name or 'images'}-batchlens"
    try:
        bundled = input_dir.resolve().is_relative_to(resource_path().resolve())
    except OSError:
        bundled = False
    if bundled or not input_dir.parent.exists():
        from PySide6.QtCore import QStandardPaths

        documents = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DocumentsLocation)
        return Path(documents or Path.home()) / "BatchLens" / name
    return input_dir.parent / name


def describe_count(folder: Path, recursive: bool, exclude: Path | None) -> str:
    if not str(folder).strip():
        return "Choose a folder of images."
    if not folder.is_dir():
        return "This folder does not exist." if not folder.exists() else "This is a file, not a folder."
    stats = ScanStats()
    count = sum(1 for _ in scan_images(folder, recursive, stats, exclude=exclude))
    text = f"{count} image{'s' if count != 1 else ''} found"
    if stats.skipped:
        text += f" ({stats.skipped} other file{'s' if stats.skipped != 1 else ''} will be skipped)"
    return text + "."


class _CountReply(QObject):
    counted = Signal(int, str)  # generation, text


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class MainWindow(QMainWindow):
    run_finished = Signal(object)  # the summary dict, or None when the run could not go on
    worker_created = Signal(object)  # the RunWorker of a run about to start

    def __init__(
        self,
        settings: Settings | None = None,
        probe_factory: Callable[[str], MemoryProbe] = probe_for_name,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.settings = settings or Settings()
        self.probe_factory = probe_factory
        self.ask_questions = True  # False in --self-test and --start: never block on a dialog
        self.worker: RunWorker | None = None
        self.thread: QThread | None = None
        self.last_summary: dict | None = None
        self.last_error: str | None = None
        self._latest: ImageResult | None = None
        self._output_is_auto = True
        self._previous_model: str | None = None
        self._count_generation = 0
        self._count_reply = _CountReply(self)
        self._count_reply.counted.connect(self._on_counted)
        self._run_t0 = 0.0
        self._paused_at: float | None = None
        self._paused_total = 0.0

        self.setWindowTitle("BatchLens")
        self.setAcceptDrops(True)
        self._build()
        self._wire()
        self._restore()

    # == layout ====================================================================================
    def _build(self) -> None:
        self.model_picker = ModelPicker()
        self.model_sources = ModelSources(self)  # weights download, "Use weights file…", pickle trust
        self.device_combo = QComboBox()
        self.device_combo.setToolTip(
            "Where the model runs. Auto picks a CUDA GPU, then Apple MPS, then Intel XPU, then the CPU."
        )
        self._fill_devices()
        self.cluster_edit = QLineEdit("auto")
        self.cluster_edit.setPlaceholderText("auto, local or ray://HOST:PORT")
        self.cluster_edit.setToolTip(
            "The Ray cluster to run on: auto (the running one, or a new one on this machine), local (a "
            "new one here), HOST:PORT, or ray://HOST:PORT (Ray Client). Needs the cluster extra: "
            'pip install "batchlens[cluster]". The folders must be on storage every node sees.'
        )
        self.cluster_edit.setVisible(False)

        self.input_edit = QLineEdit()
        self.input_edit.setPlaceholderText("Folder of images (Browse, or drop a folder on the window)")
        self.input_edit.setToolTip("The folder of images to process. It is only read, never written.")
        self.input_browse = QPushButton("Browse…")
        self.input_browse.setToolTip("Choose the folder of images.")
        self.recursive_check = QCheckBox("Include subfolders")
        self.recursive_check.setToolTip("Also process images in folders inside the input folder.")
        self.count_label = QLabel(" ")
        self.count_label.setToolTip("How many images the run will process, counted before it starts.")
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("Folder for predictions.jsonl, summary.json and output images")
        self.output_edit.setToolTip(
            "Where results go: predictions.jsonl (one line per image), summary.json and output images."
        )
        self.output_browse = QPushButton("Browse…")
        self.output_browse.setToolTip("Choose the folder for the results.")
        self.speed_combo = QComboBox()
        for key, (label, tip, _) in SPEEDS.items():
            self.speed_combo.addItem(label, key)
            self.speed_combo.setItemData(self.speed_combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.speed_combo.setToolTip(
            "How hard to push: Standard (one image at a time), Faster (batches, decoding ahead) or "
            "Fastest (also reduced-size JPEG decoding for classification). Hover a choice for details."
        )
        self.cpu_fallback_check = QCheckBox("Fall back to CPU")
        self.cpu_fallback_check.setToolTip(
            "When an image runs out of GPU memory even after retrying, smaller batches and tiles, run "
            "that one image on the CPU (slower) instead of giving it an error line."
        )

        setup = QGroupBox("What to run")
        grid = QGridLayout(setup)
        grid.addWidget(QLabel("Model"), 0, 0)
        grid.addWidget(self.model_picker, 0, 1, 1, 2)
        grid.addWidget(QLabel("Device"), 0, 3)
        grid.addWidget(self.device_combo, 0, 4)
        grid.addWidget(self.cluster_edit, 0, 5)
        grid.addWidget(QLabel("Input folder"), 1, 0)
        grid.addWidget(self.input_edit, 1, 1)
        grid.addWidget(self.input_browse, 1, 2)
        grid.addWidget(self.recursive_check, 1, 3, 1, 2)
        grid.addWidget(self.count_label, 2, 1, 1, 2)
        grid.addWidget(QLabel("Speed"), 2, 3)
        grid.addWidget(self.speed_combo, 2, 4)
        grid.addWidget(QLabel("Output folder"), 3, 0)
        grid.addWidget(self.output_edit, 3, 1)
        grid.addWidget(self.output_browse, 3, 2)
        grid.addWidget(self.cpu_fallback_check, 3, 3, 1, 2)
        grid.setColumnStretch(1, 1)
        self.setup_box = setup

        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Start the run (Ctrl+R).")
        self.run_button.setDefault(True)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Pause after the current image; press again to resume (Ctrl+P).")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current image; finished images stay saved (Esc).")
        self.open_output_button = QPushButton("Open output folder")
        self.open_output_button.setToolTip("Show the results folder in your file manager.")
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m images (%p %)")
        self.progress.setToolTip("Images done out of the images to process in this run.")
        self.progress.setValue(0)
        self.rate_label = QLabel(" ")
        self.rate_label.setToolTip("Speed of the run and the estimated time left.")
        self.run_message = QLabel(" ")
        self.run_message.setWordWrap(True)
        self.run_message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        controls = QHBoxLayout()
        controls.addWidget(self.run_button)
        controls.addWidget(self.pause_button)
        controls.addWidget(self.cancel_button)
        controls.addWidget(self.progress, 1)
        controls.addWidget(self.rate_label)
        controls.addWidget(self.open_output_button)

        self.previews = PreviewPanel()
        self.thumbnails = ThumbnailStrip()
        self.thumbnails.setToolTip("The most recent images; click one to see its result again.")
        preview_box = QGroupBox("Previews")
        preview_layout = QVBoxLayout(preview_box)
        preview_layout.addWidget(self.previews, 1)
        strip = QScrollArea()  # the strip keeps its size; a narrow window scrolls it instead
        strip.setWidget(self.thumbnails)
        strip.setWidgetResizable(True)
        strip.setFrameShape(QFrame.Shape.NoFrame)
        strip.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        strip.setFixedHeight(
            self.thumbnails.minimumHeight() + strip.horizontalScrollBar().sizeHint().height()
        )
        preview_layout.addWidget(strip)

        self.memory_plot = MemoryPlot()
        memory_box = QGroupBox("Memory")
        memory_layout = QVBoxLayout(memory_box)
        memory_layout.addWidget(self.memory_plot)

        self.problems = QTreeWidget()
        self.problems.setColumnCount(2)
        self.problems.setHeaderLabels(["File", "Problem"])
        self.problems.setRootIsDecorated(False)
        self.problems.setAlternatingRowColors(True)
        self.problems.header().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.problems.setToolTip(
            "Images that could not be processed, and notes from the run. The run goes on past them; "
            "each failed image also has an error line in predictions.jsonl."
        )
        problems_box = QGroupBox("Problems")
        problems_layout = QVBoxLayout(problems_box)
        problems_layout.addWidget(self.problems)
        self.problems_box = problems_box

        self.top_splitter = QSplitter(Qt.Orientation.Horizontal)
        self.top_splitter.addWidget(preview_box)
        self.top_splitter.addWidget(memory_box)
        self.top_splitter.setStretchFactor(0, 1)
        self.top_splitter.setStretchFactor(1, 1)
        self.main_splitter = QSplitter(Qt.Orientation.Vertical)
        self.main_splitter.addWidget(self.top_splitter)
        self.main_splitter.addWidget(problems_box)
        self.main_splitter.setStretchFactor(0, 4)
        self.main_splitter.setStretchFactor(1, 1)
        for splitter in (self.top_splitter, self.main_splitter):
            splitter.setChildrenCollapsible(False)

        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addWidget(setup)
        layout.addLayout(controls)
        layout.addWidget(self.run_message)
        layout.addWidget(self.main_splitter, 1)
        self.setCentralWidget(central)
        self.setStatusBar(QStatusBar())
        self.resize(1280, 820)

        self.run_action = QAction("Run", self, shortcut=QKeySequence("Ctrl+R"), triggered=self.start_run)
        self.cancel_action = QAction(
            "Cancel", self, shortcut=QKeySequence(Qt.Key.Key_Escape), triggered=self.cancel_run
        )
        self.pause_action = QAction(
            "Pause", self, shortcut=QKeySequence("Ctrl+P"), triggered=self.toggle_pause
        )
        for action in (self.run_action, self.cancel_action, self.pause_action):
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            self.addAction(action)

        self.preview_timer = QTimer(self)
        self.preview_timer.setInterval(PREVIEW_INTERVAL_MS)
        self.preview_timer.timeout.connect(self._refresh_previews)
        self.count_timer = QTimer(self, singleShot=True, interval=250)
        self.count_timer.timeout.connect(self._count_images)
        self._set_running(False)

    def _fill_devices(self) -> None:
        self.device_combo.clear()
        try:
            auto = str(resolve_device("auto"))
        except BatchLensError:
            auto = None
        for choice in available_devices():
            label = choice.label
            if choice.name == "auto" and auto:  # say what auto means on this machine
                label = f"{label[:-1]}: {auto})" if label.endswith(")") else f"{label} ({auto})"
            self.device_combo.addItem(label, choice.name)
        if ray_installed():  # the installers ship without Ray: no choice that can only fail
            self.device_combo.addItem("Cluster (Ray): address →", CLUSTER)

    # == wiring ====================================================================================
    def _wire(self) -> None:
        self.run_button.clicked.connect(self.start_run)
        self.pause_button.clicked.connect(self.toggle_pause)
        self.cancel_button.clicked.connect(self.cancel_run)
        self.open_output_button.clicked.connect(self.open_output_folder)
        self.input_browse.clicked.connect(self._browse_input)
        self.output_browse.clicked.connect(self._browse_output)
        self.input_edit.textChanged.connect(self._on_input_changed)
        self.output_edit.textEdited.connect(self._on_output_edited)
        self.recursive_check.toggled.connect(lambda _: self.count_timer.start())
        self.model_picker.model_changed.connect(self._on_model_changed)
        self.device_combo.currentIndexChanged.connect(self._on_device_changed)
        self.cluster_edit.textChanged.connect(self._on_cluster_address_changed)
        self.memory_plot.cache_cleared.connect(self._on_cache_cleared)
        self.thumbnails.activated.connect(self.previews.show_result)

    def _restore(self) -> None:
        s = self.settings
        model = s.model or DEFAULT_MODEL
        if not self.model_picker.set_current_model(model):
            self.model_picker.set_current_model(DEFAULT_MODEL)
        self._previous_model = self.model_picker.current_model_id()
        input_dir = s.input_dir or str(sample_folder(self._previous_model or DEFAULT_MODEL))
        self.input_edit.setText(input_dir)
        if s.output_dir:
            self.output_edit.setText(s.output_dir)
            self._output_is_auto = Path(s.output_dir) == default_output_for(Path(input_dir))
        self.recursive_check.setChecked(s.recursive)
        self.cpu_fallback_check.setChecked(s.cpu_fallback)
        self.speed_combo.setCurrentIndex(max(0, self.speed_combo.findData(s.speed or "standard")))
        if s.cluster:
            self.cluster_edit.setText(s.cluster)
        self.set_device(s.device or "auto")
        if self.memory_plot.probe is None:
            self._on_device_changed()
        if (geometry := s.state("geometry")) is not None:
            self.restoreGeometry(geometry)
        for key, splitter in (("top_splitter", self.top_splitter), ("main_splitter", self.main_splitter)):
            if (state := s.state(key)) is not None:
                splitter.restoreState(state)

    def save_settings(self) -> None:
        s = self.settings
        s.model = self.model_picker.current_model_id()
        s.input_dir = self.input_edit.text().strip() or None
        s.output_dir = self.output_edit.text().strip() or None
        s.device = self.device_name()
        s.recursive = self.recursive_check.isChecked()
        s.cpu_fallback = self.cpu_fallback_check.isChecked()
        s.speed = self.speed_combo.currentData()
        s.cluster = self.cluster_edit.text().strip() or None
        s.set_state("geometry", self.saveGeometry())
        s.set_state("top_splitter", self.top_splitter.saveState())
        s.set_state("main_splitter", self.main_splitter.saveState())
        s.sync()

    def prefill(
        self,
        model: str | None = None,
        input_dir: Path | None = None,
        output_dir: Path | None = None,
        device: str | None = None,
    ) -> None:
        """Set what the command line asked for (`batchlens --model M --input DIR ...`)."""
        if model and not self.model_picker.set_current_model(model):
            self.show_error(f"Unknown model {model!r}: choose one from the list.")
        if input_dir is not None:
            self.input_edit.setText(str(input_dir))
        if output_dir is not None:
            self.output_edit.setText(str(output_dir))
            self._output_is_auto = False
        if device and not self.set_device(device):
            self.show_error(f"Device {device!r} is not available here; using {self.device_name()}.")

    # == settings fields ==============================================================================
    def device_name(self) -> str:
        return self.device_combo.currentData() or "auto"

    def set_device(self, name: str) -> bool:
        index = self.device_combo.findData(name.strip().lower())
        if index < 0 and name.strip().lower() == "cuda":
            index = self.device_combo.findData("cuda:0")
        if index < 0:
            self.device_combo.setCurrentIndex(0)
            return False
        self.device_combo.setCurrentIndex(index)
        return True

    def _on_device_changed(self, *_args) -> None:
        name = self.device_name()
        cluster = name == CLUSTER
        self.cluster_edit.setVisible(cluster)
        try:
            # On a cluster the plot can only show this window's own process; it says so.
            self.memory_plot.set_probe(self.probe_factory("cpu" if cluster else name))
        except BatchLensError as exc:
            self.show_error(str(exc))
        self._show_where()

    def _on_cluster_address_changed(self, _text: str) -> None:
        self._show_where()

    def _show_where(self, worker_report: str = "") -> None:
        if self.device_name() != CLUSTER:
            self.memory_plot.set_where(None)
            return
        address = self.cluster_edit.text().strip() or "auto"
        self.memory_plot.set_where(
            f"<b>The work runs on the Ray cluster ({address})</b>; this plot shows this window's own "
            f"process. {worker_report or 'Each worker reports its memory after every batch.'}"
        )

    def _on_model_changed(self, model_id: str) -> None:
        # Switching between demo models moves the input to the new model's bundled samples too.
        previous = self._previous_model
        self._previous_model = model_id
        if previous and Path(self.input_edit.text()) == sample_folder(previous):
            samples = sample_folder(model_id)
            if samples.is_dir():
                self.input_edit.setText(str(samples))

    def _on_input_changed(self, text: str) -> None:
        if self._output_is_auto and text.strip():
            self.output_edit.setText(str(default_output_for(Path(text.strip()))))
        self.count_timer.start()

    def _on_output_edited(self, _text: str) -> None:
        self._output_is_auto = False
        self.count_timer.start()

    def _browse_input(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of images", self.input_edit.text())
        if folder:
            self.input_edit.setText(folder)

    def _browse_output(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the results", self.output_edit.text())
        if folder:
            self._output_is_auto = False
            self.output_edit.setText(folder)
            self.count_timer.start()

    def _count_images(self) -> None:
        """Count the input's images on a pool thread (a big or slow folder must not freeze the window)."""
        self._count_generation += 1
        generation = self._count_generation
        folder = Path(self.input_edit.text().strip()).expanduser()
        output = (
            Path(self.output_edit.text().strip()).expanduser() if self.output_edit.text().strip() else None
        )
        recursive = self.recursive_check.isChecked()
        reply = self._count_reply
        self.count_label.setText("Counting images…")

        def count() -> None:
            try:
                text = describe_count(folder, recursive, output)
            except OSError as exc:
                text = f"Cannot read this folder: {exc.strerror or exc}."
            reply.counted.emit(generation, text)

        QThreadPool.globalInstance().start(count)

    def _on_counted(self, generation: int, text: str) -> None:
        if generation == self._count_generation:  # an older count finished late: ignore it
            self.count_label.setText(text)

    # == drag and drop a folder =====================================================================
    @staticmethod
    def _dropped_folder(mime) -> Path | None:
        for url in mime.urls() if mime.hasUrls() else []:
            path = Path(url.toLocalFile())
            if url.isLocalFile() and path.is_dir():
                return path
        return None

    def dragEnterEvent(self, event) -> None:
        if self._dropped_folder(event.mimeData()) is not None and not self.is_running():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        folder = self._dropped_folder(event.mimeData())
        if folder is not None and not self.is_running():
            self.input_edit.setText(str(folder))
            event.acceptProposedAction()

    # == the run ===================================================================================
    def is_running(self) -> bool:
        return self.thread is not None

    def build_config(self) -> RunConfig | None:
        """The RunConfig for the current choices, or None (after telling the user what is missing)."""
        model = self.model_picker.current_model_id()
        input_text = self.input_edit.text().strip()
        output_text = self.output_edit.text().strip()
        if not model:
            self.show_error("Choose a model first.")
            return None
        if not input_text:
            self.show_error("Choose the folder of images first (Browse, or drop a folder on the window).")
            return None
        input_dir = Path(input_text).expanduser()
        output_dir = Path(output_text).expanduser() if output_text else default_output_for(input_dir)
        self.output_edit.setText(str(output_dir))
        try:
            inside = output_dir.resolve() != input_dir.resolve() and output_dir.resolve().is_relative_to(
                input_dir.resolve()
            )
        except OSError:
            inside = False
        if inside and self.ask_questions:
            answer = QMessageBox.question(
                self,
                "Output inside the input folder",
                f"The output folder {output_dir} is inside the folder of images {input_dir}. "
                "BatchLens will leave it out of the scan. Write the results there?",
            )
            if answer != QMessageBox.StandardButton.Yes:
                return None
        resume = self.offer_resume(output_dir)
        if resume is None:
            return None
        return RunConfig(
            model=model,
            input_dir=input_dir,
            output_dir=output_dir,
            device="auto" if self.device_name() == CLUSTER else self.device_name(),
            recursive=self.recursive_check.isChecked(),
            resume=resume,
            previews=True,
            model_options=self.model_picker.current_options(),
            cpu_fallback=self.cpu_fallback_check.isChecked(),
            **SPEEDS[self.speed_combo.currentData()][2],
        )

    def offer_resume(self, output_dir: Path) -> bool | None:
        """When the output folder holds an unfinished run, ask: Resume (True), Start over (False) or
        Cancel (None). Without questions (--start, --self-test) resume: it loses nothing."""
        unfinished = unfinished_run(output_dir)
        if unfinished is None:
            return False
        if not self.ask_questions:
            return True
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Unfinished run",
            f"The output folder {output_dir} holds a run that did not finish: {unfinished.ok} image(s) "
            f"done, {unfinished.failed} failed.\n\nResume keeps the finished images, retries the failed "
            "ones and does the rest. Start over replaces its results.",
            QMessageBox.StandardButton.Cancel,
            self,
        )
        resume = box.addButton("Resume", QMessageBox.ButtonRole.AcceptRole)
        restart = box.addButton("Start over", QMessageBox.ButtonRole.DestructiveRole)
        box.setDefaultButton(resume)
        box.exec()
        clicked = box.clickedButton()
        return True if clicked is resume else False if clicked is restart else None

    def start_run(self) -> bool:
        if self.is_running():
            return False
        picker = self.model_picker
        if not self.model_sources.ready(picker.current_model_id(), picker.current_options(), self.start_run):
            return False  # the user declined a pickle file, or the weights download first and then start
        config = self.build_config()
        if config is None:
            return False
        self.save_settings()
        self.last_summary = None
        self.last_error = None
        self._latest = None
        self.previews.clear("Loading the model…")
        self.thumbnails.clear()
        self.problems.clear()
        self.progress.setRange(0, 0)  # busy until the engine says how many images there are
        self.rate_label.setText(" ")
        self.run_message.setText(" ")
        self.statusBar().showMessage(f"Starting {config.model} on {config.input_dir}…")
        self._paused_at = None
        self._paused_total = 0.0

        runner = None
        if self.device_name() == CLUSTER:
            runner = ClusterRunner(config, ClusterConfig(self.cluster_edit.text().strip() or "auto"))
        worker = RunWorker(config, runner=runner)
        worker.yielded.connect(self._on_event)
        worker.errored.connect(self._on_errored)
        # Bound methods of the window (not lambdas), so Qt queues them onto the GUI thread whichever
        # thread emits.
        worker.paused.connect(self._on_paused)
        worker.resumed.connect(self._on_resumed)
        self.worker = worker
        self.worker_created.emit(worker)  # before the thread starts: a hook for extensions and tests
        self.thread = start_in_thread(worker)
        self.thread.finished.connect(self._on_thread_finished)
        self._set_running(True)
        self.preview_timer.start()
        self.memory_plot.add_marker("run_start", f"Run started: {config.model}")
        return True

    def toggle_pause(self) -> None:
        if self.worker is None:
            return
        if self.worker.is_paused:
            self.worker.resume()
        else:
            self.worker.pause()

    def cancel_run(self) -> None:
        if self.worker is None:
            return
        self.worker.cancel()
        self.cancel_button.setEnabled(False)
        self.pause_button.setEnabled(False)
        self.statusBar().showMessage("Cancelling after the current image…")

    @Slot()
    def _on_paused(self) -> None:
        self._show_paused(True)

    @Slot()
    def _on_resumed(self) -> None:
        self._show_paused(False)

    def _show_paused(self, paused: bool) -> None:
        now = time.monotonic()
        if paused:
            self._paused_at = now
        elif self._paused_at is not None:
            self._paused_total += now - self._paused_at
            self._paused_at = None
        self.pause_button.setText("Resume" if paused else "Pause")
        self.pause_button.setToolTip(
            "Go on with the run (Ctrl+P)." if paused else "Pause after the current image (Ctrl+P)."
        )
        self.statusBar().showMessage("Paused. Press Resume to go on." if paused else "Running…")

    def _on_event(self, event) -> None:
        if isinstance(event, ImageResult):
            self._on_image(event)
            if isinstance(self.worker and self.worker.runner, ClusterRunner):
                self._show_where(
                    f"Latest worker report: {format_bytes(event.memory.allocated)} in use, "
                    f"peak {format_bytes(event.memory.peak)}."
                )
        elif isinstance(event, RunStarted):
            self._run_t0 = time.monotonic()
            self.progress.setRange(0, max(event.total, 1))
            self.progress.setValue(0)
            memory = "RAM" if event.memory_kind == "cpu" else f"{event.memory_kind.upper()} memory"
            if isinstance(self.worker and self.worker.runner, ClusterRunner):
                memory = "this window's own process; the workers report theirs above it"
            text = f"Running {event.model} ({event.task}) on {event.device} over {event.total} image(s)"
            if event.already_done:
                text += f", {event.already_done} already done"
            self.statusBar().showMessage(f"{text}; the plot shows {memory}.")
            self.previews.clear("Waiting for the first image…")
        elif isinstance(event, RunNote):
            if event.level != "info":  # an info note (workers starting, batch size chosen) is no problem
                self._add_problem("(run)", event.message, warning=event.level != "error")
            self.statusBar().showMessage(event.message)
            if event.kind != "note":  # memory events (out-of-memory recovery, a leak...) mark the plot
                self.memory_plot.add_marker(event.kind, event.message)
        elif isinstance(event, RunFinished):
            self._on_finished(event)

    def _on_image(self, event: ImageResult) -> None:
        # Per image only bookkeeping; progress and previews are drawn by the refresh timer, so a fast
        # model costs the GUI thread almost nothing per image.
        self._latest = event
        self.thumbnails.add(event)
        if not event.ok:
            self._add_problem(event.image, event.error or "failed")
            self.memory_plot.add_marker("failure", f"{event.image}: {event.error}")

    def _on_finished(self, event: RunFinished) -> None:
        from batchlens.cli import describe_summary

        self.last_summary = event.summary
        if not event.cancelled:
            self.progress.setValue(self.progress.maximum())
        text = describe_summary(event.summary)
        if event.cancelled:
            text += " Cancelled: the images not reached are not in predictions.jsonl yet."
        self.run_message.setText(text)
        self.statusBar().showMessage("Cancelled." if event.cancelled else "Finished.")
        self.memory_plot.add_marker("run_end", "Run cancelled" if event.cancelled else "Run finished")

    def _on_errored(self, message: str) -> None:
        self.last_error = str(message)
        self.show_error(str(message))
        self.memory_plot.add_marker("run_end", "Run stopped")

    def _on_thread_finished(self) -> None:
        self.preview_timer.stop()
        self._refresh_previews()
        if self.progress.maximum() == 0:  # stopped before the engine counted the images: not busy now
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
        if self.worker is not None:
            self.worker.deleteLater()
        if self.thread is not None:
            self.thread.deleteLater()
        self.worker = None
        self.thread = None
        self._set_running(False)
        self.run_finished.emit(self.last_summary)

    def _refresh_previews(self) -> None:
        """Draw the newest result: progress, speed, previews, thumbnails (on a timer, ~12 per second)."""
        event = self._latest
        if event is None or event is self.previews.shown:
            return
        self.progress.setValue(event.index)
        elapsed = time.monotonic() - self._run_t0 - self._paused_total
        if self._paused_at is not None:
            elapsed -= time.monotonic() - self._paused_at
        if elapsed > 0:
            rate = event.index / elapsed
            left = (event.total - event.index) / rate if rate > 0 else 0
            self.rate_label.setText(f"{rate:.1f} images/s · {format_duration(left)} left")
        self.previews.show_result(event)
        self.thumbnails.refresh()

    def _add_problem(self, where: str, message: str, warning: bool = False) -> None:
        item = QTreeWidgetItem([where, message])
        item.setToolTip(1, message)
        if warning:
            item.setText(0, f"{where} (note)")
        self.problems.addTopLevelItem(item)
        self.problems_box.setTitle(f"Problems ({self.problems.topLevelItemCount()})")

    def show_error(self, message: str) -> None:
        self.run_message.setText(f"<span style='color:#e03131'><b>{message}</b></span>")
        self.statusBar().showMessage(message)

    def _set_running(self, running: bool) -> None:
        self.setup_box.setEnabled(not running)
        self.run_button.setEnabled(not running)
        self.run_action.setEnabled(not running)
        self.pause_button.setEnabled(running)
        self.cancel_button.setEnabled(running)
        self.pause_button.setText("Pause")
        output = self.output_edit.text().strip()
        self.open_output_button.setEnabled(bool(output) and Path(output).is_dir())
        if not running and self.last_summary is None and self.last_error is None:
            self.problems_box.setTitle("Problems")

    def open_output_folder(self) -> None:
        folder = Path(self.output_edit.text().strip()).expanduser()
        if folder.is_dir():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))

    def _on_cache_cleared(self, result: ClearResult) -> None:
        message = result.message()
        self.statusBar().showMessage(message)
        self.memory_plot.readout.setToolTip(message)

    # == closing ===================================================================================
    def stop_and_wait(self, wait_ms: int = CLOSE_WAIT_MS) -> bool:
        """Cancel a run and wait for its thread; True when no run thread is left running."""
        if self.thread is None:
            return True
        self.worker.cancel()
        self.statusBar().showMessage("Stopping the run after the current image…")
        self.statusBar().repaint()  # the wait below blocks the event loop: paint the message now
        return self.thread.wait(wait_ms)

    def closeEvent(self, event) -> None:
        stopped = self.stop_and_wait()
        if not stopped:
            # The current image is still in the model; every finished image is already on disk.
            log.warning(
                "The run did not stop within %.0f s; leaving the current image unfinished.",
                CLOSE_WAIT_MS / 1000,
            )
        self.preview_timer.stop()
        self.memory_plot.timer.stop()
        self.save_settings()
        event.accept()
