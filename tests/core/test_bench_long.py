"""The long-run bench (core/run/bench_long.py) on the CPU with a few images: every row is there, and
its figures are consistent with each other (not timed assertions: this machine is shared)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from batchlens.core.run import bench_long
from batchlens.core.run.bench_long import cached_folder, memory_medians, rates, run_long_bench
from batchlens.core.run.bench_loops import load_bench_model


def test_rates_leave_the_first_tenth_out_of_the_steady_state():
    # 20 images: the first 2 (10 %) come after a 5 s start-up, then one every 0.1 s
    timeline = [5.0, 5.0] + [5.0 + 0.1 * i for i in range(1, 19)]
    end_to_end, steady, first = rates(timeline, 6.8)
    assert end_to_end == pytest.approx(20 / 6.8)
    assert steady == pytest.approx(18 / 1.8)
    assert first == 5.0
    assert rates([], 1.0) == (0.0, 0.0, None)


def test_memory_medians_compare_an_early_stretch_with_a_late_one():
    flat = memory_medians([100] * 40 + [120] * 40, early_at=10, stretch=10)
    assert flat["early_median"] == 100 and flat["late_median"] == 120 and flat["difference"] == 20
    assert flat["early_from_image"] == 11 and flat["late_from_image"] == 61
    assert memory_medians([1, 2, 3]) is None


def test_the_image_set_is_made_once_and_reused(tmp_path: Path):
    folder = cached_folder(tmp_path, 12, (64, 48), distinct=3)
    assert len(list(folder.glob("*.jpg"))) == 12
    stamp = folder.stat().st_mtime_ns
    assert cached_folder(tmp_path, 12, (64, 48), distinct=3) == folder
    assert folder.stat().st_mtime_ns == stamp  # not written again
    assert not list(tmp_path.glob("*.partial"))


def test_every_row_runs_on_the_cpu_with_consistent_figures(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(bench_long, "WARM_SHARE", 0.25)
    monkeypatch.setattr(bench_long, "CEILING_SECONDS", 0.05)
    folder = cached_folder(tmp_path / "sets", 24, (96, 72), distinct=4)
    model, _ = load_bench_model("demo-shapes", torch.device("cpu"))
    rows = {row.name: row for row in run_long_bench(model, folder, tmp_path / "scratch")}
    assert list(rows) == ["expert", "standard", "fastest", "dali", "ceiling"]
    assert rows["dali"].skipped == "DALI needs a CUDA device"
    for name in ("expert", "standard", "fastest"):
        row = rows[name]
        assert row.images == 24, name
        assert row.images_per_second == pytest.approx(24 / row.seconds, rel=1e-2), name
        assert row.steady_images_per_second > 0, name
        assert 0 < row.first_result_s <= row.seconds, name
    for name in ("standard", "fastest"):
        assert rows[name].vs_expert == pytest.approx(
            rows[name].images_per_second / rows["expert"].images_per_second, rel=1e-2
        )
        assert rows[name].memory is not None and rows[name].memory["early_median"] > 0
    assert rows["fastest"].settings["fast_decode"] is True
    ceiling = rows["ceiling"]
    assert ceiling.images >= 3 * 16 and ceiling.first_result_s is None
    assert ceiling.settings == {"batch_size": 16, "precision": "fp32", "channels_last": False}
