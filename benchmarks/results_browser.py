"""How the results browser copes with a big output folder: opening it, scrolling it, its memory.

    python benchmarks/results_browser.py [LINES]    (default 20,000; runs offscreen)

Prints the time to read and lay out every line, the time to paint one screen while scrolling through
the whole grid (each step a synchronous repaint: what a user waits for per scroll step), how many tiles
were drawn, and the process's memory before and after. The folder is made like the test's
(tests/ui/test_results_browser.py): a few real images, many lines pointing at them or at missing files.
"""

from __future__ import annotations

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


def main() -> None:
    lines = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    app = QApplication([])
    from batchlens.ui.results import ResultsBrowser

    with tempfile.TemporaryDirectory() as tmp:
        inputs, output = Path(tmp) / "in", Path(tmp) / "out"
        make_shapes_folder(inputs, REAL_FILES, size=256)
        output.mkdir()
        with open(output / "predictions.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(_line(i)) + "\n" for i in range(lines))
        (output / "summary.json").write_text(json.dumps({"task": "classification", "input": str(inputs)}))

        browser = ResultsBrowser()
        browser.resize(1440, 900)
        browser.show()
        app.processEvents()
        rss_before = psutil.Process().memory_info().rss
        start = time.perf_counter()
        browser.open_folder(output)
        while browser.results.rowCount() < lines:
            app.processEvents()
        app.processEvents()
        opened = time.perf_counter() - start

        bar = browser.grid.verticalScrollBar()
        steps = 200
        frames = []
        for step in range(steps + 1):
            bar.setValue(bar.maximum() * step // steps)
            began = time.perf_counter()
            browser.grid.viewport().repaint()
            frames.append(time.perf_counter() - began)
            app.processEvents()  # tiles that are ready arrive here
        deadline = time.time() + 5
        while (
            browser.loader.is_waiting(browser._job(browser.shown.record(lines - 1)).key)
            and time.time() < deadline
        ):
            app.processEvents()
        rss_after = psutil.Process().memory_info().rss
        browser.shutdown()

    first_ms = frames[0] * 1000  # the first paint also warms font and style caches
    frames_ms = sorted(f * 1000 for f in frames[1:])
    median, p95 = statistics.median(frames_ms), frames_ms[int(0.95 * len(frames_ms))]
    cached_mib = browser.cache.bytes / 2**20
    print(f"{lines:,} results: opened (read + laid out) in {opened:.2f} s")
    print(
        f"paint per scroll step over the whole grid ({steps} steps): median {median:.1f} ms, "
        f"95th percentile {p95:.1f} ms, max {frames_ms[-1]:.1f} ms "
        f"(first paint {first_ms:.0f} ms)"
    )
    print(f"tiles drawn: {browser.loader.made:,}; cached now: {len(browser.cache):,} ({cached_mib:.1f} MiB)")
    print(
        f"RSS: {rss_before / 2**20:.0f} MiB before opening, "
        f"{rss_after / 2**20:.0f} MiB after scrolling to the end"
    )


if __name__ == "__main__":
    main()
