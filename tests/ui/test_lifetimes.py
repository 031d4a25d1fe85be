"""Qt object lifetimes (issue #25's audit): what a run or the results browser leaves behind is deleted,
on the GUI thread, and nothing Python-owned is freed by a picture thread."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import shiboken6
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from batchlens.ui.gui_gc import GuiThreadCollector
from batchlens.ui.results.thumbnails import Job, ThumbnailLoader

APP = Path(__file__).resolve().parents[2] / "app"


def test_a_finished_runs_worker_is_deleted_not_kept_for_good(
    window, qtbot, shapes_folder: Path, tmp_path: Path
):
    """deleteLater() on a worker whose thread had ended never ran: every run kept its worker (and its
    runner and connections) until the window closed."""
    workers, destroyed = [], []

    def hook(worker):
        workers.append(weakref.ref(worker))
        worker.destroyed.connect(lambda: destroyed.append(True), Qt.ConnectionType.DirectConnection)

    window.worker_created.connect(hook)
    window.form.model_picker.set_current_model("demo-shapes")
    window.form.input_edit.setText(str(shapes_folder))
    window.form.output_edit.setText(str(tmp_path / "out"))
    for _ in range(2):
        with qtbot.waitSignal(window.run_finished, timeout=60_000):
            assert window.start_run()
        qtbot.waitUntil(lambda: len(destroyed) == len(workers), timeout=5_000)
    gc.collect()
    assert len(workers) == 2 and all(ref() is None for ref in workers)


def test_the_loaders_signal_object_is_owned_by_the_loader(qtbot):
    """It was Python-owned, kept only by the loader's Python wrapper: a picture thread dropping the last
    reference to that wrapper deleted a GUI-thread QObject on the picture thread."""
    loader = ThumbnailLoader(threads=1)
    assert not shiboken6.ownedByPython(loader._signals)
    assert loader._signals.parent() is loader and loader._signals.thread() is loader.thread()
    loader.shutdown()
    loader.deleteLater()


def test_a_loader_deleted_while_a_picture_is_made_ends_cleanly(qtbot):
    """The results browser closed while a tile was drawn: the pool waits for it, nothing is delivered
    to the deleted loader, and no exception is raised on the picture thread."""
    loader = ThumbnailLoader(threads=1)
    started, release, made = threading.Event(), threading.Event(), []
    delivered = []
    loader.ready.connect(lambda key, result: delivered.append(key))

    def make(job):
        started.set()
        release.wait(5)
        made.append(job)
        return QImage()

    with qtbot.capture_exceptions() as exceptions:
        loader.request(Job(("tile", 0, 0), None, Path("p"), None, Path("o"), None, 10), make)
        assert started.wait(5)
        release.set()
        shiboken6.delete(loader)  # as a parent's deletion does: the pool waits for the picture
        qtbot.wait(50)
    assert made and not delivered and not exceptions


MARKERS_SCROLL_OUT = """
import gc
import pyqtgraph as pg
from PySide6.QtGui import QBrush
from PySide6.QtWidgets import QApplication
from batchlens.ui.memory_history import Marker
from batchlens.ui.plot_markers import PlotMarkers

app = QApplication([])
plot = pg.PlotWidget()
plot.show()
marks = PlotMarkers(plot.getPlotItem(), QBrush())
for second in range(12):
    marks.add(Marker(float(second), "run_start" if second % 2 else "clear_cache", f"marker {second}"))
    app.processEvents()
    if second % 4 == 3:  # the plot's window moves on by several markers at once (a paused plot, a busy GUI)
        marks.drop_older_than(second - 1)
        marks.layout_labels()
        gc.collect()
assert len(marks.lines()) == 2 and len(marks._labels) == 2
print("ok")
"""


def test_labelled_markers_that_scroll_out_of_the_memory_plot_do_not_crash_the_window():
    """The soak test's segfault (and, by its steps, the issue's): the first labelled marker that left
    the plot's window took the window down. In a child process, so that a crash fails only this test."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(APP))
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", MARKERS_SCROLL_OUT],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == b"ok", done.stderr.decode()[-2000:]


def test_closing_the_window_during_a_weights_download_stops_its_thread(window, qtbot, monkeypatch):
    """The download's QThread is the dialog's child: destroyed with the window while it still ran, it
    aborted the program ("QThread: Destroyed while thread is still running")."""
    from batchlens.ui import model_sources

    chunks = []

    def slow_download(model_id, report):
        while report(len(chunks), None):  # False once cancelled
            chunks.append(1)
            time.sleep(0.01)
        raise model_sources.DownloadCancelled()

    monkeypatch.setattr(model_sources, "download_weights", slow_download)
    dialog = window.model_sources.start_download("resnet18", lambda: None)
    qtbot.waitUntil(lambda: len(chunks) > 3, timeout=5_000)
    window.close()
    assert not dialog.thread.isRunning()


class Cycle:
    """Garbage only the cyclic collector frees; notes the thread that freed it."""

    def __init__(self, freed_on: list):
        self.me, self.freed_on = self, freed_on

    def __del__(self):
        self.freed_on.append(threading.current_thread().name)


def test_cycles_are_freed_on_the_gui_thread_not_on_a_decoding_thread(qtbot):
    freed_on: list[str] = []
    kept = []

    def decode():
        Cycle(freed_on)
        kept.extend([] for _ in range(5_000))  # allocations past the collector's threshold, here

    collector = GuiThreadCollector(interval_ms=10).start()
    try:
        thread = threading.Thread(target=decode, name="batchlens-decode_0")
        thread.start()
        thread.join()
        assert freed_on == []  # not on the decoding thread
        qtbot.waitUntil(lambda: bool(freed_on), timeout=5_000)
        assert freed_on == [threading.main_thread().name]
    finally:
        collector.stop()
    assert gc.isenabled()
