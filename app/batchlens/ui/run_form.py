"""The "What to run" form: model, device, input and output folders, speed, CPU fallback.

The form owns its own small rules (the output folder follows the input until the user picks one; the
input's images are counted off the GUI thread) and tells the window what changed through signals.
The window reads the choices through the getters below and never reaches into the form's widgets.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Qt, QThreadPool, QTimer, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from batchlens.core.cluster import ray_installed
from batchlens.core.errors import BatchLensError
from batchlens.core.inputs.images import ScanStats, scan_images
from batchlens.core.machine.devices import available_devices, resolve_device
from batchlens.core.resources import resource_path, sample_folder
from batchlens.core.run.config import EXACT_SETTINGS
from batchlens.ui.model_picker import ModelPicker
from batchlens.ui.settings import Settings
from batchlens.ui.start_folder import start_folder

DEFAULT_MODEL = "demo-shapes"
CLUSTER = "cluster"  # the device picker's Ray cluster choice (core/cluster.py); its address is beside it
NOT_COUNTED = -1  # image_count() before the count is known, or when the folder cannot be read

#: The window's speed choices: (label, tooltip, RunConfig settings). Standard is the engine's own
#: defaults, as on the command line; Exact is `batchlens run --exact`; Fastest adds --fast-decode and,
#: on a GPU, FASTEST_ON_GPU. docs/performance.md and docs/gpu.md.
SPEEDS = {
    "exact": (
        "Exact",
        "One image at a time, decoded in the loop: results exactly as a plain PyTorch loop gives them, "
        "and the least memory.",
        dict(EXACT_SETTINGS),
    ),
    "standard": (
        "Standard",
        "Several images per forward pass (the number is measured on the run's own images, starting "
        "with one) while the next images are decoded in the background. Results differ from Exact "
        "only by float rounding; more memory.",
        {},  # RunConfig's defaults
    ),
    "fastest": (
        "Fastest",
        "As Standard, and classification models decode large JPEG photos at a reduced size when the "
        "model shrinks them anyway; on a GPU also half precision (fp16), channels-last layout and JPEG "
        "decoding on the GPU. Much less work per image; scores can differ slightly.",
        {"fast_decode": True},
    ),
}
FASTEST_ON_GPU = {"precision": "fp16", "channels_last": True, "gpu_decode": True}
#: Standard on a GPU: half precision only where the first batch shows it within tolerance of fp32
#: (core/run/precision.py); not yet checked on a GPU
STANDARD_ON_GPU = {"precision": "auto"}
OLD_SPEEDS = {"faster": "standard"}  # remembered by earlier versions


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


def count_images(folder: Path, recursive: bool, exclude: Path | None) -> tuple[int, str]:
    """(number of images, a sentence for the user); NOT_COUNTED when there is no folder to count."""
    if not str(folder).strip():
        return NOT_COUNTED, "Choose a folder of images."
    if not folder.is_dir():
        return NOT_COUNTED, (
            "This folder does not exist." if not folder.exists() else "This is a file, not a folder."
        )
    stats = ScanStats()
    try:
        count = sum(1 for _ in scan_images(folder, recursive, stats, exclude=exclude))
    except BatchLensError as exc:  # the folder cannot be listed: say so, not "0 images found"
        return NOT_COUNTED, str(exc)
    text = f"{count} image{'s' if count != 1 else ''} found"
    if stats.skipped:
        text += f" ({stats.skipped} other file{'s' if stats.skipped != 1 else ''} will be skipped)"
    return count, text + "."


def dropped_folder(mime) -> Path | None:
    """The first local folder in a drag's data (a folder dropped on the window becomes the input)."""
    for url in mime.urls() if mime.hasUrls() else []:
        path = Path(url.toLocalFile())
        if url.isLocalFile() and path.is_dir():
            return path
    return None


class _CountReply(QObject):
    counted = Signal(int, int, str)  # generation, count, text


