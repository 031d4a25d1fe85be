"""Crash reports for a crash Python cannot catch (a segfault in Qt or a native library, an abort):
faulthandler writes the Python stack of every thread into a file in the app's data folder, beside a
small note of what was running (model, input, output, run state). The next start finds a session that
did not end cleanly and whose file has content, and hands it to the window as a `CrashReport`.

Files, in `user_data_dir()/crashes/`, one pair per process (two windows at once keep their own):
`session-PID.json` (the note; "clean": true once the process ended normally) and `faults-PID.log`
(faulthandler's output, empty unless it crashed). A report found at start is kept as
`crash-YYYYMMDD-HHMMSS.txt` (the newest KEEP_REPORTS of them) and its pair removed.

No Qt here: the window calls `start()`, `note_run()` and `finish()` (ui/app.py, ui/main_window.py).
Python exceptions are reported elsewhere; this is only for what kills the process.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from batchlens.core.data_dir import user_data_dir
from batchlens.core.files import atomic_write_text, read_json_object

KEEP_REPORTS = 5
MAX_TRACE_CHARS = 200_000  # a report shows at most this much of faulthandler's file


@dataclass(frozen=True)
class CrashReport:
    """A session that ended without a word: what was running, and faulthandler's trace."""

    trace: str
    running: dict  # model, input, output, state ("running", "paused", "finished", ...); {} if none
    started: str  # when that session started (local time, as written)
    saved_as: Path | None  # the copy kept in the data folder

    def describe_run(self) -> str:
        """One sentence on what was running, for the dialog and the report."""
        run = self.running
        if not run or run.get("state") in (None, "idle"):
            return "No run was going on."
        what = f"{run.get('model', 'a model')} on {run.get('input', 'a folder')}"
        state, output = run.get("state", "running"), run.get("output", "its output folder")
        if state in ("finished", "cancelled", "stopped"):
            return f"The last run ({what}) had {state}; its results are in {output}."
        return f"A run was {state}: {what}, writing to {output}."

    def text(self) -> str:
        """The whole report as plain text (what Copy report puts on the clipboard)."""
        lines = [
            "BatchLens closed unexpectedly.",
            f"Session started: {self.started or 'unknown'}",
            self.describe_run(),
        ]
        for key in ("model", "input", "output", "state"):
            if key in self.running:
                lines.append(f"  {key}: {self.running[key]}")
        lines += ["", "Trace (Python's faulthandler):", self.trace.rstrip()]
        return "\n".join(lines) + "\n"


class CrashLog:
    """This process's crash log. `start()` enables faulthandler into it (and returns the report of an
    earlier session that crashed, if any); `note_run()` keeps the note current; `finish()` marks a
    clean end."""

    def __init__(self, folder: Path | None = None):
        self.folder = Path(folder) if folder is not None else user_data_dir() / "crashes"
        self.pid = os.getpid()
        self._file: IO[str] | None = None
        self._was_enabled = False
        self._note: dict = {}

    @property
    def session_path(self) -> Path:
        return self.folder / f"session-{self.pid}.json"

    @property
    def faults_path(self) -> Path:
        return self.folder / f"faults-{self.pid}.log"

    def start(self) -> CrashReport | None:
        """Read what an earlier session left, then enable faulthandler into this one's file. Never
        raises for a folder it cannot write: the app runs on without crash reports then."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            report = self._collect_previous()
            self._file = open(self.faults_path, "w", encoding="utf-8")  # noqa: SIM115 - open for the whole process
            self._was_enabled = faulthandler.is_enabled()  # (to stderr, by python -X faulthandler or pytest)
            faulthandler.enable(self._file, all_threads=True)
            self._note = {"pid": self.pid, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "clean": False}
            self._write_note()
        except OSError:
            return None
        return report

    def note_run(self, state: str, model: str | None = None, input_dir=None, output_dir=None) -> None:
        """What is running now (called when a run starts, pauses, ends): kept for a report."""
        if self._file is None:
            return
        running = {"state": state}
        previous = self._note.get("running", {})
        for key, value in (("model", model), ("input", input_dir), ("output", output_dir)):
            if value is not None:
                running[key] = str(value)
            elif key in previous:
                running[key] = previous[key]
        self._note["running"] = running
        self._write_note()

    def finish(self) -> None:
        """A clean end: faulthandler off, this session's files removed."""
        if self._file is None:
            return
        faulthandler.disable()
        if self._was_enabled and sys.__stderr__ is not None:
            faulthandler.enable(sys.__stderr__, all_threads=True)
        self._file.close()
        self._note["clean"] = True  # (in case the files below cannot be removed)
        self._write_note()
        self._file = None
        for path in (self.faults_path, self.session_path):
            try:
                path.unlink()
            except OSError:
                pass

    def _write_note(self) -> None:
        try:
            atomic_write_text(self.session_path, json.dumps(self._note, indent=1))
        except OSError:
            pass  # a full disk must not stop the window; the report then lacks the note

    def _collect_previous(self) -> CrashReport | None:
        """The newest earlier session that crashed (its files removed, a copy kept); sessions of
        processes still running are left alone; one that ended without a trace is dropped."""
        found: list[tuple[float, CrashReport]] = []
        for session in self.folder.glob("session-*.json"):
            pid = _pid_of(session)
            if pid is None or pid == self.pid or _alive(pid):
                continue
            faults = self.folder / f"faults-{pid}.log"
            note = read_json_object(session)
            trace = _read_text(faults)
            if trace.strip() and not note.get("clean"):
                when = faults.stat().st_mtime
                report = CrashReport(trace, note.get("running") or {}, note.get("started", ""), None)
                saved = self._keep(report, when)
                found.append((when, CrashReport(report.trace, report.running, report.started, saved)))
            for path in (session, faults):
                try:
                    path.unlink()
                except OSError:
                    pass
        self._prune()
        return max(found, key=lambda pair: pair[0])[1] if found else None

    def _keep(self, report: CrashReport, when: float) -> Path | None:
        path = self.folder / time.strftime("crash-%Y%m%d-%H%M%S.txt", time.localtime(when))
        try:
            path.write_text(report.text(), encoding="utf-8")
        except OSError:
            return None
        return path

    def _prune(self) -> None:
        reports = sorted(self.folder.glob("crash-*.txt"))
        for old in reports[:-KEEP_REPORTS]:
            try:
                old.unlink()
            except OSError:
                pass


def _pid_of(session: Path) -> int | None:
    try:
        return int(session.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    import psutil

    try:
        name = psutil.Process(pid).name().lower()
    except psutil.Error:  # (no such process)
        return False
    return "python" in name or "batchlens" in name  # else the number was given to another program


def _read_text(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(MAX_TRACE_CHARS)
    except OSError:
        return ""
