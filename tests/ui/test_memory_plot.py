"""The memory plot with a probe that returns known numbers."""

from __future__ import annotations

import csv

import numpy as np
from PIL import Image
from PySide6.QtCore import Qt

from batchlens.ui.memory_plot import MemoryPlot, RingBuffer
from tests.ui.conftest import GIB, MIB, FakeProbe


def make_plot(qtbot, probe, **kwargs) -> MemoryPlot:
    plot = MemoryPlot(probe, **kwargs)
    plot.timer.stop()  # the tests drive sampling themselves
    qtbot.addWidget(plot)
    plot.resize(640, 400)
    plot.show()
    return plot


def test_ring_buffer_keeps_the_newest_rows_in_order():
    ring = RingBuffer(4, 2)
    for i in range(10):
        ring.append((i, i * 10))
    assert len(ring) == 4
    assert ring.array()[:, 0].tolist() == [6, 7, 8, 9]


def test_known_numbers_become_the_curves_data(qtbot):
    samples = [
        (100 * MIB, 300 * MIB, 120 * MIB, 1000 * MIB, 8 * GIB),
        (200 * MIB, 300 * MIB, 220 * MIB, 1100 * MIB, 8 * GIB),
        (50 * MIB, 100 * MIB, 220 * MIB, 900 * MIB, 8 * GIB),
    ]
    probe = FakeProbe("cuda", samples)
    plot = make_plot(qtbot, probe)  # set_probe takes the first sample
    plot.sample_now()
    plot.sample_now()
    # 8 GiB on the device: the axis is in GiB.
    assert plot.plot_item.getAxis("left").labelUnits == "GiB"
    _, allocated = plot.curves["allocated"].getData()
    _, reserved = plot.curves["reserved"].getData()
    _, peak = plot.curves["peak"].getData()
    _, used = plot.curves["device_used"].getData()
    assert np.allclose(allocated * GIB, [s[0] for s in samples])
    assert np.allclose(reserved * GIB, [s[1] for s in samples])
    assert np.allclose(peak * GIB, [s[2] for s in samples])
    assert np.allclose(used * GIB, [s[3] for s in samples])
    assert plot.total_line.isVisible() and plot.total_line.value() == 8.0
    assert "Allocated 50.0 MiB" in plot.readout.text()
    assert "of 8.0 GiB" in plot.readout.text()
    assert "cannot free" in plot.plot_widget.toolTip()


def test_small_numbers_are_shown_in_mib_and_hover_reads_the_nearest_sample(qtbot):
    probe = FakeProbe("mps", [(10 * MIB, 40 * MIB, 20 * MIB, None, None)])
    plot = make_plot(qtbot, probe)
    plot.sample_now()
    assert plot.plot_item.getAxis("left").labelUnits == "MiB"
    _, allocated = plot.curves["allocated"].getData()
    assert np.allclose(allocated, 10.0)
    assert not plot.total_line.isVisible()
    row = plot.values_at(plot.now_s())
    assert row[1] == 10 * MIB and row[2] == 40 * MIB


def test_history_stays_bounded_after_many_samples(qtbot):
    probe = FakeProbe("cuda", [(i * MIB, i * MIB, i * MIB, i * MIB, GIB) for i in range(300)])
    plot = make_plot(qtbot, probe, interval_ms=100, window_s=3)
    for _ in range(299):
        plot.sample_now()
    assert len(plot.history) == plot.history.capacity == 40
    _, allocated = plot.curves["allocated"].getData()
    assert len(allocated) == 40
    assert allocated[-1] * MIB == 299 * MIB  # the newest sample is kept


def test_cpu_plot_says_ram_not_vram(qtbot):
    probe = FakeProbe("cpu", [(700 * MIB, 700 * MIB, 750 * MIB, 5 * GIB, 16 * GIB)])
    plot = make_plot(qtbot, probe)
    assert "RAM, not GPU memory" in plot.title.text()
    assert plot.curves["allocated"].opts["name"] == "process RAM (RSS)"
    assert not plot.curves["reserved"].isVisible() and not plot.curves["device_used"].isVisible()
    assert "machine RAM used 5.0 GiB of 16.0 GiB" in plot.readout.text()


