"""What the window needs from the model sources before a run: download torchvision weights (with a
progress dialog), "Use weights file…" for a torchvision architecture, the explicit confirmation a
model file that needs full pickle must get before it is loaded, and, for a model file without a
sidecar, the dialog that describes it (ui/sidecar_dialog.py) instead of command-line flags.

`ModelSources(window)` adds its button to the window's model picker; the window calls
`ready(model_id, options, retry)` before it builds a run, and starts nothing when it returns False
(a dialog is then under way and calls `retry` once the weights are there).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot
from PySide6.QtWidgets import QFileDialog, QMenu, QMessageBox, QProgressDialog, QToolButton, QWidget

from batchlens.core.errors import BatchLensError
from batchlens.core.models import DownloadCancelled, download_weights, file_to_trust, needs_download
from batchlens.core.models.files import file_model_info, sidecar_path_for
from batchlens.core.models.hf_cache import HF_PREFIX, hub_model_info
from batchlens.ui.sidecar_dialog import ask_sidecar
from batchlens.ui.start_folder import start_folder

log = logging.getLogger(__name__)

WEIGHTS_FILE_FILTER = "Weights (*.pth *.pt *.safetensors *.bin *.ckpt);;All files (*)"
SHOWN_OBJECTS = 6


class DownloadWorker(QObject):
    """Downloads one catalogue model's weights on its own QThread; reports through signals only."""

    progress = Signal(object, object)  # bytes done, bytes total (None if unknown); Python ints: > 2 GiB ok
    done = Signal(object)  # None on success, "" when cancelled, else the message for the user

    def __init__(self, model_id: str):
        super().__init__()
        self.model_id = model_id
        self.cancelled = False  # set from the GUI thread; read between chunks

    @Slot()
    def run(self) -> None:
        try:
            download_weights(self.model_id, self._report)
        except DownloadCancelled:
            self.done.emit("")
        except BatchLensError as exc:
            self.done.emit(str(exc))
        except Exception as exc:  # keep the window alive whatever happens
            log.exception("weights download failed")
            self.done.emit(f"The download of {self.model_id}'s weights failed: {exc!r}")
        else:
            self.done.emit(None)

    def _report(self, done: int, total: int | None) -> bool:
        self.progress.emit(done, total)
        return not self.cancelled


class DownloadDialog(QProgressDialog):
    """A progress dialog over a DownloadWorker. Emits `succeeded` or `failed(message)` once."""

    succeeded = Signal()
    failed = Signal(str)  # "" when the user cancelled

    def __init__(self, model_id: str, parent: QWidget | None = None):
        super().__init__(f"Downloading the weights of {model_id}…", "Cancel", 0, 0, parent)
        self.setWindowTitle("Downloading model weights")
        self.setWindowModality(Qt.WindowModality.WindowModal)
        self.setMinimumDuration(0)
        self.setAutoClose(False)
        self.setAutoReset(False)
        self.model_id = model_id
        self.worker = DownloadWorker(model_id)
        self.thread = QThread(self)
        self.thread.setObjectName("batchlens-download")
        self.worker.moveToThread(self.thread)
        self.thread.started.connect(self.worker.run)
        # quit() is thread-safe: called straight from the worker thread, so the thread has ended by the
        # time the queued _on_done waits for it.
        self.worker.done.connect(self.thread.quit, Qt.ConnectionType.DirectConnection)
        self.worker.progress.connect(self._on_progress)
        self.worker.done.connect(self._on_done)
        self.canceled.connect(self._on_cancel)

    def start(self) -> None:
        self.show()
        self.thread.start()

    def _on_cancel(self) -> None:
        self.worker.cancelled = True
        self.setLabelText("Cancelling…")

    def _on_progress(self, done: int, total: int | None) -> None:
        mib = 2**20
        if total:
            self.setRange(0, 1000)
            self.setValue(int(1000 * done / total))
            self.setLabelText(
                f"Downloading the weights of {self.model_id}: {done / mib:.1f} of {total / mib:.1f} MiB"
            )
        else:
            self.setLabelText(f"Downloading the weights of {self.model_id}: {done / mib:.1f} MiB")

    def _on_done(self, message: str | None) -> None:
        self.thread.wait()
        self.hide()  # (close() would emit canceled)
        if message is None:
            self.succeeded.emit()
        else:
            self.failed.emit(message)


