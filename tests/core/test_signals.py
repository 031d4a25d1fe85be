"""Ctrl+C, SIGTERM and --image-timeout on a real `batchlens run` process (issue 12, point 16).

The model is slow on purpose: a tiny module whose forward sleeps, saved as a whole pickled model
(so it runs with --trust-pickle, its module importable through PYTHONPATH). Its delay comes from
the environment, so one file serves every test: a forward looping in Python (SLOW_SECONDS), one
long C-level sleep (SLOW_MODE=c), or a forward stuck only on the all-white image (SLOW_STUCK_SECONDS).
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.helpers import make_shapes_folder

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

SLOW_MODULE = """
import os, time
import torch

class Slow(torch.nn.Module):
    def forward(self, x):
        if os.environ.get("SLOW_STARTED"):  # a file that says a forward has begun
            open(os.environ["SLOW_STARTED"], "a").close()
        mean = float(x.mean())
        stuck = mean > 0.95 or mean < 0.05  # the all-white and the all-black image
        seconds = float(os.environ.get("SLOW_STUCK_SECONDS" if stuck else "SLOW_SECONDS", "0") or 0)
        if os.environ.get("SLOW_MODE") == "c" or mean < 0.05:
            time.sleep(seconds)  # one call into C: nothing in Python runs until it returns
        else:
            end = time.monotonic() + seconds
            while time.monotonic() < end:  # Python code between short sleeps
                time.sleep(0.01)
        return x.mean((2, 3))
"""


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("slow-model")
    (folder / "slowmod.py").write_text(SLOW_MODULE)
    sys.path.insert(0, str(folder))
    try:
        import slowmod

        torch.save(slowmod.Slow(), folder / "slow.pth")
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("slowmod", None)
    (folder / "slow.json").write_text(json.dumps({"task": "classification", "input_size": [8, 8]}))
    return folder / "slow.pth"


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    make_shapes_folder(folder, 5, size=48)
    return folder


def digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def start(model: Path, photos: Path, out: Path, *extra: str, **env: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "batchlens", "run", "--model", str(model), "--trust-pickle"]
    command += ["--input", str(photos), "--output", str(out), "--device", "cpu", "--no-progress"]
    command += ["--batch-size", "1", *extra]
    environment = {**os.environ, "PYTHONPATH": str(model.parent), **env}
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
    )


def wait_for(condition, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the run"
        time.sleep(0.02)


def read_until(proc: subprocess.Popen, text: str, seconds: float = 60) -> str:
    """The process's stderr up to `text`, read straight from the pipe (communicate() reads the rest)."""
    fd, seen, deadline = proc.stderr.fileno(), b"", time.monotonic() + seconds
    while text.encode() not in seen:
        assert time.monotonic() < deadline, f"timed out waiting for {text!r}; stderr so far: {seen!r}"
        if select.select([fd], [], [], 0.1)[0]:
            chunk = os.read(fd, 65536)
            assert chunk, f"the run ended before saying {text!r}; stderr: {seen!r}"
            seen += chunk
    return seen.decode()


def catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for `signum` (its SigCgt mask in /proc)."""
    with open(f"/proc/{pid}/status") as status:
        caught = next(line for line in status if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) >> (signum - 1) & 1)


def lines_of(out: Path) -> list[dict]:
    path = out / "predictions.jsonl"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def finished(proc: subprocess.Popen, seconds: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=seconds)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    return proc.returncode, out, err


def test_first_ctrl_c_stops_after_the_current_image(slow_model, photos, tmp_path):
    before, out = digest(photos), tmp_path / "out"
    proc = start(slow_model, photos, out, SLOW_SECONDS="0.6")
    wait_for(lambda: len(lines_of(out)) >= 1)
    proc.send_signal(signal.SIGINT)

    returncode, stdout, stderr = finished(proc)

    assert returncode == 130
    assert "Ctrl+C: stopping after the current image" in stderr
    assert "Interrupted; every finished image is in predictions.jsonl (use --resume to go on)." in stderr
    assert stdout.strip().splitlines()[-1].startswith("Cancelled: ")
    summary = json.loads((out / "summary.json").read_text())
    lines = lines_of(out)
    assert summary["cancelled"] is True and summary["counts"]["ok"] == len(lines)
    assert 1 <= len(lines) < 5 and all(line["status"] == "ok" for line in lines)
    assert not (out / ".batchlens.lock").exists()
    assert digest(photos) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "photos"]  # nothing written elsewhere


def test_sigterm_then_ctrl_c_stops_at_once_even_inside_a_long_forward(slow_model, photos, tmp_path):
    out = tmp_path / "out"
    forward = tmp_path / "forward-began"
    proc = start(slow_model, photos, out, SLOW_MODE="c", SLOW_SECONDS="600", SLOW_STARTED=str(forward))
    wait_for(forward.exists)  # inside the 600-second C call
    proc.send_signal(signal.SIGTERM)
    said = read_until(proc, "SIGTERM: stopping")  # the first stop was heard before the second comes
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)

    returncode, _, stderr = finished(proc, seconds=30)
    stderr = said + stderr

    assert time.monotonic() - began < 10  # at once, not after the 600-second forward
    assert returncode == 143  # SIGTERM started the stop
    assert "SIGTERM: stopping after the current image (press Ctrl+C again to stop at once)." in stderr
    assert "Stopped at once: every line in predictions.jsonl is complete" in stderr
    assert lines_of(out) == []  # valid (and empty: no image finished)
    assert not (out / ".batchlens.lock").exists()  # so --resume can go on at once


def test_ctrl_c_while_starting_is_one_sentence(slow_model, photos, tmp_path):
    before, out = digest(photos), tmp_path / "out"
    proc = start(slow_model, photos, out, SLOW_SECONDS="0.5")
    if os.path.exists(f"/proc/{proc.pid}/status"):
        # Python never catches SIGTERM itself: once the process does, batchlens' stop is installed and
        # it is busy importing torch, loading the model or scanning; the run has not begun.
        wait_for(lambda: catches(proc.pid, signal.SIGTERM))
    else:  # no /proc (macOS): a while into the start, as a person would press it
        time.sleep(0.8)
    proc.send_signal(signal.SIGINT)

    returncode, _, stderr = finished(proc)

    assert returncode == 130
    said = [line for line in stderr.splitlines() if "Ctrl+C" in line]
    assert said and (
        "stopped before the run started; nothing was written" in said[0]
        or "stopping after the current image" in said[0]
    )
    assert digest(photos) == before


def test_image_timeout_gives_up_stuck_images_and_goes_on(slow_model, photos, tmp_path):
    # Stuck in Python code (white: stopped where Python runs) and in one C call (black: left behind).
    Image.new("RGB", (48, 48), "white").save(photos / "stuck in python.png")
    Image.new("RGB", (48, 48), "black").save(photos / "stuck in c.png")
    out = tmp_path / "out"
    began = time.monotonic()
    proc = start(slow_model, photos, out, "--image-timeout", "1", SLOW_STUCK_SECONDS="60", SLOW_SECONDS="0")

    returncode, stdout, stderr = finished(proc)

    # The forward stuck in C still runs when the run ends: the program leaves without Python's
    # shutdown, which would abort it if that forward came back meanwhile (core/run/watchdog.py).
    assert returncode == 0, stderr
    assert "terminate called" not in stderr
    assert stdout.strip().splitlines()[-1].startswith("Finished: 5 image(s) ok, 2 failed")  # flushed
    assert time.monotonic() - began < 40  # not the stuck forwards' 60 s
    lines = {line["image"]: line for line in lines_of(out)}
    assert len(lines) == 7
    stuck = ["stuck in c.png", "stuck in python.png"]
    for name in stuck:
        assert lines[name]["status"] == "error"
        assert "took longer than 1 s on it (--image-timeout), so it was given up" in lines[name]["error"]
    assert all(line["status"] == "ok" for name, line in lines.items() if name not in stuck)
