"""Crash reports (core/crash_log.py): faulthandler into the data folder, the note of what was running,
and the next start finding a session that died. One test crashes a real process with SIGSEGV."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from batchlens.core.crash_log import CrashLog, CrashReport
from batchlens.core.data_dir import user_data_dir

APP = Path(__file__).resolve().parents[2] / "app"


def fake_crashed_session(
    folder: Path, pid: int = 999_999_1, trace: str = "Fatal Python error: Segmentation fault\n"
):
    """The files a process leaves when it dies: its note (not clean) and faulthandler's output."""
    folder.mkdir(parents=True, exist_ok=True)
    note = {"pid": pid, "started": "2026-12-07 04:00:00", "clean": False}
    note["running"] = {
        "state": "running",
        "model": "demo-shapes",
        "input": "/photos",
        "output": "/photos-out",
    }
    (folder / f"session-{pid}.json").write_text(json.dumps(note))
    (folder / f"faults-{pid}.log").write_text(trace)


def test_the_crash_folder_is_in_the_data_folder_the_env_var_names(tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHLENS_DATA_DIR", str(tmp_path / "data"))
    assert CrashLog().folder == tmp_path / "data" / "crashes" == user_data_dir() / "crashes"


def test_a_session_that_died_is_reported_once_and_kept(tmp_path):
    folder = tmp_path / "crashes"
    fake_crashed_session(folder)
    log = CrashLog(folder)
    report = log.start()
    try:
        assert isinstance(report, CrashReport)
        assert "Segmentation fault" in report.trace
        assert report.running["model"] == "demo-shapes" and report.running["output"] == "/photos-out"
        assert report.describe_run() == "A run was running: demo-shapes on /photos, writing to /photos-out."
        assert report.saved_as is not None and "Segmentation fault" in report.saved_as.read_text()
        assert not (folder / "session-9999991.json").exists()  # reported once, not at every start
        assert "demo-shapes" in report.text() and report.text().startswith("BatchLens closed unexpectedly.")
    finally:
        log.finish()
    again = CrashLog(folder)
    assert again.start() is None
    again.finish()


def test_this_session_notes_its_run_and_leaves_nothing_after_a_clean_end(tmp_path):
    folder = tmp_path / "crashes"
    log = CrashLog(folder)
    assert log.start() is None
    try:
        log.note_run("running", "demo-shapes", tmp_path / "in", tmp_path / "out")
        log.note_run("paused")
        note = json.loads(log.session_path.read_text())
        assert note["clean"] is False and note["pid"] == os.getpid()
        assert note["running"] == {
            "state": "paused",
            "model": "demo-shapes",
            "input": str(tmp_path / "in"),
            "output": str(tmp_path / "out"),
        }
        assert log.faults_path.exists() and log.faults_path.read_text() == ""
    finally:
        log.finish()
    assert list(folder.glob("session-*")) == [] and list(folder.glob("faults-*")) == []


def test_a_session_that_ended_without_a_trace_or_still_runs_is_not_reported(tmp_path):
    folder = tmp_path / "crashes"
    fake_crashed_session(folder, pid=999_999_2, trace="")  # killed (SIGKILL, power cut): no trace
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    fake_crashed_session(folder, pid=other.pid)  # another BatchLens, still open: left alone
    log = CrashLog(folder)
    try:
        assert log.start() is None
        assert not (folder / "session-9999992.json").exists()
        assert (folder / f"session-{other.pid}.json").exists()
    finally:
        log.finish()
        other.kill()
        other.wait()


def test_a_real_segfault_leaves_a_report_the_next_start_finds(tmp_path):
    env = dict(os.environ, BATCHLENS_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(APP))
    script = textwrap.dedent(
        """
        import faulthandler
        from batchlens.core.crash_log import CrashLog

        log = CrashLog()
        log.start()
        log.note_run("running", "demo-shapes", "/in", "/out")
        faulthandler._sigsegv()
        """
    )
    crashed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=60)
    assert crashed.returncode != 0
    folder = tmp_path / "data" / "crashes"
    log = CrashLog(folder)
    report = log.start()
    try:
        assert report is not None
        assert "Segmentation fault" in report.trace and "<string>" in report.trace  # the line that died
        assert report.running == {
            "state": "running",
            "model": "demo-shapes",
            "input": "/in",
            "output": "/out",
        }
    finally:
        log.finish()