class TrustPickleDialog(QMessageBox):
    """The explicit confirmation before a file that needs full pickle is loaded. Cancel is the default."""

    def __init__(self, path: Path, objects: list[str], parent: QWidget | None = None):
        super().__init__(parent)
        self.setIcon(QMessageBox.Icon.Warning)
        self.setWindowTitle("This model file can run code")
        self.setText(f"{Path(path).name} is not plain weights: loading it can run code.")
        shown = ", ".join(objects[:SHOWN_OBJECTS])
        if len(objects) > SHOWN_OBJECTS:
            shown += f" and {len(objects) - SHOWN_OBJECTS} more"
        self.setInformativeText(
            f"What it asks for when it loads: {shown}. That can run any code the file's author put inside "
            "it (a full Python pickle, or a TorchScript or torch.export file that reads or writes files or "
            "holds pickled data). Load it only if you trust where it came from; a safetensors file holds "
            f"plain weights only.\n\n{path}"
        )
        self.load_button = self.addButton("Load it anyway", QMessageBox.ButtonRole.AcceptRole)
        self.cancel_button = self.addButton(QMessageBox.StandardButton.Cancel)
        self.setDefaultButton(self.cancel_button)
        self.setEscapeButton(self.cancel_button)

    def trusted(self) -> bool:
        return self.clickedButton() is self.load_button


def ask_trust(parent: QWidget, path: Path, objects: list[str]) -> bool:
    dialog = TrustPickleDialog(path, objects, parent)
    dialog.exec()
    return dialog.trusted()


def choose_weights_file(parent: QWidget) -> str | None:
    path, _ = QFileDialog.getOpenFileName(
        parent, "Use weights file", start_folder(parent), WEIGHTS_FILE_FILTER
    )
    return path or None