def test_markers_for_failures_and_clear_cache(qtbot):
    probe = FakeProbe("cuda", freed=int(1.2 * GIB), still=340 * MIB)
    plot = make_plot(qtbot, probe)
    plot.add_marker("failure", "bad.jpg: not an image")
    with qtbot.waitSignal(plot.cache_cleared) as signal:
        qtbot.mouseClick(plot.clear_button, Qt.MouseButton.LeftButton)
    assert probe.clear_calls == 1
    assert signal.args[0].message().startswith("Freed 1.2 GiB of cached memory; 340.0 MiB still allocated")
    kinds = [m.kind for m, _ in plot.marker_lines()]
    assert kinds == ["failure", "clear_cache"]
    for marker, line in plot.marker_lines():
        assert line in plot.plot_item.items and line.value() == marker.time_s


def test_labels_of_markers_close_in_time_do_not_overlap(qtbot):
    """A run of a few images starts and ends within a fraction of a second: its two labels must not
    be printed on top of each other."""
    import pyqtgraph as pg

    plot = make_plot(qtbot, FakeProbe("cpu"))
    for kind in ("run_start", "run_end", "clear_cache", "run_start"):
        plot.add_marker(kind, kind)
    labels = [
        next(c for c in line.childItems() if isinstance(c, pg.InfLineLabel))
        for _, line in plot.marker_lines()
    ]
    assert [label.textItem.toPlainText() for label in labels] == [
        "run start",
        "run end",
        "clear cache",
        "run start",
    ]
    heights = [label.orthoPos for label in labels]
    assert len(set(heights)) == 4 and all(0 < h < 1 for h in heights)


def test_export_csv_and_save_png(qtbot, tmp_path):
    probe = FakeProbe(
        "cuda",
        [(1 * MIB, 2 * MIB, 3 * MIB, 4 * MIB, 5 * MIB), (6 * MIB, 7 * MIB, 8 * MIB, 9 * MIB, 10 * MIB)],
    )
    plot = make_plot(qtbot, probe)
    plot.add_marker("run_start", "Run started")
    plot.sample_now()
    plot.export_csv(tmp_path / "memory.csv")
    rows = list(csv.DictReader(open(tmp_path / "memory.csv", encoding="utf-8")))
    assert len(rows) == 2
    assert rows[0]["allocated_bytes"] == str(MIB) and rows[1]["device_total_bytes"] == str(10 * MIB)
    assert "run_start" in rows[1]["markers"] and rows[0]["markers"] == ""
    plot.save_png(tmp_path / "memory.png")
    with Image.open(tmp_path / "memory.png") as image:
        assert image.size[0] > 100 and image.size[1] > 100


def test_hover_reads_out_the_values_under_the_mouse(qtbot):
    probe = FakeProbe("cuda", [(10 * MIB, 40 * MIB, 20 * MIB, 100 * MIB, GIB)])
    plot = make_plot(qtbot, probe)
    plot.sample_now()
    centre = plot.plot_item.vb.sceneBoundingRect().center()
    plot.plot_widget.scene().sigMouseMoved.emit(centre)
    text = plot.hover_label.text()
    assert text.startswith("at ") and "allocated 10.0 MiB" in text and "device used 100.0 MiB" in text
    assert plot.hover_line.isVisible()


def test_the_buttons_save_where_the_user_chose(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    plot = make_plot(qtbot, FakeProbe("cuda"))
    chosen = iter([str(tmp_path / "plot.png"), str(tmp_path / "history.csv")])
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (next(chosen), ""))
    qtbot.mouseClick(plot.save_button, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(plot.csv_button, Qt.MouseButton.LeftButton)
    assert (tmp_path / "plot.png").stat().st_size > 0
    assert (tmp_path / "history.csv").read_text("utf-8").startswith("time_s,allocated_bytes")
    assert plot.hover_label.text() == f"Saved {tmp_path / 'history.csv'}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.csv", "plot.png"]  # no temp files left
