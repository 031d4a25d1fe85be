"""The sentences that describe a run, shared by the command line and the window.

Both front ends say the same thing when a run starts and when it ends; keeping the wording here means
the window never has to import the command line for it.
"""

from __future__ import annotations

from pathlib import Path

from batchlens.core.machine.memory import format_bytes
from batchlens.core.run.events import RunStarted
from batchlens.core.run.run_speed import format_rate


def describe_start(event: RunStarted) -> str:
    """'Running MODEL (TASK) on DEVICE over N image(s)[, M already done]' (no final full stop)."""
    text = f"Running {event.model} ({event.task}) on {event.device} over {event.total} image(s)"
    if event.already_done:
        text += f", {event.already_done} already done"
    return text


def describe_summary(summary: dict) -> str:
    """One paragraph on a finished run: counts, time, speed, peak memory and where the results are."""
    counts = summary["counts"]
    rate = summary["images_per_second"]
    return (
        f"{'Cancelled' if summary['cancelled'] else 'Finished'}: {counts['ok']} image(s) ok, "
        f"{counts['error']} failed, {counts['skipped']} skipped (not images or system files)"
        + (f", {counts['already_done']} already done earlier" if counts["already_done"] else "")
        + f", in {summary['seconds']:.1f} s"
        + (f" ({format_rate(rate)})" if rate else "")
        + f" with {summary['model']} on {summary['device']}; peak "
        + ("RAM" if summary["memory_kind"] == "cpu" else "memory")
        + f" {format_bytes(summary['peak_memory_bytes'])}. Results are in "
        f"{Path(summary['output']) / 'predictions.jsonl'}"
        + (" (failed images have an error line there)." if counts["error"] else ".")
    )
