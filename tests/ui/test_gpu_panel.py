"""The panel of processes on the GPU, over a recorded fake of NVML (tests/core/fake_nvml.py)."""

from __future__ import annotations

import os
import sys

from batchlens.core.machine.gpu_processes import GpuProcessReader
from batchlens.ui.gpu_panel import OWN_COLOR, GpuProcessesPanel
from tests.core.fake_nvml import GIB, FakeNvml

OWN = os.getpid()


def make_panel(qtbot, fake) -> GpuProcessesPanel:
    names = {OWN: "python", 4242: "trainer", 777: "Xorg"}
    panel = GpuProcessesPanel(
        lambda kind, index: GpuProcessReader(kind, index, fake, name_of=lambda pid: names.get(pid, "worker")),
        interval_ms=50,
    )
    qtbot.addWidget(panel)
    panel.show()
    return panel


def cells(panel, row) -> list[str]:
    return [panel.table.item(row, c).text() for c in range(panel.table.columnCount())]


def test_the_panel_lists_every_process_and_highlights_batchlens(qtbot):
    fake = FakeNvml(
        [(OWN, 9 * GIB, "compute"), (4242, 28 * GIB, "compute"), (777, None, "graphics")],
        utilisation=[(OWN, 60, 30), (4242, 25, 10)],
    )
    panel = make_panel(qtbot, fake)
    with qtbot.waitSignal(panel.updated, timeout=3000):
        panel.set_device("cuda", 0)
    assert cells(panel, 0) == ["python (BatchLens)", str(OWN), "9.0 GiB", "60%"]
    assert cells(panel, 1) == ["trainer", "4242", "28.0 GiB", "25%"]
    assert cells(panel, 2) == ["Xorg", "777", "—", "—"]
    assert panel.table.item(0, 0).background().color() == OWN_COLOR
    assert panel.table.item(0, 0).font().bold() and not panel.table.item(1, 0).font().bold()
    assert "2 other processes hold 28.0 GiB" in panel.summary.text()
    # Refreshed on the timer (off the GUI thread): a process that starts shows up.
    fake.processes.append((5150, GIB, "compute"))
    qtbot.waitUntil(lambda: panel.table.rowCount() == 4, timeout=3000)
    panel.shutdown()
    assert fake.initialised == 0


def test_without_nvml_the_panel_says_why_in_plain_words(qtbot, monkeypatch):
    panel = GpuProcessesPanel()
    qtbot.addWidget(panel)
    panel.set_device("cpu")
    assert "needs an NVIDIA GPU" in panel.summary.text() and "the CPU" in panel.summary.text()
    assert panel.table.isHidden() and not panel.timer.isActive()
    monkeypatch.setitem(sys.modules, "pynvml", None)
    panel.set_device("cuda", 0)
    assert 'pip install "batchlens[nvml]"' in panel.summary.text()
    broken = make_panel(qtbot, FakeNvml([], init_error="Driver Not Loaded"))
    with qtbot.waitSignal(broken.updated, timeout=3000):
        broken.set_device("cuda", 0)
    assert "Driver Not Loaded" in broken.summary.text() and not broken.timer.isActive()
    broken.shutdown()
