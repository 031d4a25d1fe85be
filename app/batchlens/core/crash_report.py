"""The one top-level guard's report: an exception nobody expected becomes one sentence naming a report
file, and exit code 70 (EX_SOFTWARE), never a traceback on the user's screen.

The report (traceback, versions, command line) goes into crash-reports/ in the app's data folder
(core/data_dir.py: $BATCHLENS_DATA_DIR, or the platform's own, where the crash log and stored sidecars
also live). The command line's main() (cli/__init__.py) and the window's start (ui/app.py) both use it;
it imports nothing heavy, and no Qt, so it works however far the start-up got.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import traceback
from collections.abc import Callable
from datetime import datetime
from importlib import metadata
from pathlib import Path
from types import TracebackType

from batchlens.core.data_dir import user_data_dir

#: sysexits.h's EX_SOFTWARE: "an internal software error has been detected"
EXIT_CRASH = 70
REPORTS = "crash-reports"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """What ran: read from the installed packages' metadata, so nothing is imported to write a report."""
    found = {
        "batchlens": _version("batchlens"),
        "python": sys.version.replace("\n", " "),
        "platform": platform.platform(),
        "torch": _version("torch"),
        "torchvision": _version("torchvision"),
        "PySide6": _version("PySide6-Essentials"),
    }
    torch = sys.modules.get("torch")
    if torch is not None:  # loaded: the build that ran (CUDA version, or none)
        found["torch"] = f"{getattr(torch, '__version__', found['torch'])} (CUDA {torch.version.cuda})"
    qt = sys.modules.get("PySide6.QtCore")
    if qt is not None:
        found["Qt"] = qt.qVersion()
    return found


def report_text(exc: BaseException, argv: list[str] | None = None) -> str:
    lines = [f"BatchLens crash report, {datetime.now().astimezone().isoformat(timespec='seconds')}", ""]
    lines.append("Command line: " + " ".join(argv if argv is not None else sys.argv))
    lines += [f"{name}: {value}" for name, value in versions().items()]
    lines += ["", *traceback.format_exception(type(exc), exc, exc.__traceback__)]
    return "\n".join(line.rstrip("\n") for line in lines) + "\n"


def write_crash_report(exc: BaseException, argv: list[str] | None = None) -> Path:
    """Write the report for `exc`; return its path. Falls back to the temporary folder when the data
    folder cannot be written (a read-only home), so there is always a file to name."""
    name = f"crash-{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.txt"
    text = report_text(exc, argv)
    for folder in (user_data_dir() / REPORTS, Path(tempfile.gettempdir()) / f"batchlens-{REPORTS}"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    raise OSError("no folder to write a crash report into")


def crash_sentence(path: Path | None) -> str:
    where = f"the details are in {path}" if path else "no report could be written"
    return (
        f"batchlens: something went wrong that BatchLens did not expect; {where} "
        "(please attach it to a bug report)."
    )


def report_crash(exc: BaseException, argv: list[str] | None = None) -> int:
    """Write the report, print the one sentence on stderr, and return EXIT_CRASH."""
    try:
        path = write_crash_report(exc, argv)
    except Exception:  # noqa: BLE001 - the guard itself must not fail
        path = None
    try:
        print(crash_sentence(path), file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass  # stderr closed: the exit code still says it
    return EXIT_CRASH


def install_excepthook(after: Callable[[], None] | None = None) -> Callable:
    """Route exceptions that reach sys.excepthook (those raised in a Qt slot while the window's event
    loop runs) through report_crash; then call `after` (the window ends its event loop with 70).
    Returns the hook it replaced."""

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            print("batchlens: stopped (Ctrl+C).", file=sys.stderr, flush=True)
        else:
            report_crash(value.with_traceback(tb))
        if after is not None:
            after()

    previous, sys.excepthook = sys.excepthook, hook
    return previous
