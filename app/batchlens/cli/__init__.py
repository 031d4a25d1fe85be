"""Command line: `batchlens` (the window), `batchlens run`, `batchlens models`, `batchlens bench`.

args.py builds the parser, commands.py runs each command, stop.py turns Ctrl+C and SIGTERM into a
clean stop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

from batchlens.cli.after_run import AFTER_RUN_COMMANDS
from batchlens.cli.args import build_parser, check_args
from batchlens.cli.commands import bench_command, models_command, run_command
from batchlens.cli.stop import Interrupted
from batchlens.core.crash_report import report_crash
from batchlens.core.errors import BatchLensError
from batchlens.core.machine import machine_load  # noqa: F401  before torch: its reading of others' work starts now
from batchlens.core.terminal import PrintableFormatter, printable

__all__ = ["build_parser", "main", "main_gui"]


def main(argv: list[str] | None = None) -> int:
    """The command line's one top-level guard: an exception nobody expected becomes one sentence naming
    a crash report (core/crash_report.py) and exit 70, never a traceback."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl+C outside a run (a run turns it into a clean stop itself)
        print("batchlens: stopped (Ctrl+C).", file=sys.stderr)
        return 130
    except Exception as exc:
        return report_crash(exc, sys.argv if argv is None else ["batchlens", *argv])


def _main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()  # file names in log lines are escaped, as in every printed line
    handler.setFormatter(PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    if not args.verbose:  # torch's advice to its own developers, not to someone running a model file
        warnings.filterwarnings("ignore", r"`torch\.jit\.(load|save)` is deprecated", FutureWarning)
    commands = {"run": run_command, "models": models_command, "bench": bench_command, **AFTER_RUN_COMMANDS}
    try:
        check_args(args)
        if args.command is None:
            from batchlens.ui.app import run_window

            code = run_window(args)
        else:
            code = commands[args.command](args)
    except BatchLensError as exc:
        print(printable(f"batchlens: {exc}"), file=sys.stderr)
        code = 2
    except Interrupted as exc:
        print(f"batchlens: {exc.name}: stopped before the run started; nothing was written.", file=sys.stderr)
        code = exc.exit_code
    if argv is None:  # the program's own command line: the console script, python -m batchlens, the bundle
        _leave_before_shutdown_if_forwards_stuck(code)
    return code


def _leave_before_shutdown_if_forwards_stuck(code: int) -> None:
    """A forward given up by --image-timeout that comes back from C++ while Python shuts down aborts
    the process (core/run/watchdog.py): wait a moment for the given-up forwards, and if one is still
    running, end the process here, its output flushed (the run's files are closed by now)."""
    from batchlens.core.run.watchdog import still_running

    if still_running(wait=1.0) == 0:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: the exit code still says it
            stream.flush()
    os._exit(code)


def main_gui() -> int:
    return main([])
