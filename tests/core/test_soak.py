"""The flat-memory proof at scale (slow: run with `python -m pytest -m slow -s tests/core/test_soak.py`).

10,000 images through the engine: memory after the 10,000th image must equal memory after the 100th,
within 50 MiB of process RSS on the CPU and within 1 MiB of torch-allocated memory on CUDA. The
folder holds 20 distinct images hard-linked 500 times each, so it is quick to make and costs no disk.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import ImageResult
from batchlens.core.run.runner import Runner
from tests.helpers import make_shapes_folder

MiB = 2**20
N = 10_000


@pytest.fixture
def one_thread():
    """One intra-op thread: on a busy 2-core machine OpenMP's spinning threads make a run many times
    slower, and this test is about memory, not speed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _folder(tmp_path: Path) -> Path:
    distinct = tmp_path / "distinct"
    make_shapes_folder(distinct, 20)
    folder = tmp_path / "many"
    folder.mkdir()
    sources = sorted(distinct.iterdir())
    for i in range(N):
        os.link(sources[i % len(sources)], folder / f"img_{i:05d}.png")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(
    "device, tolerance",
    [
        ("cpu", 50 * MiB),
        pytest.param(
            "cuda",
            1 * MiB,
            marks=[
                pytest.mark.cuda,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
            ],
        ),
    ],
)
@pytest.mark.parametrize(
    "speed",
    [{}, {"batch_size": 8, "prefetch": 2}, {"fast_decode": True}],
    ids=["defaults", "batch8+prefetch", "fast-decode"],
)
def test_memory_after_10000_images_equals_memory_after_100(
    tmp_path: Path, device, tolerance, speed, one_thread
):
    folder = _folder(tmp_path)
    at = {}
    config = RunConfig("demo-shapes", folder, tmp_path / "out", device=device, **speed)
    for event in Runner(config).events():
        if isinstance(event, ImageResult):
            assert event.ok, event.error
            if event.index in (100, N):
                at[event.index] = event.memory.allocated
    growth = at[N] - at[100]
    what = "RSS" if device == "cpu" else "CUDA allocated"
    print(
        f"\n{device} {speed or 'defaults'}: {what} after 100 images {at[100] / MiB:.2f} MiB, after {N}: "
        f"{at[N] / MiB:.2f} MiB, growth {growth / MiB:+.3f} MiB (allowed {tolerance / MiB:.0f} MiB)"
    )
    assert abs(growth) <= tolerance
