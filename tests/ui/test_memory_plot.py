"""The memory plot with a probe that returns known numbers."""

from __future__ import annotations

import csv

import numpy as np
import pyqtgraph as pg
import pytest
from PIL import Image
from PySide6.QtCore import Qt

from batchlens.ui.memory_plot import Marker, MemoryPlot, RingBuffer
from batchlens.ui.plot_markers import LABEL_ROW_PX
from tests.ui.conftest import GIB, MIB, FakeProbe


def make_plot(qtbot, probe, **kwargs) -> MemoryPlot:
    plot = MemoryPlot(probe, **kwargs)
    plot.timer.stop()  # the tests drive sampling themselves
    qtbot.addWidget(plot)
    plot.resize(640, 400)
    plot.show()
    return plot


def label_of(line):
    """The text label pyqtgraph draws on a marker's line."""
    return next(c for c in line.childItems() if isinstance(c, pg.InfLineLabel))


def add_markers_at(plot, monkeypatch, markers) -> None:
    """Add each (time, kind) marker as if it came at that time on the plot's clock."""
    for at, kind in markers:
        monkeypatch.setattr(plot, "now_s", lambda at=at: at)
        plot.add_marker(kind, kind)


def points(curve) -> list[float]:
    _, y = curve.getData()
    return [] if y is None else list(y)


def legend_names(plot: MemoryPlot) -> list[str]:
    return [label.text for _, label in plot.legend.items]


def y_top(plot: MemoryPlot) -> float:
    bottom, top = plot.plot_item.viewRange()[1]
    assert bottom == 0
    return top


def assert_scaled_to(plot: MemoryPlot, highest: float) -> None:
    """The scale's top is the highest line drawn plus a row of marker labels (1.1 to 1.5 times it)."""
    top = y_top(plot)
    assert 1.1 * highest <= top * 1.000001 and top <= 1.5 * highest * 1.000001, (top, highest)
    free_px = (1 - highest / top) * plot.plot_item.vb.height()
    assert free_px >= LABEL_ROW_PX - 0.5 or top == pytest.approx(1.5 * highest), free_px


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
    # The lines reach 1.1 GiB of 8 GiB: the scale follows them, in MiB, without the device total.
    assert plot.plot_item.getAxis("left").labelUnits == "MiB"
    _, allocated = plot.curves["allocated"].getData()
    _, reserved = plot.curves["reserved"].getData()
    _, peak = plot.curves["peak"].getData()
    _, used = plot.curves["device_used"].getData()
    assert np.allclose(allocated * MIB, [s[0] for s in samples])
    assert np.allclose(reserved * MIB, [s[1] for s in samples])
    assert np.allclose(peak * MIB, [s[2] for s in samples])
    assert np.allclose(used * MIB, [s[3] for s in samples])
    assert points(plot.curves["device_total"]) == []
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
    # No device total from this backend: nothing to draw, nothing to scale the whole device to.
    assert points(plot.curves["device_total"]) == []
    assert not plot.whole_device.isVisible()
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
    assert plot.curves["allocated"].opts["name"] == "process RAM"  # plain words: no "RSS"
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
    plot = make_plot(qtbot, FakeProbe("cpu"))
    for kind in ("run_start", "run_end", "clear_cache", "run_start"):
        plot.add_marker(kind, kind)
    labels = [label_of(line) for _, line in plot.marker_lines()]
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
    rows = list(csv.DictReader((tmp_path / "memory.csv").read_text(encoding="utf-8").splitlines()))
    samples = [r for r in rows if not r["marker"]]
    assert len(rows) == 3 and len(samples) == 2
    assert samples[0]["allocated_bytes"] == str(MIB) and samples[1]["device_total_bytes"] == str(10 * MIB)
    marker = rows[1]  # between the two samples, in time order, with no values of its own
    assert (marker["marker"], marker["marker_text"]) == ("run_start", "Run started")
    assert marker["allocated_bytes"] == ""
    assert float(samples[0]["time_s"]) <= float(marker["time_s"]) <= float(samples[1]["time_s"])
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


def test_markers_older_than_the_plot_are_exported_at_their_own_time(qtbot, tmp_path):
    """The plot keeps 2 minutes of samples; a marker from before that keeps its own time in the CSV
    instead of being lumped into the first row."""
    plot = make_plot(qtbot, FakeProbe("cpu"))
    plot.markers.append(Marker(-500.0, "run_start", "Run started long ago"))
    plot.markers.append(Marker(-300.0, "run_end", "Run finished long ago"))
    plot.sample_now()
    plot.export_csv(tmp_path / "memory.csv")
    rows = list(csv.DictReader((tmp_path / "memory.csv").read_text(encoding="utf-8").splitlines()))
    first_two = [(r["time_s"], r["marker"]) for r in rows[:2]]
    assert first_two == [("-500.000", "run_start"), ("-300.000", "run_end")]
    assert all(not r["marker"] for r in rows[2:]) and rows[2]["allocated_bytes"]


