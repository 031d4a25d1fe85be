"""The real `batchlens` under the GTK3 platform theme (issue #25: it died with exit 139 at every start,
in triton/knobs.py where triton's native library loads, once GTK's own graphics libraries were in).
This starts the app on an Xvfb display with QT_QPA_PLATFORMTHEME=gtk3 and runs a model with --start,
so torch, torchvision and triton all load behind the GTK3 window (ui/native_libs.py). It needs Xvfb,
GTK 3 and Qt's xcb and gtk3 plugins: where one is missing (CI has no display) it skips and says which."""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import PySide6
import pytest

from batchlens.core.resources import sample_folder

APP = str(Path(__file__).resolve().parents[2] / "app")
PLUGINS = Path(PySide6.__file__).parent / "Qt" / "plugins"


def missing() -> str | None:
    if not sys.platform.startswith("linux"):
        return "the GTK3 platform theme is a Linux desktop's"
    if shutil.which("Xvfb") is None:
        return "Xvfb is not installed (apt-get install xvfb)"
    if ctypes.util.find_library("gtk-3") is None:
        return "GTK 3 is not installed (apt-get install libgtk-3-0)"
    if not (PLUGINS / "platformthemes" / "libqgtk3.so").is_file():
        return "this Qt has no gtk3 platform theme plugin"
    return None


@pytest.fixture
def display():
    """A fresh Xvfb server; its display name."""
    read, write = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x720x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    try:
        if not number:
            pytest.skip("Xvfb did not start")
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_window_runs_a_model_under_the_gtk3_theme(display, tmp_path):
    if (reason := missing()) is not None:
        pytest.skip(reason)
    env = dict(
        os.environ,
        DISPLAY=display,
        QT_QPA_PLATFORMTHEME="gtk3",
        PYTHONPATH=os.pathsep.join([APP, os.environ.get("PYTHONPATH", "")]),
        HOME=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        NO_AT_BRIDGE="1",
    )
    env.pop("QT_QPA_PLATFORM", None)  # the tests' offscreen platform: this one is the real xcb
    output = tmp_path / "out"
    command = [sys.executable, "-X", "faulthandler", "-m", "batchlens", "--model", "demo-shapes"]
    images = tmp_path / "images"
    images.mkdir()
    for sample in sorted(sample_folder("demo-shapes").iterdir())[:2]:  # a short run: the load is the test
        shutil.copy(sample, images / sample.name)
    command += ["--input", str(images), "--output", str(output), "--start"]
    app = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and app.poll() is None and not (output / "summary.json").exists():
            time.sleep(0.2)
        alive = app.poll() is None
        maps = Path(f"/proc/{app.pid}/maps").read_text() if alive else ""
    finally:
        app.terminate()
        log, _ = app.communicate(timeout=30)
    assert alive, f"batchlens ended with exit code {app.returncode} under the GTK3 theme:\n{log[-3000:]}"
    assert (output / "summary.json").exists(), log[-3000:]
    # Both libraries were in the one process: GTK 3 (the theme) and triton (torch's, via torchvision).
    assert "libgtk-3" in maps and "libtriton" in maps
