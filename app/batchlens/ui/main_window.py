"""The BatchLens main window: it composes the widgets and connects them to the run's worker.

The widgets each own their part: RunForm (what to run), RunControls (run, pause, cancel, progress,
the message line), PreviewPanel and ThumbnailStrip, MemoryPlot and ProblemsPanel. The engine runs in
RunWorker on its own QThread; the window only receives its signals. Previews are refreshed from the
latest result on a short timer, so a fast model cannot flood the GUI thread; the memory plot samples
its probe on its own timer whether or not a run is going.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, QThread, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QGroupBox,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QSplitter,
    QStackedWidget,
    QStatusBar,
    QVBoxLayout,
    QWidget,
)

from batchlens.core.cluster import ClusterConfig, ClusterRunner
from batchlens.core.config import RunConfig
from batchlens.core.devices import resolve_device
from batchlens.core.errors import BatchLensError
from batchlens.core.events import ImageResult, RunFinished, RunNote, RunStarted
from batchlens.core.manifest import (
    existing_run,
    existing_run_question,
    free_folder_beside,
    resume_refusal_before_load,
)
from batchlens.core.memory import ClearResult, MemoryProbe, format_bytes, probe_for
from batchlens.core.model_request import model_request
from batchlens.core.run_speed import RunClock, format_rate, images_per_second, seconds_left
from batchlens.core.run_text import describe_start, describe_summary
from batchlens.ui.memory_plot import MemoryPlot
from batchlens.ui.menus import add_menus
from batchlens.ui.model_sources import ModelSources
from batchlens.ui.previews import PreviewPanel, ThumbnailStrip
from batchlens.ui.problems_panel import ProblemsPanel
from batchlens.ui.run_controls import RunControls, format_duration
from batchlens.ui.run_form import CLUSTER, RunForm, default_output_for
from batchlens.ui.settings import Settings
from batchlens.ui.wording import for_window
from batchlens.ui.worker import RunWorker, start_in_thread

__all__ = ["CLUSTER", "MainWindow", "default_output_for", "probe_for_name"]

log = logging.getLogger(__name__)

CLOSE_WAIT_MS = 5000  # how long closing the window waits for the current image to finish
PREVIEW_INTERVAL_MS = 80


def probe_for_name(name: str) -> MemoryProbe:
    return probe_for(resolve_device(name))


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
        self.clock = RunClock(time.monotonic)  # the window's own clock for the live images/s

        self.setWindowTitle("BatchLens")
        self.setAcceptDrops(True)
        self._build()
        self._wire()
        self._restore()

    # == layout ====================================================================================
    def _build(self) -> None:
        self.form = RunForm()
        self.model_picker = self.form.model_picker
        self.model_sources = ModelSources(self)  # weights download, "Use weights file…", pickle trust
        self.controls = RunControls()

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

        self.preview_box = preview_box
        self.memory_plot = MemoryPlot()
        memory_box = QGroupBox("Memory")
        self.memory_box = memory_box
        memory_layout = QVBoxLayout(memory_box)
        memory_layout.addWidget(self.memory_plot)

        self.problems = ProblemsPanel()

        self.top_splitter = QSplitter(Qt.Orientation.Horizontal)
        self.top_splitter.addWidget(preview_box)
        self.top_splitter.addWidget(memory_box)
        self.top_splitter.setStretchFactor(0, 1)
        self.top_splitter.setStretchFactor(1, 1)
        self.main_splitter = QSplitter(Qt.Orientation.Vertical)
        self.main_splitter.addWidget(self.top_splitter)
        self.main_splitter.addWidget(self.problems)
        self.main_splitter.setStretchFactor(0, 4)
        self.main_splitter.setStretchFactor(1, 1)
        for splitter in (self.top_splitter, self.main_splitter):
            splitter.setChildrenCollapsible(False)

        self.run_screen = QWidget()
        layout = QVBoxLayout(self.run_screen)
        layout.addWidget(self.form)
        layout.addWidget(self.controls)
        layout.addWidget(self.main_splitter, 1)
        self.pages = QStackedWidget()  # the run screen, and the results browser once opened
        self.pages.addWidget(self.run_screen)
        self.results_browser = None  # made on first use: it starts thumbnail threads
        self.show_results_after_run = True
        self.setCentralWidget(self.pages)
        add_menus(self)
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
        self._set_running(False)

    # == wiring ====================================================================================
    def _wire(self) -> None:
        self.controls.run_clicked.connect(self.start_run)
        self.controls.pause_clicked.connect(self.toggle_pause)
        self.controls.cancel_clicked.connect(self.cancel_run)
        self.controls.open_output_clicked.connect(self.open_output_folder)
        self.form.device_changed.connect(self._on_device_changed)
        self.form.model_changed.connect(lambda _model: self._choices_changed(model=True))
        self.form.input_changed.connect(lambda: self._choices_changed(model=False))
        self.form.counted.connect(self._on_counted)
        self.form.cluster_changed.connect(lambda _address: self._show_where())
        self.memory_plot.cache_cleared.connect(self._on_cache_cleared)
        self.thumbnails.activated.connect(self.previews.show_result)

    def _restore(self) -> None:
        s = self.settings
        self.form.restore(s)
        if self.memory_plot.probe is None:
            self._on_device_changed()
        if (geometry := s.state("geometry")) is not None:
            self.restoreGeometry(geometry)
        for key, splitter in (("top_splitter", self.top_splitter), ("main_splitter", self.main_splitter)):
            if (state := s.state(key)) is not None:
                splitter.restoreState(state)

    def save_settings(self) -> None:
        s = self.settings
        self.form.save(s)
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
        errors = []
        if model and not self.model_picker.set_current_model(model):
            errors.append(f"Unknown model {model!r}: choose one from the list.")
        if input_dir is not None:
            self.form.set_input(input_dir)
        if output_dir is not None:
            self.form.set_output(output_dir)
        if device and not self.set_device(device):
            errors.append(f"Device {device!r} is not available here; using {self.device_name()}.")
        if errors:  # after the changes above, which clear older messages
            self.show_error(" ".join(errors))

    # == the device and the memory plot ==============================================================
    def device_name(self) -> str:
        return self.form.device_name()

    def set_device(self, name: str) -> bool:
        return self.form.set_device(name)

    def _on_device_changed(self, *_args) -> None:
        name = self.device_name()
        try:
            # On a cluster the plot can only show this window's own process; it says so.
            self.memory_plot.set_probe(self.probe_factory("cpu" if name == CLUSTER else name))
        except BatchLensError as exc:
            self.show_error(str(exc))
        self._show_where()

    def _show_where(self, worker_report: str = "") -> None:
        if self.device_name() != CLUSTER:
            self.memory_plot.set_where(None)
            return
        report = worker_report or "Each worker reports its memory after every batch."
        self.memory_plot.set_where(
            f"<b>The work runs on the Ray cluster ({self.form.cluster_address()})</b>; this plot shows "
            f"this window's own process. {report}"
        )

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
            self.form.set_input(folder)
            event.acceptProposedAction()

    # == the run ===================================================================================
    def is_running(self) -> bool:
        return self.thread is not None

    def build_config(self) -> RunConfig | None:
        """The RunConfig for the current choices, or None (after telling the user what is missing)."""
        form = self.form
        model = form.model_id()
        input_text = form.input_text()
        output_text = form.output_text()
        if not model:
            self.show_error("Choose a model first.")
            return None
        if not input_text:
            self.show_error("Choose the folder of images first (Browse, or drop a folder on the window).")
            return None
        input_dir = Path(input_text).expanduser()
        output_dir = Path(output_text).expanduser() if output_text else default_output_for(input_dir)
        if output_text != str(output_dir):
            form.set_output(output_dir, chosen=False)
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
        choice = self.choose_for_existing_run(output_dir, model, input_dir)
        if choice is None:
            return None
        mode, output_dir = choice
        return RunConfig(
            model=model,
            input_dir=input_dir,
            output_dir=output_dir,
            device="auto" if self.device_name() == CLUSTER else self.device_name(),
            recursive=form.recursive(),
            resume=mode == "resume",
            overwrite=mode == "overwrite",
            previews=True,
            model_options=model_request(form.model_options()),
            cpu_fallback=form.cpu_fallback(),
            **form.speed_settings(),
        )

    def choose_for_existing_run(
        self, output_dir: Path, model: str, input_dir: Path
    ) -> tuple[str, Path] | None:
        """When the output folder already holds a run, ask (core/manifest.py has the words): Another
        folder (the default, a new one beside it), Resume (off when the earlier run is of another model
        or input folder), Overwrite, or Cancel (None). Returns ("plain" | "resume" | "overwrite",
        folder). Without questions (--start, --self-test): resume when allowed, else another folder."""
        earlier = existing_run(output_dir)
        if earlier is None:
            return "plain", output_dir
        refusal = resume_refusal_before_load(output_dir, model, input_dir)
        free = free_folder_beside(output_dir)
        if not self.ask_questions:
            return ("resume", output_dir) if refusal is None else self._use_output(free)
        text = existing_run_question(earlier, output_dir, refusal, free)
        title, cancel = "The output folder holds a run", QMessageBox.StandardButton.Cancel
        box = QMessageBox(QMessageBox.Icon.Question, title, text, cancel, self)
        another = box.addButton("Another folder", QMessageBox.ButtonRole.AcceptRole)
        resume = box.addButton("Resume", QMessageBox.ButtonRole.YesRole)
        overwrite = box.addButton("Overwrite", QMessageBox.ButtonRole.DestructiveRole)
        resume.setEnabled(refusal is None)
        box.setDefaultButton(another)
        box.exec()
        clicked = box.clickedButton()
        if clicked is another:
            return self._use_output(free)
        if clicked in (resume, overwrite):
            return ("resume" if clicked is resume else "overwrite"), output_dir
        return None

    def _use_output(self, folder: Path) -> tuple[str, Path]:
        self.form.set_output(folder, chosen=True)
        return "plain", folder

    def run_blocker(self) -> str | None:
        """Why Run cannot start now, in plain words; None when it can."""
        form = self.form
        info = self.model_picker.current_model()
        if info is None:
            return "choose a model."
        if info.source == "file" and not Path(info.id).is_file():
            return f"the model file {info.id} is not there any more."
        if not form.input_text():
            return "choose the folder of images (Browse, or drop a folder on the window)."
        folder = Path(form.input_text()).expanduser()
        if not folder.exists():
            return f"the input folder {folder} does not exist."
        if not folder.is_dir():
            return f"{folder} is a file, not a folder of images."
        if form.image_count() == 0:
            hint = "" if form.recursive() else " (tick Include subfolders to look inside its folders)"
            return f"there are no images in {folder}{hint}."
        return None

    def _update_blocker(self) -> None:
        self.controls.set_blocked(self.run_blocker())

    def _choices_changed(self, model: bool) -> None:
        """A new model or input makes the last run's messages, problems and previews stale."""
        if self.is_running():
            return
        self.last_summary = None
        self.last_error = None
        self.controls.show_message("")
        self.controls.set_rate("")
        self.problems.clear()
        if model or self._latest is not None:
            self._latest = None
            self.previews.clear()
            self.thumbnails.clear()
        self._update_blocker()

    def _on_counted(self, count: int, _text: str) -> None:
        if not self.is_running():
            self.controls.set_total(max(count, 0))  # "0 / 32 images" before a run, the real total
        self._update_blocker()

    def start_run(self) -> bool:
        if self.is_running():
            return False
        form = self.form
        blocker = self.run_blocker()
        if blocker is not None:
            self.show_error(f"Nothing to run: {blocker}")
            return False
        if not self.model_sources.ready(form.model_id(), form.model_options(), self.start_run):
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
        self.controls.set_busy()  # busy until the engine says how many images there are
        self.controls.set_rate("")
        self.controls.show_message("")
        self.statusBar().showMessage(f"Starting {config.model} on {config.input_dir}…")
        self.memory_plot.set_save_folder(config.output_dir)

        runner = None
        if self.device_name() == CLUSTER:
            runner = ClusterRunner(config, ClusterConfig(form.cluster_address()))
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
        self.controls.set_cancelling()
        self.controls.set_rate("")  # no speed or time left for a run that is stopping
        self.clock.pause()
        self.statusBar().showMessage("Cancelling after the current image…")

    @Slot()
    def _on_paused(self) -> None:
        self._show_paused(True)

    @Slot()
    def _on_resumed(self) -> None:
        self._show_paused(False)

    def _show_paused(self, paused: bool) -> None:
        if paused:
            self.clock.pause()
            self.controls.set_rate("paused")
        else:
            self.clock.resume()
            self._show_rate()
        self.controls.set_paused(paused)
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
            self.clock.start()
            self.controls.set_total(event.total)
            memory = "RAM" if event.memory_kind == "cpu" else f"{event.memory_kind.upper()} memory"
            if isinstance(self.worker and self.worker.runner, ClusterRunner):
                memory = "this window's own process; the workers report theirs above it"
            self.statusBar().showMessage(f"{describe_start(event)}; the plot shows {memory}.")
            self.previews.clear("Waiting for the first image…")
        elif isinstance(event, RunNote):
            message = for_window(event.message)
            if event.level != "info":  # an info note (workers starting, batch size chosen) is no problem
                self.problems.add("(run)", message, warning=event.level != "error")
            self.statusBar().showMessage(message)
            if event.kind != "note":  # memory events (out-of-memory recovery, a leak...) mark the plot
                self.memory_plot.add_marker(event.kind, message)
        elif isinstance(event, RunFinished):
            self._on_finished(event)

    def _on_image(self, event: ImageResult) -> None:
        # Per image only bookkeeping; progress and previews are drawn by the refresh timer, so a fast
        # model costs the GUI thread almost nothing per image.
        self._latest = event
        self.thumbnails.add(event)
        if not event.ok:
            error = for_window(event.error or "failed")
            self.problems.add(event.image, error)
            self.memory_plot.add_marker("failure", f"{event.image}: {error}")

    def _on_finished(self, event: RunFinished) -> None:
        self.last_summary = event.summary
        if not event.cancelled:
            self.controls.set_finished()
        # The summary's figure (core/run_speed.py), shown the same way as in the summary sentence.
        self.controls.set_rate(format_rate(event.summary.get("images_per_second")))
        text = describe_summary(event.summary)
        if event.cancelled:
            text += " Cancelled: the images not reached are not in predictions.jsonl yet."
        self.controls.show_message(text)
        self.statusBar().showMessage("Cancelled." if event.cancelled else "Finished.")
        self.memory_plot.add_marker("run_end", "Run cancelled" if event.cancelled else "Run finished")

    def _on_errored(self, message: str) -> None:
        self.last_error = str(message)
        self.show_error(str(message))
        self.controls.set_rate("")
        if self._latest is None:  # not "Loading the model…" for a run that never got there
            self.previews.clear("The run stopped before the first image: see the message above.")
        self.memory_plot.add_marker("run_end", "Run stopped")

    def _on_thread_finished(self) -> None:
        self.preview_timer.stop()
        self._refresh_previews()
        if self.controls.is_busy():  # stopped before the engine counted the images: not busy now
            self.controls.set_total(max(self.form.image_count(), 0))
        if self.worker is not None:
            self.worker.deleteLater()
        if self.thread is not None:
            self.thread.deleteLater()
        self.worker = None
        self.thread = None
        self._set_running(False)
        summary = self.last_summary
        if summary is not None and not summary["cancelled"] and self.show_results_after_run:
            self.show_results(Path(summary["output"]))
        self.run_finished.emit(self.last_summary)

    def _refresh_previews(self) -> None:
        """Draw the newest result: progress, speed, previews, thumbnails (on a timer, ~12 per second)."""
        event = self._latest
        if event is None or event is self.previews.shown:
            return
        self.controls.set_done(event.index)
        if self.worker is not None and not self.worker.runner.cancelled and not self.clock.paused:
            self._show_rate()
        self.previews.show_result(event)
        self.thumbnails.refresh()

    def _show_rate(self) -> None:
        """Images/s by core/run_speed.py's one definition (pauses left out), and the time left."""
        event = self._latest
        if event is None:
            return
        rate = images_per_second(event.index, self.clock.running_seconds())
        left = seconds_left(event.index, event.total, rate)
        if rate:
            self.controls.set_rate(f"{format_rate(rate)} · {format_duration(left or 0)} left")

    def show_error(self, message: str) -> None:
        message = for_window(message)
        self.controls.show_error(message)
        self.statusBar().showMessage(message)

    def _set_running(self, running: bool) -> None:
        self.form.setEnabled(not running)
        self.controls.set_running(running)
        self.run_action.setEnabled(not running)
        output = self.form.output_text()
        self.controls.set_output_available(bool(output) and Path(output).is_dir())
        self.memory_plot.set_save_folder(Path(output).expanduser() if output else None)
        if not running:
            self._update_blocker()

    def open_output_folder(self) -> bool:
        """Show the output folder in the file manager; say so plainly when there is none to show it."""
        folder = Path(self.form.output_text()).expanduser()
        if not folder.is_dir():
            self.show_error(f"The output folder {folder} does not exist yet: it is made by the first run.")
            return False
        if not QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
            self.show_error(f"No file manager could be started to show it. The results are in {folder}")
            return False
        return True

    # == menus: File, View, Help =====================================================================
    def open_model_file(self) -> None:
        """File > Open model file…: the model picker's own chooser."""
        self.show_run_screen()
        info = self.model_picker.file_chooser(self)
        if info is not None:
            self.model_picker.add_model(info, select=True)

    def ask_results_folder(self) -> None:
        start = self.form.output_text() or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Open the output folder of a run", start)
        if folder:
            self.show_results(Path(folder))

    def show_results(self, folder: Path) -> None:
        """The results browser on `folder` (a run's output folder), in place of the run screen."""
        from batchlens.ui.results.browser import ResultsBrowser

        if self.results_browser is None:
            self.results_browser = ResultsBrowser(show_back=True)
            self.results_browser.back_requested.connect(self.show_run_screen)
            self.pages.addWidget(self.results_browser)
        self.results_browser.open_folder(folder)
        self.pages.setCurrentWidget(self.results_browser)

    def show_last_results(self) -> None:
        output = Path(self.form.output_text()).expanduser()
        if output.is_dir():
            self.show_results(output)
        else:
            self.statusBar().showMessage("No results yet: run the model first, or use File > Open results….")

    def show_run_screen(self) -> None:
        self.pages.setCurrentWidget(self.run_screen)

    def show_panel(self, name: str, visible: bool) -> None:
        """View menu: show or hide the previews, the memory plot or the problems panel."""
        box = {"previews": self.preview_box, "memory": self.memory_box, "problems": self.problems}[name]
        box.setVisible(visible)

    def copy_system_info(self) -> str:
        from batchlens.ui.about import copy_system_info

        text = copy_system_info()
        self.statusBar().showMessage("System info copied: paste it into a bug report.")
        return text

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
        if self.results_browser is not None:
            self.results_browser.shutdown()
        self.save_settings()
        event.accept()
