"""Memory flat at speed, on the CPU (issue 29; the cuda twin is tests/gpu/test_fast_path.py): with the
fast settings, the process's memory (RSS, the CPU probe's "allocated") over a stretch early in a run
equals that over a stretch late in it. Marked slow: ~10 s on 2 cores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from batchlens.core.run.bench_long import cached_folder, memory_medians
from batchlens.core.run.bench_loops import engine_run, load_bench_model

MiB = 2**20


@pytest.mark.slow
def test_allocated_medians_stay_the_same_from_early_to_late_with_the_fast_settings(tmp_path: Path):
    n = 3000
    folder = cached_folder(tmp_path / "sets", n, (160, 120), distinct=16)
    model, _ = load_bench_model("demo-shapes", torch.device("cpu"))
    out = engine_run(model, folder, tmp_path / "out", "cpu", None, timeline=True, fast_decode=True)
    assert len(out.done) == n and len(out.allocated) == n
    memory = memory_medians(out.allocated, early_at=500, stretch=500)
    print(f"\nRSS medians: {memory}")
    assert memory["early_from_image"] == 501 and memory["late_from_image"] == n - 1000 + 1
    assert abs(memory["difference"]) <= max(8 * MiB, 0.02 * memory["early_median"])