class ModelSources(QObject):
    """The window's side of the model sources. Needs `window.model_picker`, `window.show_error(str)` and
    `window.ask_questions`."""

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.picker = window.model_picker
        self.ask_trust: Callable[[QWidget, Path, list[str]], bool] = ask_trust
        self.weights_chooser: Callable[[QWidget], str | None] = choose_weights_file
        self.ask_sidecar: Callable[[QWidget, Path], Path | None] = ask_sidecar
        self._choose_file = self.picker.file_chooser
        self.picker.file_chooser = self.choose_model_file
        self.download_dialog: DownloadDialog | None = None
        self.downloaded: set[str] = set()  # model ids downloaded in this session

        self.weights_button = QToolButton()
        self.weights_button.setText("Weights…")
        self.weights_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.weights_button)
        self.use_file_action = menu.addAction("Use weights file…", self.use_weights_file)
        self.use_default_action = menu.addAction("Use torchvision's weights", self.use_default_weights)
        self.weights_button.setMenu(menu)
        self.picker.layout().addWidget(self.weights_button)
        self.describe_button = QToolButton()
        self.describe_button.setText("Describe…")
        self.describe_button.setToolTip(
            "Say what this model file does and how its images are prepared (saved in its sidecar)."
        )
        self.describe_button.clicked.connect(self.describe_current)
        self.picker.layout().addWidget(self.describe_button)
        self.picker.model_changed.connect(self._update_button)
        self._update_button()

    # -- a model file without a sidecar ----------------------------------------------------------------
    @staticmethod
    def needs_sidecar(model_id: str | None, options: dict) -> bool:
        """A model file with no sidecar, and no options that say what it is."""
        path = Path(model_id or "")
        return (
            path.is_file()
            and sidecar_path_for(path) is None
            and not (options.get("task") or options.get("arch"))
        )

    def describe_current(self) -> Path | None:
        """ "Describe…": the sidecar dialog for the current model file, prefilled from its sidecar."""
        info = self.picker.current_model()
        if info is None or info.source != "file":
            return None
        saved = self.ask_sidecar(self.window, Path(info.id))
        if saved is not None:
            self.picker.add_model(file_model_info(info.id), select=True)  # the task may have changed
        return saved

    def choose_model_file(self, parent: QWidget):
        """ "Open model file…": the file, then, when it has no sidecar, the dialog that describes it."""
        info = self._choose_file(parent)
        if info is not None and self.needs_sidecar(info.id, {}):
            if self.ask_sidecar(self.window, Path(info.id)) is None:
                return None  # cancelled: the file cannot run without knowing what it does
            info = file_model_info(info.id)
        return info

    # -- "Use weights file…" -----------------------------------------------------------------------
    def _current_catalogue_id(self) -> str | None:
        info = self.picker.current_model()
        return info.id if info is not None and info.source == "torchvision" else None

    def use_weights_file(self) -> None:
        model_id = self._current_catalogue_id()
        path = self.weights_chooser(self.window) if model_id else None
        if path:
            self.picker.options.setdefault(model_id, {})["weights"] = str(path)
            self._update_button()

    def use_default_weights(self) -> None:
        model_id = self._current_catalogue_id()
        if model_id:
            options = self.picker.options.get(model_id, {})
            options.pop("weights", None)
            options.pop("trust_pickle", None)
            self._update_button()

    def _update_button(self, *_args) -> None:
        model_id = self._current_catalogue_id()
        weights = self.picker.options.get(model_id or "", {}).get("weights")
        self.weights_button.setVisible(model_id is not None)
        current = self.picker.current_model()
        self.describe_button.setVisible(current is not None and current.source == "file")
        self.use_default_action.setEnabled(bool(weights))
        if weights:
            self.weights_button.setText(f"Weights: {Path(weights).name}")
            self.weights_button.setToolTip(f"Runs {model_id} with the weights in {weights} (no download).")
        else:
            self.weights_button.setText("Weights: torchvision")
            self.weights_button.setToolTip(
                f"Runs {model_id} with torchvision's pretrained weights (downloaded once). "
                "Choose a weights file (a state_dict for this architecture) to use your own."
            )

    # -- before a run --------------------------------------------------------------------------------
    def ready(self, model_id: str | None, options: dict, retry: Callable[[], object]) -> bool:
        """True when the run can start now. False when the user declined a pickle file, or while the
        weights download (`retry` is called once they are there)."""
        if not model_id:
            return True
        if self.needs_sidecar(model_id, options) and self.window.ask_questions:
            if self.ask_sidecar(self.window, Path(model_id)) is None:
                self.window.show_error(
                    f"{Path(model_id).name} was not run: BatchLens needs to know what the model does "
                    "(describe it when asked, or write a sidecar: docs/models.md)."
                )
                return False
            self.picker.add_model(file_model_info(model_id), select=True)
        risky = file_to_trust(model_id, options)
        if risky is not None:
            path, objects = risky
            if not (self.window.ask_questions and self.ask_trust(self.window, path, objects)):
                self.window.show_error(
                    f"{path.name} was not loaded: it is not plain weights, and loading it can run code. "
                    "Use it only if you trust it (confirm when asked, or --trust-pickle on the command line)."
                )
                return False
            self.picker.options.setdefault(model_id, {})["trust_pickle"] = True
        # Once per model and session: a hub model whose files are all fetched but hold no safetensors
        # still "needs" a download, and the run after it says why instead of downloading for ever.
        if needs_download(model_id, options) and model_id not in self.downloaded:
            self.start_download(model_id, retry)
            return False
        return True

    def start_download(self, model_id: str, then: Callable[[], object]) -> DownloadDialog:
        if self.download_dialog is not None:
            self.download_dialog.deleteLater()  # the previous one is done by now
        dialog = DownloadDialog(model_id, self.window)
        dialog.succeeded.connect(lambda: self._on_downloaded(model_id))
        dialog.succeeded.connect(then)
        dialog.failed.connect(self._on_download_failed)
        self.download_dialog = dialog
        dialog.start()
        return dialog

    def shutdown(self, wait_ms: int = 5000) -> bool:
        """The window is closing: cancel a download under way and wait for its thread (a QThread
        destroyed with the window while it still ran aborts the whole program, without a word).
        True when no download thread is left running."""
        dialog = self.download_dialog
        if dialog is None or not dialog.thread.isRunning():
            return True
        dialog.worker.cancelled = True  # read between chunks: the download stops at the next one
        return dialog.thread.wait(wait_ms)

    def _on_downloaded(self, model_id: str) -> None:
        """A hub model is in the cache now: the list shows its task instead of "from the hub"."""
        self.downloaded.add(model_id)
        if model_id.startswith(HF_PREFIX):
            try:
                self.picker.add_model(
                    hub_model_info(model_id), select=self.picker.current_model_id() == model_id
                )
            except BatchLensError as exc:  # the run that follows says the same in its own words
                log.info("%s", exc)

    def _on_download_failed(self, message: str) -> None:
        self.window.show_error(message or "Download cancelled; nothing was run.")
