"""Generators of real image folders for the tests, what every command-line test checks, and waiting
for a condition."""

from __future__ import annotations

import random
import time
from pathlib import Path

from batchlens.core.models.demo_data import SHAPES, denoise_pairs, draw_shape, to_grey_image


def make_shapes_folder(folder: Path, n: int, seed: int = 4242, size: int = 96) -> list[int]:
    """Write n shape images (shape_0000.png ...) and return their true labels in file order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    labels = []
    for i in range(n):
        label = rng.randrange(len(SHAPES))
        draw_shape(SHAPES[label], rng, size).save(folder / f"shape_{i:04d}.png")
        labels.append(label)
    return labels


def make_denoise_folder(folder: Path, n: int, seed: int = 99, size: int = 300):
    """Write n noisy greyscale images and return the clean arrays in file order."""
    folder.mkdir(parents=True, exist_ok=True)
    cleans = []
    for i, (noisy, clean) in enumerate(denoise_pairs(n, seed, size=size)):
        to_grey_image(noisy).save(folder / f"noisy_{i:04d}.png")
        cleans.append(clean)
    return cleans


def assert_no_traceback(result) -> None:
    """A finished `batchlens` subprocess (a subprocess.CompletedProcess, or its stderr as str or bytes)
    printed no traceback: its stderr is not the test's own, so the suite's stderr check (tests/conftest.py)
    cannot see it. Every test that runs the command line in a subprocess calls this."""
    stderr = getattr(result, "stderr", result)
    stderr = stderr if isinstance(stderr, str) else stderr.decode(errors="replace")
    assert "Traceback (most recent call last)" not in stderr, stderr


def pin_machine_load(monkeypatch, others: float) -> None:
    """The run's thread plan (core/run/threads.py) sees `others` cores busy with other work, out of as
    many cores as torch uses: under 0.5 the machine is quiet (a CPU run decodes each batch in step,
    prefetch 0), above it busy (2 batches decoded ahead). So a test knows which plan a run takes
    instead of reading the plan back from the run."""
    import torch

    from batchlens.core.run import threads

    monkeypatch.setattr(threads, "others_load", lambda: others)
    monkeypatch.setattr(threads, "usable_cores", lambda: torch.get_num_threads())


def wait_until(condition, seconds: float = 30, what: str = "the condition") -> None:
    """Poll `condition()` until it is true (a wait for an event, not for a time); fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {seconds} s waiting for {what}"
        time.sleep(0.002)


#: What a line measures rather than computes (time, memory): two runs of the same images differ there.
MEASURED = ("seconds", "peak_memory_bytes")


def without_measurements(line: dict) -> dict:
    """A predictions.jsonl line without its measured fields, to compare two runs' answers."""
    return {k: v for k, v in line.items() if k not in MEASURED}
