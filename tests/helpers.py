"""Generators of real image folders for the tests, and what every command-line test checks."""

from __future__ import annotations

import random
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
