"""Which images cost the most: the results browser sorts by each image's memory (its batch's peak,
`peak_memory_bytes` in predictions.jsonl) and shows a histogram of it."""

from __future__ import annotations

import json
from pathlib import Path

from batchlens.ui.results import ResultsBrowser

MIB = 2**20


def output_with_memory(tmp_path: Path, with_memory: bool = True) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    lines = []
    for i, mib in enumerate([30, 10, 700, 20, 40, 15]):
        line = {"image": f"img{i}.png", "status": "ok", "error": None, "seconds": 0.1, "top": []}
        if with_memory:
            line["peak_memory_bytes"] = mib * MIB
        lines.append(line)
    (out / "predictions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    (out / "summary.json").write_text(json.dumps({"model": "m", "task": "classification"}), encoding="utf-8")
    return out


def open_browser(qtbot, folder: Path) -> ResultsBrowser:
    browser = ResultsBrowser()
    qtbot.addWidget(browser)
    browser.resize(1000, 700)
    browser.show()
    browser.open_folder(folder)
    qtbot.waitUntil(lambda: browser.results.rowCount() == 6, timeout=5_000)
    return browser


def test_sorting_by_memory_puts_the_costliest_first_and_the_histogram_counts_them(qtbot, tmp_path):
    browser = open_browser(qtbot, output_with_memory(tmp_path))
    combo = browser.filters.sort_combo
    combo.setCurrentIndex(combo.findData("memory"))
    browser.filters.direction.setChecked(True)  # descending
    assert [r.image for r in browser.results.records][:3] == ["img2.png", "img4.png", "img0.png"]
    histogram = browser.memory_histogram
    qtbot.waitUntil(lambda: histogram.isVisible(), timeout=3_000)
    assert histogram.counts.sum() == 6 and histogram.counts[-1] == 1  # the one 700 MiB image alone
    assert histogram.costliest.text() == "Costliest: img2.png (700.0 MiB)."
    browser.shutdown()


def test_a_run_without_memory_figures_shows_no_histogram(qtbot, tmp_path):
    browser = open_browser(qtbot, output_with_memory(tmp_path, with_memory=False))  # its 6 rows are in
    assert not browser.memory_histogram.isVisible()
    browser.shutdown()
