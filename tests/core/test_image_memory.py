"""Per-image memory: each line of predictions.jsonl carries the peak of the batch it ran in, and
summary.json names the five costliest images."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from batchlens.core.machine.memory import MemorySample
from batchlens.core.run.config import RunConfig
from batchlens.core.run.runner import Costliest, Runner, batch_peak


def test_each_line_has_its_batch_peak_and_the_summary_names_the_costliest(tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, size in enumerate((32, 48, 64, 400, 80, 96, 40)):
        Image.new("RGB", (size, size), (i * 30, 90, 200)).save(folder / f"img{i}.png")
    out = tmp_path / "out"
    list(Runner(RunConfig("demo-shapes", folder, out, device="cpu", batch_size=1)).events())
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text("utf-8").splitlines()]
    assert all(isinstance(line["peak_memory_bytes"], int) and line["peak_memory_bytes"] > 0 for line in lines)
    summary = json.loads((out / "summary.json").read_text("utf-8"))
    costliest = summary["costliest_images"]
    assert len(costliest) == 5
    peaks = [c["peak_memory_bytes"] for c in costliest]
    assert peaks == sorted(peaks, reverse=True)
    by_image = {line["image"]: line["peak_memory_bytes"] for line in lines}
    assert all(by_image[c["image"]] == c["peak_memory_bytes"] for c in costliest)
    assert peaks[0] == max(by_image.values())


def test_the_costliest_keeps_the_five_highest_and_the_span_peak_is_preferred():
    top = Costliest()
    for i, peak in enumerate([5, 1, 9, 3, 7, 2, 8, 6]):
        top.add(peak, f"{i}.png")
    assert [c["peak_memory_bytes"] for c in top.top()] == [9, 8, 7, 6, 5]
    assert batch_peak(MemorySample(0, 10, 20, 99, span_peak=42)) == 42
    assert batch_peak(MemorySample(0, 10, 20, 99)) == 10  # MPS: no span peak, what it holds after
