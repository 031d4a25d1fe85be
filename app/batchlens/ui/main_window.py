"""The BatchLens main window: it composes the widgets (RunForm, RunControls, PreviewBox, MemoryPlot,
ProblemsPanel, the results browser) and connects them to the run's worker, which runs the engine on its
own QThread. Previews are drawn from the latest result on a short timer, so a fast model cannot flood
the GUI thread; the memory plot samples its probe on its own timer, run or no run.

The run screen's layout is ui/run_screen.py; a run's life (Run, Pause, Cancel, its events, its end) is
ui/run_lifecycle.py, a mixin of this class. Here: wiring, settings, the device and the memory plot,
what a change of the choices makes stale, the output folder's buttons, closing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QEvent, Qt, QThread, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import QAction, QDesktopServices, QKeySequence
from PySide6.QtWidgets import QMainWindow, QStatusBar, QWidget

from batchlens.core.errors import BatchLensError
from batchlens.core.machine.devices import resolve_device
from batchlens.core.machine.memory import ClearResult, CpuProbe, MemoryProbe, format_bytes, probe_for
from batchlens.core.outputs.results import PREDICTIONS
from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import ImageResult, RunFinished, RunNote, RunStarted
from batchlens.core.run.run_speed import RunClock
from batchlens.core.run.run_text import describe_start
from batchlens.ui.engine import LOADING, Engine
from batchlens.ui.menus import Menus
from batchlens.ui.model_sources import ModelSources
from batchlens.ui.pages import Pages, first_start_geometry
from batchlens.ui.run_form import CLUSTER, dropped_folder
from batchlens.ui.run_lifecycle import RunLifecycle
from batchlens.ui.run_screen import build_run_screen
from batchlens.ui.run_setup import RunSetup
from batchlens.ui.settings import Settings
from batchlens.ui.start_folder import start_folder
from batchlens.ui.wording import for_status, for_window

if TYPE_CHECKING:
    from batchlens.ui.snapshot_viewer import SnapshotViewer

log = logging.getLogger(__name__)

CLOSE_WAIT_MS = 5000  # how long closing the window waits for the current image to finish
PREVIEW_INTERVAL_MS = 80


def probe_for_name(name: str) -> MemoryProbe:
    if name == "cpu":  # process RAM: no torch needed, so the plot runs before the engine loads
        return CpuProbe()
    return probe_for(resolve_device(name))


class MainWindow(RunLifecycle, QMainWindow):
    run_finished = Signal(object)  # the summary dict, or None when the run could not go on
    worker_created = Signal(object)  # the RunWorker of a run about to start

    def __init__(
        self,
        settings: Settings | None = None,
        probe_factory: Callable[[str], MemoryProbe] = probe_for_name,
        parent: QWidget | None = None,
        engine: Engine | None = None,
    ):
        """`engine`: PyTorch and the run's code, loaded behind the window (ui/engine.py, as app.py
        does); without one, the window loads it at once."""
        super().__init__(parent)
        if engine is None:
            engine = Engine(self)
            engine.load()
        self.engine = engine
        self._run_waits_for_engine = False
        self.settings = settings or Settings()
        self.probe_factory = probe_factory
        self.ask_questions = True  # False in --self-test and --start: never block on a dialog
        self.worker = None  # the RunWorker of the current run (ui/worker.py, part of the engine)
        self._cluster_run = False
        self.snapshot_viewers: list[SnapshotViewer] = []  # File › Open memory snapshot…
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
        if not engine.is_ready():
            engine.ready.connect(self._on_engine_ready)
            engine.failed.connect(self._on_engine_failed)
            if engine.error is not None:
                self._on_engine_failed(engine.error)

    # == layout ====================================================================================
    def _build(self) -> None:
        self.run_screen = build_run_screen(self, find_devices=self.engine.is_ready())
        self.setup = RunSetup(self)
        self.model_picker = self.form.model_picker
        self.model_sources = ModelSources(self)  # weights download, "Use weights file…", pickle trust
        self.pages = Pages(self.run_screen)  # the run screen, and the results browser once opened
        self.setCentralWidget(self.pages)
        self.menus = Menus(self)
        self.setStatusBar(QStatusBar())

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
        self.controls.browse_results_clicked.connect(self.browse_results)
        self.form.device_changed.connect(self._on_device_changed)
        self.form.device_changed.connect(lambda _name: self._choices_changed(model=False))
        self.form.model_changed.connect(lambda _model: self._choices_changed(model=True))
        self.form.input_changed.connect(lambda: self._choices_changed(model=False))
        self.form.counted.connect(self._on_counted)
        self.form.cluster_changed.connect(lambda _address: self._show_where())

    def _restore(self) -> None:
        s = self.settings
        self.form.restore(s)
        if self.engine.is_ready():  # built at once (tests, the self-test); app.py builds it after the paint
            self.build_memory_plot()
        # A saved geometry Qt itself moves onto a screen and shrinks to fit (a laptop off its big monitor).
        if (geometry := s.state("geometry")) is None or not self.restoreGeometry(geometry):
            self.setGeometry(first_start_geometry(self.screen().availableGeometry()))
        # First start: previews (and the Problems tab) and the plot side by side.
        self.top_splitter.setSizes([1000, 1000])
        if (state := s.state("top_splitter")) is not None:
            self.top_splitter.restoreState(state)

    def save_settings(self) -> None:
        s = self.settings
        self.form.save(s)
        if self.memory_plot is not None:
            s.whole_gpu = self.memory_plot.whole_device.isChecked()
        s.set_state("geometry", self.saveGeometry())
        s.set_state("top_splitter", self.top_splitter.saveState())
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

    def build_memory_plot(self) -> None:
        """Put the memory plot in its panel (once). pyqtgraph's import takes 1-2 s on a busy machine,
        so app.py calls this after the window's first paint, before the engine loads."""
        if self.memory_plot is not None:
            return
        from batchlens.ui.memory_plot import MemoryPlot

        self.memory_plot = MemoryPlot()
        self.memory_splitter.replaceWidget(0, self.memory_plot)
        self._memory_placeholder.deleteLater()
        self.memory_plot.cache_cleared.connect(self._on_cache_cleared)
        self.memory_plot.snapshot_requested.connect(self.record_snapshot)
        self.memory_plot.whole_device.setChecked(self.settings.whole_gpu)
        self._set_save_folder()
        self._on_device_changed()

    def load_behind(self) -> None:
        """After the first paint (app.py): the memory plot, then PyTorch and the engine on a thread."""
        self.build_memory_plot()
        self.engine.load_in_background()

    def _on_device_changed(self, *_args) -> None:
        if self.memory_plot is None:
            return  # build_memory_plot sets its probe
        name = self.device_name()
        if not self.engine.is_ready() and name not in ("cpu", CLUSTER):
            self.memory_plot.set_where(f"{LOADING} The plot starts once the devices are known.")
            return  # a GPU's probe needs torch: _on_engine_ready sets it
        try:
            # On a cluster the plot can only show this window's own process; it says so.
            self.memory_plot.set_probe(self.probe_factory("cpu" if name == CLUSTER else name))
        except BatchLensError as exc:
            self.show_error(str(exc))
        probe = self.memory_plot.probe
        if probe is not None:
            device = getattr(probe, "device", None)
            self.gpu_panel.set_device(probe.kind, getattr(device, "index", None) or 0)
        self._show_where()

    def record_snapshot(self) -> None:
        """Record snapshot: the running run records the next images' allocations (it says in the
        problems panel where the file went, or why it cannot)."""
        runner = self.worker.runner if self.is_running() and self.worker is not None else None
        if runner is None or not hasattr(runner, "record_snapshot"):
            self.statusBar().showMessage(
                "Record snapshot works during a run on a CUDA GPU: start a run first."
            )
            return
        runner.record_snapshot()
        self.statusBar().showMessage("Recording a memory snapshot from the next batch…")

    def open_snapshot(self, path: Path) -> SnapshotViewer:
        """A viewer window for a memory snapshot file, read on a worker thread."""
        from batchlens.ui.snapshot_viewer import SnapshotViewer  # pyqtgraph: not before the first paint

        viewer = SnapshotViewer()
        viewer.resize(1000, 700)
        self.snapshot_viewers.append(viewer)
        viewer.show()
        viewer.open(path)
        return viewer

    def _show_where(self, worker_report: str = "") -> None:
        if self.memory_plot is None:
            return
        if self.device_name() != CLUSTER:
            self.memory_plot.set_where(None)
            return
        report = worker_report or "Each worker reports its memory after every batch."
        self.memory_plot.set_where(
            f"<b>The work runs on the Ray cluster ({self.form.cluster_address()})</b>; this plot shows "
            f"this window's own process. {report}"
        )

    # == drag and drop a folder =====================================================================
    def dragEnterEvent(self, event) -> None:
        if dropped_folder(event.mimeData()) is not None and not self.is_running():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        folder = dropped_folder(event.mimeData())
        if folder is not None and not self.is_running():
            self.form.set_input(folder)
            event.acceptProposedAction()

    # == the run ===================================================================================
    def is_running(self) -> bool:
        return self.thread is not None

    # The checks and questions before a run live in RunSetup (ui/run_setup.py).
    def build_config(self) -> RunConfig | None:
        """The RunConfig for the current choices, or None (after telling the user what is missing)."""
        return self.setup.config()

    def choose_for_existing_run(self, output_dir: Path, model: str, input_dir: Path):
        return self.setup.choose_for_existing_run(output_dir, model, input_dir)

    def run_blocker(self) -> str | None:
        """Why Run cannot start now, in plain words; None when it can."""
        return self.setup.blocker()

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
        self.statusBar().clearMessage()  # "Finished.", an engine note: about the choices before
        self.problems.clear()
        if model or self._latest is not None:
            self._latest = None
            self.previews.clear()
            self.thumbnails.clear()
        self._update_blocker()
        self._update_output_buttons()
        self._set_save_folder()

    def _on_counted(self, count: int, _text: str) -> None:
        # "0 / 32 images" before a run, the real total; a finished run's bar stays as it ended (a
        # count that lands after it is of the same folder: a changed input clears last_summary first).
        if not self.is_running() and self.last_summary is None:
            self.controls.set_total(max(count, 0))
        self._update_blocker()

    # == the engine, loaded behind the window ========================================================
    def _on_engine_ready(self) -> None:
        self.build_memory_plot()  # (already there when app.py's load_behind started the engine)
        missing = self.form.fill_devices()
        if missing:
            self.show_error(f"Device {missing!r} is not available here; using {self.device_name()}.")
        self._on_device_changed()
        if self._run_waits_for_engine:
            self._run_waits_for_engine = False
            self.controls.show_message("")
            self.start_run()

    def _on_engine_failed(self, message: str) -> None:
        self._run_waits_for_engine = False
        self.show_error(message)

    def show_error(self, message: str) -> None:
        message = for_window(message)
        self.controls.show_error(message)
        self.status(message)

    def status(self, text: str) -> None:
        """A line in the status bar, in plain words (ui/wording.py's for_status)."""
        self.statusBar().showMessage(for_status(text))

    def _set_running(self, running: bool) -> None:
        self.form.setEnabled(not running)
        self.controls.set_running(running)
        self.run_action.setEnabled(not running)
        self._update_output_buttons()
        self._set_save_folder()
        if not running:
            self._update_blocker()

    def output_folder(self) -> Path | None:
        output = self.form.output_text()
        return Path(output).expanduser() if output else None

    def _update_output_buttons(self) -> None:
        """Open output folder on exactly when the folder exists; Browse results when it holds results.
        Checked on every change of the choices, at a run's start and end, and when the window is
        activated again (the folder may have been made or deleted meanwhile)."""
        folder = self.output_folder()
        self.controls.set_output_available(folder is not None and folder.is_dir())
        self.controls.set_results_available(folder is not None and (folder / PREDICTIONS).is_file())

    def changeEvent(self, event) -> None:
        if event.type() == QEvent.Type.ActivationChange and self.isActiveWindow():
            self._update_output_buttons()
        super().changeEvent(event)

    def browse_results(self) -> None:
        """Browse results: the results browser on the output folder (a run ends on the run screen)."""
        folder = self.output_folder()
        if folder is not None and (folder / PREDICTIONS).is_file():
            self.pages.show_results(folder)

    def _set_save_folder(self) -> None:
        """Save plot / Export CSV start in the output folder (the folder above it until a run makes
        it), else the input folder, else home: never the folder BatchLens was started from."""
        if self.memory_plot is not None:
            self.memory_plot.set_save_folder(self.output_folder() or Path(start_folder(self)))

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

    def _on_cache_cleared(self, result: ClearResult) -> None:
        message = result.message()
        self.status(message)
        self.memory_plot.readout.setToolTip(message)

    # == the run's signals, emitted on its thread ==================================================
    # Defined here, on the QObject class itself, so that Qt queues each onto the GUI thread in the
    # order the run emitted it (on the RunLifecycle mixin, PySide ran them on the run's thread).
    @Slot()
    def _on_paused(self) -> None:
        self._show_paused(True)

    @Slot()
    def _on_resumed(self) -> None:
        self._show_paused(False)

    def _on_event(self, event) -> None:
        if isinstance(event, ImageResult):
            self._on_image(event)
            if self._cluster_run:
                self._show_where(
                    f"Latest worker report: {format_bytes(event.memory.allocated)} in use, "
                    f"peak {format_bytes(event.memory.peak)}."
                )
        elif isinstance(event, RunStarted):
            self.clock.start()
            self.controls.set_total(event.total)
            memory = "RAM" if event.memory_kind == "cpu" else f"{event.memory_kind.upper()} memory"
            if self._cluster_run:
                memory = "this window's own process; the workers report theirs above it"
            self.status(f"{describe_start(event)}; the plot shows {memory}.")
            self.previews.clear("Waiting for the first image…")
        elif isinstance(event, RunNote):
            message = for_window(event.message)
            if event.level != "info":  # an info note (workers starting, batch size chosen) is no problem
                self.problems.add("(run)", message, warning=event.level != "error")
            self.status(message)
            if event.kind != "note":  # memory events (out-of-memory recovery, a leak...) mark the plot
                self.memory_plot.add_marker(event.kind, message)
        elif isinstance(event, RunFinished):
            self._on_finished(event)

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
        # The worker lives in the run's thread, which has ended: a deleteLater() would wait for that
        # thread's event loop forever (the worker, its runner and their signals were kept for good, one
        # set per run). Once the thread is done, no event of the worker's can be running: dropping the
        # last reference deletes it here. The thread itself is deleted by the event loop.
        if self.thread is not None:
            self.thread.wait()  # (finished was emitted from the thread just before it ended)
            self.thread.deleteLater()
        self.worker = None
        self.thread = None
        self._set_running(False)  # on the run screen still: Browse results opens the browser
        self.run_finished.emit(self.last_summary)

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
        if self.memory_plot is not None:
            self.memory_plot.timer.stop()
        self.gpu_panel.shutdown()
        for viewer in self.snapshot_viewers:
            viewer.close()
        self.pages.shutdown()
        self.form.shutdown()
        self.model_sources.shutdown()
        self.save_settings()
        event.accept()
