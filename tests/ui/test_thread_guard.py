"""The guard in tests/ui/conftest.py fails a test that leaves a thread running: shown here on tests
that leak on purpose, run by a separate pytest so that their failures are what is checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

LEAKY_TESTS = """
import threading
import time

from PySide6.QtCore import QThread, QThreadPool

from batchlens.core.run.config import RunConfig
from batchlens.ui.worker import RunWorker, start_in_thread
from tests.helpers import make_shapes_folder

kept = []  # references, so that Qt does not destroy a running thread (that would abort the process)


class Sleeper(QThread):
    def run(self):
        time.sleep(1.0)


def test_leaves_a_qthread_running(qapp):
    thread = Sleeper()
    thread.start()
    kept.append(thread)


def test_leaves_the_pool_busy(qapp):
    QThreadPool.globalInstance().start(lambda: time.sleep(1.0))


def test_leaves_a_paused_run_behind(qapp, tmp_path):
    make_shapes_folder(tmp_path / "in", 3, size=32)
    worker = RunWorker(RunConfig("demo-shapes", tmp_path / "in", tmp_path / "out", device="cpu"))
    held, wait = threading.Event(), worker.runner._wait_until_resumed
    worker.runner._wait_until_resumed = lambda: (held.set(), wait())[1]
    worker.runner.pause()
    kept.append((worker, start_in_thread(worker)))
    assert held.wait(60)  # the worker is now inside its run, waiting to be resumed


def test_waits_for_its_thread(qapp):
    thread = Sleeper()
    thread.start()
    thread.wait()
"""


def test_a_test_that_leaves_a_thread_running_fails(tmp_path: Path):
    (tmp_path / "conftest.py").write_text(
        "import os\n"
        "os.environ.setdefault('QT_QPA_PLATFORM', 'offscreen')\n"
        "from tests.ui.conftest import no_thread_left_running  # noqa: F401  (the guard under test)\n"
    )
    (tmp_path / "test_leaky.py").write_text(LEAKY_TESTS)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", str(tmp_path), "-q", "-p", "no:cacheprovider"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "4 passed, 3 errors" in out, out
    assert "a QThread (Sleeper) started at" in out and "test_leaky.py" in out
    assert "a busy QThreadPool" in out
    assert "a RunWorker still running demo-shapes" in out and "a QThread (batchlens-run)" in out
    assert "ERROR at teardown of test_waits_for_its_thread" not in out
