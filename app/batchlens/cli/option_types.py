"""The types every command-line option is parsed by: each with bounds, so a value BatchLens cannot use is
refused at once in one sentence (exit 2). Shared by cli/args.py and cli/after_run.py; no torch."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

# -- the bounds (docs/cli.md, "Ranges") ----------------------------------------------------------------
# Every option that takes a value is parsed here by a type with bounds, so a value BatchLens cannot use
# (inf, nan, 1e300, -1, a side of a million pixels) is refused at once with one sentence and exit 2.
MAX_SIDE = 16384  # --input-size, --resize, --crop, bench --size: pixels per side
MAX_BATCH = 4096  # --batch-size
MAX_PREFETCH = 64  # --prefetch: batches decoded ahead
MAX_THREADS = 1024  # --threads
MAX_SECONDS = 604800  # --image-timeout: one week
MAX_PIXELS = 10_000_000_000  # --max-pixels: ten gigapixels
MAX_COUNT = 1_000_000_000  # --max-failures
MAX_WORKERS = 1024  # --workers
MAX_SYNTHETIC = 100_000  # bench --synthetic
MAX_REPEAT = 100  # bench --repeat
MAX_MIB = 1_048_576  # bench --naive-limit: one TiB
MAX_NORM = 1000.0  # --mean and --std, in 0-1 units
MAX_TEXT = 4096  # characters of a model id, a device name, a path


def _shown(text: str) -> str:
    """The user's text in a message: quoted, escaped, and cut short."""
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _whole(text: str, low: int, high: int) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if low <= value <= high else None


def whole_number(low: int, high: int, what: str = "a whole number"):
    """An argparse type: a whole number from `low` to `high`."""

    def parse(text: str) -> int:
        value = _whole(text, low, high)
        if value is None:
            raise argparse.ArgumentTypeError(f"{_shown(text)} is not {what} from {low:,} to {high:,}")
        return value

    return parse


def positive_int(high: int, what: str = "a whole number"):
    """An argparse type: a whole number from 1 to `high`."""
    return whole_number(1, high, what)


def finite_float(low: float, high: float, what: str = "a number", above_low: bool = False):
    """An argparse type: a finite number from `low` (or above it, with above_low) to `high`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (value > low if above_low else value >= low) or not value <= high:  # nan fails both
            bounds = f"above {low:g} and at most {high:g}" if above_low else f"from {low:g} to {high:g}"
            raise argparse.ArgumentTypeError(f"{_shown(text)} is not {what} {bounds}")
        return value

    return parse


def text_arg(text: str) -> str:
    """A model id, device name or address: not empty, no control characters, not absurdly long."""
    if not text.strip() or len(text) > MAX_TEXT or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise argparse.ArgumentTypeError(
            f"{_shown(text)} is not a name (empty, too long, or with control characters)"
        )
    return text


def path_arg(text: str) -> Path:
    """A file or folder: not empty, no NUL (no file system takes one), not absurdly long."""
    if not text.strip() or "\0" in text or len(text) > MAX_TEXT:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a file or folder name")
    return Path(text)


def memory_snapshot_arg(text: str) -> str:
    """--memory-snapshot: off, oom, always, or always:N (N images, 1 to MAX_COUNT)."""
    value = text.strip().lower()
    mode, colon, count = value.partition(":")
    images = _whole(count, 1, MAX_COUNT) if colon else None
    if mode not in ("off", "oom", "always") or colon and (mode != "always" or images is None):
        raise argparse.ArgumentTypeError(
            f"{_shown(text)} is not a snapshot choice: use off, oom, always, or always:N (N images, "
            f"1 to {MAX_COUNT:,})"
        )
    return value