class RunForm(QGroupBox):
    """The run's choices. Signals say what changed; getters give the current choices."""

    model_changed = Signal(str)  # a model id
    device_changed = Signal(str)  # a device name, or CLUSTER
    cluster_changed = Signal(str)  # the Ray cluster address
    input_changed = Signal()  # the input folder, subfolders or output folder changed (not yet counted)
    counted = Signal(int, str)  # images found (NOT_COUNTED: no folder to count), the sentence shown

    def __init__(self, parent: QWidget | None = None, find_devices: bool = True):
        """`find_devices`: list the GPUs now (this imports torch); False lists "auto" and the CPU
        until `fill_devices()` is called once the engine is loaded (ui/engine.py)."""
        super().__init__("What to run", parent)
        self._devices_known = False
        self._wanted_device: str | None = None  # a saved or asked-for GPU, chosen once they are known
        self._output_is_auto = True
        self._previous_model: str | None = None
        self._count = NOT_COUNTED
        self._count_generation = 0
        self._count_reply = _CountReply(self)
        self._count_reply.counted.connect(self._on_counted)
        self.count_pool = QThreadPool(self)  # its own pool, so closing the window can wait for a count
        self._shut_down = False  # the window closed: no new count (another window's activation)
        self.count_pool.setMaxThreadCount(1)
        self._build_model_row(find_devices)
        self._build_folder_rows()
        self._build_speed()
        self._build_grid()
        self._show_output_mode()
        self.count_timer = QTimer(self, singleShot=True, interval=250)
        self.count_timer.timeout.connect(self.count_now)
        self._wire_signals()

    # -- built once, by __init__ ------------------------------------------------------------------
    def _build_model_row(self, find_devices: bool) -> None:
        """The model picker, the device list and the cluster address beside it."""
        self.model_picker = ModelPicker()
        self.device_combo = QComboBox()
        self.device_combo.setToolTip(
            "Where the model runs. Auto picks a CUDA GPU, then Apple MPS, then Intel XPU, then the CPU."
        )
        if find_devices:
            self.fill_devices()
        else:
            self._fill_before_engine()
        self.cluster_edit = QLineEdit("auto")
        self.cluster_edit.setPlaceholderText("auto, local, HOST:PORT or ray://HOST:PORT")
        self.cluster_edit.setToolTip(
            "The Ray cluster to run on: auto (RAY_ADDRESS, or the one `ray start` started on this machine, "
            "else a new one here), local (a new one here), HOST:PORT, or ray://HOST:PORT (Ray Client). "
            "A cluster with tokens: auto finds ~/.ray/auth_token; for an address, start BatchLens with "
            "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN set (`ray get-auth-token` on the head prints it). Needs "
            'the cluster extra: pip install "batchlens[cluster]". The folders must be on storage every node '
            "sees."
        )
        self.cluster_edit.setVisible(False)

    def _build_folder_rows(self) -> None:
        """The input folder, its subfolders and image count, and the output folder that follows it."""
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
        self.output_mode = QLabel()  # says whether the output follows the input or was chosen
        self.output_mode.setTextFormat(Qt.TextFormat.RichText)
        self.output_mode.setToolTip(
            "Until you choose an output folder yourself, it follows the input: a folder named "
            "INPUT-batchlens beside the input folder."
        )
        self.output_mode.linkActivated.connect(lambda _link: self.follow_input())

    def _build_speed(self) -> None:
        """How hard to push (SPEEDS), and the CPU fallback."""
        self.speed_combo = QComboBox()
        for key, (label, tip, _) in SPEEDS.items():
            self.speed_combo.addItem(label, key)
            self.speed_combo.setItemData(self.speed_combo.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.speed_combo.setToolTip(
            "How hard to push: Exact (one image at a time, as a plain loop), Standard (batches, decoding "
            "ahead) or Fastest (also reduced-size JPEG decoding, and half precision and GPU decoding on "
            "a GPU). Hover a choice for details."
        )
        self.cpu_fallback_check = QCheckBox("Fall back to CPU")
        self.cpu_fallback_check.setToolTip(
            "When an image runs out of GPU memory even after retrying, smaller batches and tiles, run "
            "that one image on the CPU (slower) instead of giving it an error line."
        )

    def _build_grid(self) -> None:
        grid = QGridLayout(self)
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
        grid.addWidget(self.output_mode, 4, 1, 1, 2)
        grid.setColumnStretch(1, 1)

    def _wire_signals(self) -> None:
        self.input_browse.clicked.connect(self._browse_input)
        self.output_browse.clicked.connect(self._browse_output)
        self.input_edit.textChanged.connect(self._on_input_changed)
        self.output_edit.textEdited.connect(self._on_output_edited)
        self.recursive_check.toggled.connect(lambda _: self._inputs_changed())
        self.model_picker.model_changed.connect(self._on_model_changed)
        self.device_combo.currentIndexChanged.connect(self._on_device_changed)
        self.cluster_edit.textChanged.connect(self.cluster_changed)
        # Back from the file manager (images copied in, a folder made): count again if there was nothing.
        QGuiApplication.instance().applicationStateChanged.connect(self._on_application_state)

    # -- devices ----------------------------------------------------------------------------------
    def _fill_before_engine(self) -> None:
        """Before PyTorch is loaded: "auto" and the processor, which need no torch to name."""
        self.device_combo.clear()
        self.device_combo.addItem("Auto (best available: looking for GPUs…)", "auto")
        self.device_combo.addItem("cpu — processor (RAM)", "cpu")
        if ray_installed():
            self.device_combo.addItem("Cluster (Ray): address →", CLUSTER)

    def fill_devices(self) -> str | None:
        """List every device (imports torch). Returns the device that was asked for before the list was
        known and is not here (None when there was none, or it is here)."""
        wanted = self._wanted_device or (self.device_name() if self.device_combo.count() else None)
        self._wanted_device = None
        first_fill = not self._devices_known
        self._devices_known = True
        self.device_combo.blockSignals(True)
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
        self.device_combo.blockSignals(False)
        if wanted is not None and not self.set_device(wanted):
            return wanted if first_fill else None
        return None

    def device_name(self) -> str:
        return self.device_combo.currentData() or "auto"

    def set_device(self, name: str) -> bool:
        index = self.device_combo.findData(name.strip().lower())
        if index < 0 and name.strip().lower() == "cuda":
            index = self.device_combo.findData("cuda:0")
        if index < 0 and not self._devices_known:  # a GPU, before they are listed: chosen once they are
            self._wanted_device = name.strip().lower()
            return True
        if index < 0:
            self.device_combo.setCurrentIndex(0)
            return False
        self.device_combo.setCurrentIndex(index)
        return True

    def cluster_address(self) -> str:
        return self.cluster_edit.text().strip() or "auto"

    def _on_device_changed(self, *_args) -> None:
        self.cluster_edit.setVisible(self.device_name() == CLUSTER)
        self.device_changed.emit(self.device_name())

    # -- the choices --------------------------------------------------------------------------------
    def model_id(self) -> str | None:
        return self.model_picker.current_model_id()

    def model_options(self) -> dict:
        return self.model_picker.current_options()

    def input_text(self) -> str:
        return self.input_edit.text().strip()

    def set_input(self, folder: Path | str) -> None:
        self.input_edit.setText(str(folder))

    def output_text(self) -> str:
        return self.output_edit.text().strip()

    def set_output(self, folder: Path | str, chosen: bool = True) -> None:
        """Set the output folder; `chosen` (the user's own choice) stops it following the input."""
        if chosen:
            self._output_is_auto = False
        self.output_edit.setText(str(folder))
        self._show_output_mode()
        self._inputs_changed()

    def output_follows_input(self) -> bool:
        return self._output_is_auto

    def follow_input(self) -> None:
        """Let the output folder follow the input folder again."""
        self._output_is_auto = True
        if self.input_text():
            self.output_edit.setText(str(default_output_for(Path(self.input_text()))))
        self._show_output_mode()
        self._inputs_changed()

    def _show_output_mode(self) -> None:
        if self._output_is_auto:
            self.output_mode.setText("<small>(follows the input folder)</small>")
        else:
            self.output_mode.setText(
                "<small>(chosen by you · <a href='follow'>follow the input folder instead</a>)</small>"
            )

    def recursive(self) -> bool:
        return self.recursive_check.isChecked()

    def cpu_fallback(self) -> bool:
        return self.cpu_fallback_check.isChecked()

    def speed(self) -> str:
        return self.speed_combo.currentData()

    def speed_settings(self, device_type: str = "cpu") -> dict:
        """RunConfig settings for the chosen speed on a device of `device_type` ("cuda", "cpu"...)."""
        settings = dict(SPEEDS[self.speed()][2])
        if self.speed() == "fastest" and device_type == "cuda":
            settings.update(FASTEST_ON_GPU)
        elif self.speed() == "standard" and device_type == "cuda":
            settings.update(STANDARD_ON_GPU)
        return settings

    def image_count(self) -> int:
        """The images found in the input by the latest count (NOT_COUNTED before, or without a folder)."""
        return self._count

    # -- remembered choices -------------------------------------------------------------------------
    def restore(self, s: Settings) -> None:
        model = s.model or DEFAULT_MODEL
        if not self.model_picker.set_current_model(model):
            self.model_picker.set_current_model(DEFAULT_MODEL)
        self._previous_model = self.model_id()
        input_dir = s.input_dir or str(sample_folder(self._previous_model or DEFAULT_MODEL))
        self.input_edit.setText(input_dir)
        if s.output_dir:
            self.output_edit.setText(s.output_dir)
            self._output_is_auto = Path(s.output_dir) == default_output_for(Path(input_dir))
            self._show_output_mode()
        self.recursive_check.setChecked(s.recursive)
        self.cpu_fallback_check.setChecked(s.cpu_fallback)
        speed = OLD_SPEEDS.get(s.speed, s.speed) or "standard"
        self.speed_combo.setCurrentIndex(max(0, self.speed_combo.findData(speed)))
        if s.cluster:
            self.cluster_edit.setText(s.cluster)
        self.set_device(s.device or "auto")

    def save(self, s: Settings) -> None:
        s.model = self.model_id()
        s.input_dir = self.input_text() or None
        s.output_dir = self.output_text() or None
        s.device = self.device_name()
        s.recursive = self.recursive()
        s.cpu_fallback = self.cpu_fallback()
        s.speed = self.speed()
        s.cluster = self.cluster_edit.text().strip() or None

    # -- reactions ----------------------------------------------------------------------------------
    def _on_model_changed(self, model_id: str) -> None:
        # Switching between demo models moves the input to the new model's bundled samples too.
        previous = self._previous_model
        self._previous_model = model_id
        if previous and Path(self.input_edit.text()) == sample_folder(previous):
            samples = sample_folder(model_id)
            if samples.is_dir():
                self.input_edit.setText(str(samples))
        self.model_changed.emit(model_id)

    def _on_input_changed(self, text: str) -> None:
        if self._output_is_auto and text.strip():
            self.output_edit.setText(str(default_output_for(Path(text.strip()))))
        self._inputs_changed()

    def _on_output_edited(self, text: str) -> None:
        # Emptied: follow the input again (Run uses that folder for an empty field anyway); the field
        # is not refilled under the user's fingers.
        self._output_is_auto = not text.strip()
        self._show_output_mode()
        self._inputs_changed()

    def _inputs_changed(self) -> None:
        self.count_timer.start()
        self.input_changed.emit()

    def _browse_input(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of images", start_folder(self))
        if folder:
            self.input_edit.setText(folder)

    def _browse_output(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Folder for the results", start_folder(self, output_first=True)
        )
        if folder:
            self.set_output(folder)

    # -- counting the input's images ------------------------------------------------------------------
    def count_now(self) -> None:
        """Count the input's images on a pool thread (a big or slow folder must not freeze the window)."""
        self.count_timer.stop()
        if self._shut_down:
            return
        self._count_generation += 1
        generation = self._count_generation
        folder = Path(self.input_text()).expanduser()
        output = Path(self.output_text()).expanduser() if self.output_text() else None
        recursive = self.recursive()
        reply = self._count_reply
        self._count = NOT_COUNTED
        self.count_label.setText("Counting images…")

        def count() -> None:
            try:
                number, text = count_images(folder, recursive, output)
            except OSError as exc:
                number, text = NOT_COUNTED, f"Cannot read this folder: {exc.strerror or exc}."
            reply.counted.emit(generation, number, text)

        self.count_pool.start(count)

    def _on_application_state(self, state: Qt.ApplicationState) -> None:
        if self._shut_down:  # a closed window's form hears the app become active for another window
            return
        if state == Qt.ApplicationState.ApplicationActive and self.isEnabled() and self._count <= 0:
            self.count_now()

    def shutdown(self, wait_ms: int = 5000) -> None:
        """Drop counts not started yet and wait for the one under way (the window is closing)."""
        self._shut_down = True
        self.count_timer.stop()
        self.count_pool.clear()
        self.count_pool.waitForDone(wait_ms)

    def _on_counted(self, generation: int, number: int, text: str) -> None:
        if generation == self._count_generation:  # an older count finished late: ignore it
            self._count = number
            self.count_label.setText(text)
            self.counted.emit(number, text)
