"""The held-but-unused curves: reserved - allocated, split into fragmented (inactive split) bytes and
the free cache, from a probe that returns known numbers (including the allocator's split figures)."""

from __future__ import annotations

import numpy as np

from batchlens.core.machine.memory import MpsProbe, allocator_sample
from batchlens.ui.memory_plot import MemoryPlot
from batchlens.ui.plot_legend import TIPS
from tests.ui.conftest import GIB, MIB, FakeProbe

# (allocated, reserved, peak, device used, device total, inactive split, segments)
FRAGMENTING = [
    (1 * GIB, 2 * GIB, 1 * GIB, 3 * GIB, 80 * GIB, 256 * MIB, 12),
    (1 * GIB, 3 * GIB, 2 * GIB, 4 * GIB, 80 * GIB, 1 * GIB, 30),
]


def make_plot(qtbot, probe) -> MemoryPlot:
    plot = MemoryPlot(probe)
    plot.timer.stop()
    qtbot.addWidget(plot)
    plot.resize(900, 400)
    plot.show()
    return plot


def test_the_allocator_stats_give_inactive_split_bytes_and_segments():
    stats = {
        "allocated_bytes": {"all": {"current": 10, "peak": 20}},
        "reserved_bytes": {"all": {"current": 50}},
        "inactive_split_bytes": {"all": {"current": 15}},
        "segment": {"all": {"current": 3}},
    }
    sample = allocator_sample(stats, None, None)
    assert (sample.inactive_split, sample.segments, sample.held_unused) == (15, 3, 40)
    bare = allocator_sample({"allocated_bytes": {"all": {"current": 1}}}, None, None)
    assert bare.inactive_split is None and bare.segments is None


def test_held_unused_is_split_into_fragmented_and_free_cache(qtbot):
    plot = make_plot(qtbot, FakeProbe("cuda", FRAGMENTING))
    plot.sample_now()
    _, held = plot.curves["held_unused"].getData()
    _, fragmented = plot.curves["fragmented"].getData()
    assert plot.plot_item.getAxis("left").labelUnits == "GiB"
    assert np.allclose(held * GIB, [1 * GIB, 2 * GIB])
    assert np.allclose(fragmented * GIB, [256 * MIB, 1 * GIB])
    names = [sample.item.opts["name"] for sample, _ in plot.legend.items]
    assert "fragmented (inactive splits)" in names and "held unused (reserved − allocated)" in names
    assert "fragmented 1.0 GiB, free cache 1.0 GiB · 30 segments" in plot.readout.text()
    # Every entry explains its line in plain words.
    for sample, label in plot.legend.items:
        assert label.toolTip() == TIPS[sample.item.key] and sample.toolTip()
    # Hovering reads the split and the segment count at that moment.
    plot._on_mouse_moved(plot.plot_item.vb.mapViewToScene(plot.plot_item.vb.viewRect().center()))
    assert "segments" in plot.hover_label.text() and "fragmented" in plot.hover_label.text()


def test_a_backend_without_splits_draws_no_split_and_says_so(qtbot, monkeypatch):
    probe = FakeProbe("mps", [(10 * MIB, 40 * MIB, 20 * MIB, None, None)])
    probe.fragmentation_note = MpsProbe.fragmentation_note
    plot = make_plot(qtbot, probe)
    plot.sample_now()
    assert plot.curves["held_unused"].getData()[1] is None or not len(plot.curves["held_unused"].getData()[1])
    assert not any(s.item.key in ("held_unused", "fragmented") for s, _ in plot.legend.items)
    assert "does not report how much of its cache is fragmented" in plot.plot_widget.toolTip()


def test_the_csv_carries_the_split_and_segments(qtbot, tmp_path):
    plot = make_plot(qtbot, FakeProbe("cuda", FRAGMENTING))
    plot.sample_now()
    plot.export_csv(tmp_path / "m.csv")
    header, first, *_ = (tmp_path / "m.csv").read_text("utf-8").splitlines()
    assert header.split(",")[6:8] == ["inactive_split_bytes", "segments"]
    assert first.split(",")[6:8] == [str(256 * MIB), "12"]
