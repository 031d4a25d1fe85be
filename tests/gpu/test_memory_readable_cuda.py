"""Issue 28 on a real CUDA device (marked `cuda`; skipped where CUDA is absent): the probe reports
inactive split bytes and segments, and `--memory-snapshot always:N` writes a snapshot the viewer's
layout reads, with the batch that made the peak.
Run with: python -m pytest tests/gpu -m cuda -s
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

from batchlens.core.machine.memory import CudaProbe  # noqa: E402
from batchlens.core.outputs.snapshot_file import load_snapshot  # noqa: E402
from batchlens.core.run.config import RunConfig  # noqa: E402
from batchlens.core.run.runner import MEMORY_SNAPSHOT, Runner  # noqa: E402
from batchlens.ui.snapshot_layout import build_layout  # noqa: E402
from tests.helpers import make_shapes_folder  # noqa: E402


def test_the_cuda_probe_reports_fragmentation_and_segments():
    probe = CudaProbe(torch.device("cuda", 0))
    keep = [torch.empty(2**20 * (i % 5 + 1), dtype=torch.uint8, device="cuda") for i in range(40)]
    del keep[::2]  # holes between live blocks
    sample = probe.sample()
    print(f"\ninactive split {sample.inactive_split}, segments {sample.segments}")
    assert sample.inactive_split is not None and sample.segments >= 1
    del keep


def test_always_writes_a_snapshot_with_batch_markers(tmp_path: Path):
    folder, out = tmp_path / "in", tmp_path / "out"
    make_shapes_folder(folder, 12, size=64)
    cfg = RunConfig("demo-shapes", folder, out, device="cuda", batch_size=4, memory_snapshot="always:8")
    notes = [e.message for e in Runner(cfg).events() if type(e).__name__ == "RunNote"]
    assert any(n.startswith("Saved a memory snapshot after 8 images") for n in notes), notes
    layout = build_layout(load_snapshot(out / MEMORY_SNAPSHOT))
    print(f"\n{layout.events} events, {layout.blocks_total} allocations, {len(layout.markers)} batches")
    assert layout.events > 0 and len(layout.markers) == 2
    assert layout.marker_before(layout.peak[0]) is not None