def test_marker_labels_stay_inside_the_plot_and_apart(qtbot):
    """A new marker sits at the right edge of the scrolling plot: its label must read whole, inside the
    plot, and two labels close in time must not overlap."""
    plot = make_plot(qtbot, FakeProbe("cpu"))
    plot.resize(500, 300)
    plot.show()
    qtbot.waitExposed(plot)
    for _ in range(3):
        plot.sample_now()
    plot.plot_item.setXRange(0, 10, padding=0)
    plot.add_marker("run_start", "Run started")
    plot.add_marker("run_end", "Run finished")
    plot.add_marker("clear_cache", "Freed 0 B")
    line_at = {m.kind: line for m, line in plot.marker_lines()}
    for line in line_at.values():
        line.setValue(9.9)  # at the right edge, as a marker just set is

    def labels_inside_and_apart():
        view = plot.plot_item.vb.sceneBoundingRect()
        boxes = []
        for line in line_at.values():
            label = label_of(line)
            box = label.mapRectToScene(label.boundingRect())
            assert view.contains(box), (label.textItem.toPlainText(), box, view)
            boxes.append(box)
        assert not any(a.intersects(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])

    qtbot.waitUntil(labels_inside_and_apart, timeout=5000)  # once pyqtgraph has placed the labels


def test_labels_that_face_each_other_do_not_overlap(qtbot, monkeypatch):
    """Seen in an 800x600 screenshot: "run start" at 3 s (text to the right of its line) and "clear
    cache" at 6.3 s (text to the left of its line, which is past the middle) printed over each other
    in one row, though their lines were more than a label's width apart."""
    plot = make_plot(qtbot, FakeProbe("cpu"))
    plot.resize(360, 260)  # the plot's size in an 800x600 window
    plot.show()
    qtbot.waitExposed(plot)
    plot.sample_now()
    assert plot.plot_item.viewRange()[0] == [0, 10]
    add_markers_at(plot, monkeypatch, ((3.0, "run_start"), (6.3, "clear_cache")))

    def facing_labels_apart():
        boxes = [
            label_of(line).mapRectToScene(label_of(line).boundingRect()) for _, line in plot.marker_lines()
        ]
        assert boxes[0].right() > boxes[1].left() - 80  # close enough on screen to collide in one row
        assert not boxes[0].intersects(boxes[1]), boxes
        assert plot.plot_item.vb.sceneBoundingRect().contains(boxes[1])
        # "clear cache" turned to the free side of its line: both stay in the top row, above the lines
        # (a lower row would hide the lines behind its label)
        assert boxes[0].top() == boxes[1].top() and boxes[1].left() > boxes[0].right()

    qtbot.waitUntil(facing_labels_apart, timeout=5000)  # once pyqtgraph has placed the labels


def test_save_dialogs_start_in_the_output_folder(qtbot, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    plot = make_plot(qtbot, FakeProbe("cuda"))
    offered = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (offered.append(a[2]) or "", ""))
    plot.set_save_folder(tmp_path / "out")  # not made yet: the dialog starts beside it
    qtbot.mouseClick(plot.save_button, Qt.MouseButton.LeftButton)
    (tmp_path / "out").mkdir()
    qtbot.mouseClick(plot.csv_button, Qt.MouseButton.LeftButton)
    assert offered == [str(tmp_path / "memory.png"), str(tmp_path / "out" / "memory.csv")]


# The H200 run of 2026-11-27 (docs/gpu-proof/gpu-window-memory.csv): a ResNet-50 on a 139.8 GiB card.
H200_TOTAL = 150109880320
H200_RUN = [
    (0, 0, 0, 552402944, H200_TOTAL),  # before the run: the CUDA context only
    (241608192, 452984832, 320775680, 1181548544, H200_TOTAL),
    (2045 * MIB, 3506 * MIB, 2829 * MIB, 4204 * MIB, H200_TOTAL),  # mid-run
    (33 * MIB, 3506 * MIB, 2829 * MIB, 4204 * MIB, H200_TOTAL),  # the end: reserved kept for reuse
]


def test_a_run_on_a_big_gpu_fills_the_plot_and_whole_gpu_shows_the_card(qtbot):
    """4.1 GiB used of 139.8 GiB: the scale follows the run's lines (they were flat along the bottom
    of a 0-150 GiB plot); the total is still in the readout, and Whole GPU scales to the card."""
    plot = make_plot(qtbot, FakeProbe("cuda", H200_RUN))
    for _ in H200_RUN[1:]:
        plot.sample_now()
    assert plot.plot_item.getAxis("left").labelUnits == "GiB"
    assert_scaled_to(plot, 4204 / 1024)  # the highest line: device used
    top = y_top(plot)
    assert max(points(plot.curves["reserved"])) / top > 0.6  # the run's own lines fill the plot
    assert points(plot.curves["device_total"]) == [] and "device total" not in legend_names(plot)
    assert plot.readout.text().endswith("device used 4.1 GiB of 139.8 GiB")

    assert plot.whole_device.isVisible() and plot.whole_device.text() == "Whole GPU"
    qtbot.mouseClick(plot.whole_device, Qt.MouseButton.LeftButton)
    assert plot.whole_device.isChecked()
    assert_scaled_to(plot, H200_TOTAL / GIB)
    assert points(plot.curves["device_total"]) == pytest.approx([H200_TOTAL / GIB] * len(H200_RUN))
    assert legend_names(plot)[-1] == "device total"

    qtbot.mouseClick(plot.whole_device, Qt.MouseButton.LeftButton)
    assert y_top(plot) == pytest.approx(top) and "device total" not in legend_names(plot)


