"""How late a 10 ms timer on the window's GUI thread fires while a run goes, beside the same timer on
the same machine with no run (which shows how busy the machine itself is).

    python benchmarks/gui_timer_lateness.py [--images 120] [--model demo-shapes]

Runs the real window (offscreen unless QT_QPA_PLATFORM says otherwise) with the real memory probe
sampling at 10 Hz, as `batchlens` does, and prints the lateness percentiles of both spans. It was a
test that asserted nothing (tests/ui/test_window.py); the figures depend on the machine, so compare
numbers from one run of this script only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
from PySide6.QtCore import QEventLoop, Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from batchlens.core.run.bench import make_synthetic_folder  # noqa: E402
from batchlens.ui.main_window import MainWindow  # noqa: E402
from batchlens.ui.qt_app import leave_a_core_for_the_window  # noqa: E402
from batchlens.ui.settings import Settings  # noqa: E402


def spin(app: QApplication, seconds: float) -> None:
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--model", default="demo-shapes")
    args = parser.parse_args()
    app = QApplication.instance() or QApplication(sys.argv)
    leave_a_core_for_the_window()  # as `batchlens` does
    with tempfile.TemporaryDirectory() as scratch:
        folder = make_synthetic_folder(Path(scratch) / "in", args.images, (64, 64))
        window = MainWindow(Settings(Path(scratch) / "s.ini"))
        window.ask_questions = False
        window.show_results_after_run = False
        window.show()
        stamps: list[float] = []
        timer = QTimer()
        timer.setTimerType(Qt.TimerType.PreciseTimer)
        timer.setInterval(10)
        timer.timeout.connect(lambda: stamps.append(time.perf_counter()))
        timer.start()
        spin(app, 1.0)
        idle, stamps[:] = np.diff(stamps), []
        done = QEventLoop()
        window.run_finished.connect(done.quit)
        window.prefill(model=args.model, input_dir=folder, output_dir=Path(scratch) / "out", device="cpu")
        if not window.start_run():
            print("the run did not start:", window.last_error, file=sys.stderr)
            return 1
        done.exec()
        timer.stop()
        running = np.diff(stamps)
        for name, gaps in (("idle", idle), ("during a run", running)):
            late = np.maximum(gaps * 1000 - 10, 0)
            print(
                f"GUI 10 ms timer lateness {name} ({len(late)} ticks): p50 {np.percentile(late, 50):.1f} ms, "
                f"p99 {np.percentile(late, 99):.1f} ms, max {late.max():.1f} ms"
            )
        window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
