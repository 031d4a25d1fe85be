"""How the results browser copes with a big output folder: opening it, scrolling it, its memory.

    python benchmarks/results_browser.py [LINES]    (default 20,000; runs offscreen)

Prints the time to read and lay out every line, the time to paint one screen while scrolling through
the whole grid (each step a synchronous repaint: what a user waits for per scroll step), how many tiles
were drawn, and the process's memory before and after. The folder is made like the test's
(tests/ui/test_results_browser.py): a few real images, many lines pointing at them or at missing files.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402
from tests.helpers import make_shapes_folder  # noqa: E402
from tests.ui.test_results_browser import REAL_FILES, _line  # noqa: E402


class GcPauses:
    """The longest full (generation 2) garbage collection while it is installed, in seconds."""

    def __init__(self):
        self.longest, self.count, self._began = 0.0, 0, 0.0
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        elif info["generation"] == 2:
            self.count += 1
            self.longest = max(self.longest, time.perf_counter() - self._began)

    def remove(self) -> None:
        gc.callbacks.remove(self._note)


def browse(app, output: Path, lines: int, label: str) -> tuple[float, float]:
    """Open, scroll top to bottom in 200 steps, print the figures; return the worst repaint's wall and
    GUI-thread CPU times (ms)."""
    from batchlens.ui.results import ResultsBrowser

    browser = ResultsBrowser()
    browser.resize(1440, 900)
    browser.show()
    app.processEvents()
    pauses = GcPauses()
    rss_before = psutil.Process().memory_info().rss
    start = time.perf_counter()
    browser.open_folder(output)
    while browser.results.rowCount() < lines:
        app.processEvents()
    app.processEvents()
    opened = time.perf_counter() - start

    bar = browser.grid.verticalScrollBar()
    steps = 200
    frames, cpu_times = [], []
    for step in range(steps + 1):
        bar.setValue(bar.maximum() * step // steps)
        began, cpu = time.perf_counter(), time.thread_time()
        browser.grid.viewport().repaint()
        frames.append(time.perf_counter() - began)
        cpu_times.append(time.thread_time() - cpu)  # the GUI thread's own work, without waiting
        app.processEvents()  # tiles that are ready arrive here
    rss_after = psutil.Process().memory_info().rss
    browser.shutdown()
    pauses.remove()

    first_ms = frames[0] * 1000  # the first paint also warms font and style caches
    frames_ms = sorted(f * 1000 for f in frames[1:])
    median, p95 = statistics.median(frames_ms), frames_ms[int(0.95 * len(frames_ms))]
    cpu_ms = sorted(c * 1000 for c in cpu_times[1:])
    print(f"[{label}] {lines:,} results opened (read + laid out) in {opened:.2f} s")
    print(
        f"  repaint per scroll step ({steps} steps): median {median:.1f} ms, 95th percentile {p95:.1f} ms, "
        f"max {frames_ms[-1]:.1f} ms (first {first_ms:.0f} ms); GUI thread CPU: median "
        f"{statistics.median(cpu_ms):.1f} ms, max {cpu_ms[-1]:.1f} ms"
    )
    print(
        f"  full garbage collections: {pauses.count}, the longest {pauses.longest * 1000:.0f} ms "
        f"({len(gc.get_objects()):,} objects tracked)"
    )
    print(
        f"  tiles drawn: {browser.loader.made:,}, cached {len(browser.cache):,} "
        f"({browser.cache.bytes / 2**20:.1f} MiB); "
        f"RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB"
    )
    return frames_ms[-1], cpu_ms[-1]


def main() -> None:
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    app = QApplication([])
    import batchlens.ui.results  # noqa: F401  (everything the browser needs, torch included, is loaded)

    with tempfile.TemporaryDirectory() as tmp:
        inputs, output = Path(tmp) / "in", Path(tmp) / "out"
        make_shapes_folder(inputs, REAL_FILES, size=256)
        output.mkdir()
        with open(output / "predictions.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(_line(i)) + "\n" for i in range(lines))
        (output / "summary.json").write_text(json.dumps({"task": "classification", "input": str(inputs)}))
        worst = browse(app, output, lines, "as imported")
        # What the results window does once it is up (ui/results/window.py): the objects made at start-up
        # (torch's, Qt's) go to the permanent generation, so a full collection no longer walks them.
        gc.freeze()
        frozen_worst = browse(app, output, lines, "after gc.freeze()")
    print(
        f"worst repaint, as imported / after gc.freeze(): GUI thread CPU {worst[1] / frozen_worst[1]:.1f}x, "
        f"wall {worst[0] / frozen_worst[0]:.1f}x (wall includes waiting for a core on a busy machine)"
    )


if __name__ == "__main__":
    main()
