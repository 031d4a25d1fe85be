"""Fixtures for the window tests: a probe with known numbers, settings in a temporary file, a window."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

from batchlens.core.memory import ClearResult, MemoryProbe, MemorySample

MIB = 2**20
GIB = 2**30


class FakeProbe(MemoryProbe):
    """Returns scripted samples (bytes), then keeps repeating the last one; counts clear_cache calls."""

    description = "A fake GPU for the tests."

    def __init__(
        self, kind: str = "cuda", samples: list[tuple] | None = None, freed: int = 0, still: int = 0
    ):
        self.kind = kind
        self.samples = list(samples or [(100 * MIB, 200 * MIB, 150 * MIB, 1 * GIB, 8 * GIB)])
        self.calls = 0
        self.clear_calls = 0
        self.freed = freed
        self.still = still

    def sample(self) -> MemorySample:
        values = self.samples[min(self.calls, len(self.samples) - 1)]
        self.calls += 1
        return MemorySample(time.monotonic(), *values)

    def clear_cache(self) -> ClearResult:
        self.clear_calls += 1
        return ClearResult(self.freed, self.still)


@pytest.fixture(autouse=True)
def isolated_qsettings(tmp_path: Path):
    """Nothing a test does may touch the real user's remembered settings."""
    for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, str(tmp_path / "qsettings"))
    yield


@pytest.fixture
def fake_probe() -> FakeProbe:
    return FakeProbe()


@pytest.fixture
def window(qtbot, tmp_path: Path, fake_probe: FakeProbe):
    from batchlens.ui.main_window import MainWindow
    from batchlens.ui.settings import Settings

    win = MainWindow(Settings(tmp_path / "settings.ini"), probe_factory=lambda name: fake_probe)
    win.ask_questions = False
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()  # cancels and waits for any run still going
    assert win.thread is None or not win.thread.isRunning()