def test_the_device_total_is_drawn_once_the_run_comes_near_it(qtbot):
    far = (1 * GIB, 2 * GIB, 1 * GIB, 3 * GIB, 8 * GIB)  # 3 of 8 GiB: out of reach
    near = (5 * GIB, 6 * GIB, 5 * GIB, 7 * GIB, 8 * GIB)  # 7 of 8 GiB: the total matters now
    plot = make_plot(qtbot, FakeProbe("cuda", [far, far, near]))
    plot.sample_now()
    assert_scaled_to(plot, 3)
    assert "device total" not in legend_names(plot)
    plot.sample_now()
    assert_scaled_to(plot, 8)
    assert points(plot.curves["device_total"]) == [8.0, 8.0, 8.0]
    assert legend_names(plot)[-1] == "device total"


def test_on_the_cpu_the_scale_is_the_process_ram(qtbot):
    """The machine's 16 GiB would squash the process's 750 MiB: it is text only, and there is no
    Whole GPU to tick."""
    probe = FakeProbe("cpu", [(700 * MIB, 700 * MIB, 750 * MIB, 5 * GIB, 16 * GIB)])
    plot = make_plot(qtbot, probe)
    plot.sample_now()
    assert plot.plot_item.getAxis("left").labelUnits == "MiB"
    assert_scaled_to(plot, 750)
    assert points(plot.curves["device_total"]) == [] and not plot.curves["device_used"].isVisible()
    assert not plot.whole_device.isVisible()
    assert legend_names(plot) == ["process RAM", "peak RAM"]


@pytest.mark.parametrize("width", [420, 620, 940])
def test_the_legend_sits_above_the_plot_and_covers_nothing(qtbot, width):
    """Inside the plot the legend hid the newest samples and, at 1280x720, the clear-cache label.
    Above it, it must cover neither the view nor a marker label, and take little height when narrow."""
    plot = make_plot(qtbot, FakeProbe("cuda", H200_RUN))
    plot.resize(width, 330)
    qtbot.waitExposed(plot)
    plot.add_marker("run_start", "Run started")
    plot.sample_now()
    plot.add_marker("clear_cache", "Freed 2.1 GiB")
    qtbot.mouseClick(plot.whole_device, Qt.MouseButton.LeftButton)  # five entries

    def legend_above_and_clear():
        legend = plot.legend.sceneBoundingRect()
        view = plot.plot_item.vb.sceneBoundingRect()
        widget = plot.plot_item.sceneBoundingRect()
        assert len(plot.legend.items) == 5
        assert legend.bottom() <= view.top() and widget.contains(legend), (legend, view, widget)
        for _, line in plot.marker_lines():
            label = label_of(line)
            box = label.mapRectToScene(label.boundingRect())
            assert view.contains(box) and not box.intersects(legend)
        for _, entry in plot.legend.items:  # every entry inside the legend's own box, none cut off
            assert legend.adjusted(-1, -1, 1, 1).contains(entry.sceneBoundingRect())
        # Full names where they fit in one row; short ones where that saves a row (the tooltip explains).
        rows = {round(entry.sceneBoundingRect().top()) for _, entry in plot.legend.items}
        assert len(rows) == {420: 2, 620: 1, 940: 1}[width]
        short = ["allocated", "reserved", "peak allocated", "device used", "device total"]
        full = [
            "allocated (live tensors)",
            "reserved (allocated + cache)",
            "peak allocated",
            "device used (all processes)",
            "device total",
        ]
        assert legend_names(plot) == (full if width == 940 else short)

    qtbot.waitUntil(legend_above_and_clear, timeout=5000)  # once pyqtgraph has laid the legend out


def test_labels_far_apart_on_the_shown_span_share_the_top_row(qtbot, monkeypatch):
    """Early in a run the plot shows 10 s, not its 2-minute window: labels 5 s apart are far apart on
    screen and both sit in the top row, above the lines (lower rows would cover them)."""
    plot = make_plot(qtbot, FakeProbe("cuda", H200_RUN))
    qtbot.waitExposed(plot)
    plot.sample_now()
    assert plot.plot_item.viewRange()[0] == [0, 10]
    add_markers_at(plot, monkeypatch, ((1.0, "run_start"), (6.0, "clear_cache")))
    labels = [label_of(line) for _, line in plot.marker_lines()]
    positions = [label.orthoPos for label in labels]
    assert len(positions) == 2 and positions[0] == positions[1] > 0.9
