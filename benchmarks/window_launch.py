"""How long `batchlens` takes from launch to something on screen, under a real X server.

    xvfb-run -s "-screen 0 1280x720x24" python benchmarks/window_launch.py [--runs 3]

Starts the window the way a user does (`python -m batchlens`, fresh settings), polls the X server with
xdotool and prints, per launch, when the first BatchLens window (the start-up window, when there is
one) was mapped and when the main window was. Times are wall-clock seconds from the launch; they
depend on how busy the machine is, so compare numbers from the same run of this script only.
Then it times the command line's quick answers the same way (`batchlens models`, and `batchlens run`
with an input folder that does not exist), which must come before PyTorch loads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def visible(name_regex: str) -> bool:
    found = subprocess.run(
        ["xdotool", "search", "--onlyvisible", "--name", name_regex], capture_output=True, text=True
    )
    return bool(found.stdout.strip())


def launch_once(timeout_s: float) -> tuple[float | None, float | None]:
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, HOME=home, XDG_CONFIG_HOME=os.path.join(home, ".config"))
        env.pop("QT_QPA_PLATFORM", None)
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "batchlens"], env=env)
        first = main = None
        try:
            while time.perf_counter() - t0 < timeout_s and main is None:
                now = time.perf_counter() - t0
                if first is None and visible("BatchLens"):
                    first = now
                if visible("^BatchLens$"):
                    main = now
                    first = now if first is None else first  # mapped between the two looks
                time.sleep(0.02)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return first, main


def time_command(args: list[str]) -> tuple[float, int]:
    """Wall-clock seconds of `python -m batchlens ARGS`, and its exit code."""
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, HOME=home, XDG_CONFIG_HOME=os.path.join(home, ".config"))
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "batchlens", *args], env=env, capture_output=True)
        return time.perf_counter() - t0, done.returncode


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=90)
    parser.add_argument("--no-window", action="store_true", help="time the command line only")
    args = parser.parse_args()
    firsts, mains = [], []
    for run in range(0 if args.no_window else args.runs):
        first, main_at = launch_once(args.timeout)
        print(
            f"launch {run + 1}: first window {first if first is None else f'{first:.2f} s'}, "
            f"main window {main_at if main_at is None else f'{main_at:.2f} s'}"
        )
        if first is not None:
            firsts.append(first)
        if main_at is not None:
            mains.append(main_at)
    if firsts and mains:
        first, main_at = statistics.median(firsts), statistics.median(mains)
        print(f"median: first window {first:.2f} s, main window {main_at:.2f} s")
    missing = os.path.join(tempfile.gettempdir(), "batchlens-no-such-folder")
    commands = {
        "batchlens models": ["models"],
        "batchlens run (missing input folder)": [
            *("run", "--model", "demo-shapes", "--input", missing, "--output", missing + "-out")
        ],
    }
    for name, words in commands.items():
        timed = [time_command(words) for _ in range(args.runs)]
        shown = ", ".join(f"{seconds:.2f}" for seconds, _ in timed)
        print(f"{name}: {shown} s (exit {timed[-1][1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
