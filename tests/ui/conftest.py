"""Fixtures for the window tests: a probe with known numbers, settings in a temporary file, a window."""

from __future__ import annotations

import threading
import time
import traceback
import weakref
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt, QThread, QThreadPool

from batchlens.core.machine.memory import ClearResult, MemoryProbe, MemorySample
from batchlens.ui.worker import RunWorker

MIB = 2**20
GIB = 2**30


class FakeProbe(MemoryProbe):
    """Returns scripted samples (bytes), then keeps repeating the last one; counts clear_cache calls."""

    description = "A fake GPU for the tests."

    def __init__(
        self, kind: str = "cuda", samples: list[tuple] | None = None, freed: int = 0, still: int = 0
    ):
        self.kind = kind
        self.samples = list(samples or [(100 * MIB, 200 * MIB, 150 * MIB, 1 * GIB, 8 * GIB)])
        self.calls = 0
        self.clear_calls = 0
        self.freed = freed
        self.still = still

    def sample(self) -> MemorySample:
        values = self.samples[min(self.calls, len(self.samples) - 1)]
        self.calls += 1
        return MemorySample(time.monotonic(), *values)

    def clear_cache(self) -> ClearResult:
        self.clear_calls += 1
        return ClearResult(self.freed, self.still)


@pytest.fixture(autouse=True)
def isolated_qsettings(tmp_path: Path):
    """Nothing a test does may touch the real user's remembered settings."""
    for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, str(tmp_path / "qsettings"))
    yield


def _caller() -> str:
    """Where a thread was started from: the innermost frame outside this file."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if frame.filename != __file__:
            return f"{frame.filename}:{frame.lineno} in {frame.name}"
    return "an unknown place"


@pytest.fixture(autouse=True)
def no_thread_left_running(monkeypatch):
    """Fail a test that leaves a QThread running, a run worker working, or a thread pool busy once the
    test and its other fixtures are done (napari's conftest does the same for QThreads): such a thread
    goes on touching objects the next test never made, and a real window would leak it too.

    Threads and workers are held by weak references, so the check never keeps alive what the code
    under test let go of; pools strongly, since Qt's global pool has no Python reference of its own."""
    threads: list[tuple[weakref.ref, str]] = []
    pools: list[tuple[QThreadPool, str]] = []
    working: dict[int, tuple[weakref.ref, str]] = {}  # workers between their started and finished signals
    lock = threading.Lock()
    thread_start, pool_start, worker_init = QThread.start, QThreadPool.start, RunWorker.__init__

    def start_thread(self, *args):
        threads.append((weakref.ref(self), _caller()))
        return thread_start(self, *args)

    def start_in_pool(self, *args):
        pools.append((self, _caller()))
        return pool_start(self, *args)

    def init_worker(self, config, *args, **kwargs):
        worker_init(self, config, *args, **kwargs)
        key, ref = id(self), weakref.ref(self)

        def started():
            with lock:
                working[key] = (ref, config.model)

        def finished():
            with lock:
                working.pop(key, None)

        # Direct: noted on the worker's own thread the moment it happens, never queued behind the test.
        self.started.connect(started, Qt.ConnectionType.DirectConnection)
        self.finished.connect(finished, Qt.ConnectionType.DirectConnection)

    monkeypatch.setattr(QThread, "start", start_thread)
    monkeypatch.setattr(QThreadPool, "start", start_in_pool)
    monkeypatch.setattr(RunWorker, "__init__", init_worker)
    yield

    left = []
    with lock:
        workers = list(working.values())
    for ref, model in workers:
        left.append(f"a RunWorker still running {model}")
        worker = ref()
        if worker is not None:
            worker.cancel()  # first, so that its thread can end below
    for ref, where in threads:
        thread = ref()
        try:
            if thread is not None and thread.isRunning():
                left.append(f"a QThread ({thread.objectName() or type(thread).__name__}) started at {where}")
                thread.quit()  # clean up so the next test starts clear; the failure below still stands
                thread.wait(5000)
        except RuntimeError:  # its C++ object is already deleted: it is not running
            pass
    for pool, where in pools:
        try:
            if pool.activeThreadCount() > 0:
                left.append(f"a busy QThreadPool (work started at {where})")
                pool.waitForDone(5000)
        except RuntimeError:
            pass
    if left:
        pytest.fail("The test left threads running: " + "; ".join(left), pytrace=False)


@pytest.fixture
def fake_probe() -> FakeProbe:
    return FakeProbe()


@pytest.fixture
def window(qtbot, tmp_path: Path, fake_probe: FakeProbe):
    from batchlens.ui.main_window import MainWindow
    from batchlens.ui.settings import Settings

    win = MainWindow(Settings(tmp_path / "settings.ini"), probe_factory=lambda name: fake_probe)
    win.ask_questions = False
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()  # cancels and waits for any run still going
    assert win.thread is None or not win.thread.isRunning()
