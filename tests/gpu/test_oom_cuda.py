"""Out-of-memory recovery on a real CUDA device (marked `cuda`; skipped where CUDA is absent).

The caching allocator is capped so that a 2400×2400 image cannot go through demo-denoise whole:
the real torch.OutOfMemoryError must be recovered from in tiles, with --memory-snapshot saving the
allocator's history at the first error, and allocated memory back at its level afterwards.
Run with: python -m pytest tests/gpu -m cuda -s
"""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

from batchlens.core.models import load_model  # noqa: E402
from batchlens.core.run.config import RunConfig  # noqa: E402
from batchlens.core.run.events import RunNote  # noqa: E402
from batchlens.core.run.runner import MEMORY_SNAPSHOT, Runner  # noqa: E402
from tests.gpu.cuda_cap import capped_cuda  # noqa: E402

MiB = 2**20
CAP = 256 * MiB  # one 2400×2400×32-channel float activation alone is ~700 MiB


@pytest.fixture
def small_gpu():
    with capped_cuda(CAP) as device:
        yield device


def test_real_cuda_oom_is_recovered_in_tiles_with_a_snapshot(tmp_path: Path, small_gpu):
    device = small_gpu
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (2400, 2400), dtype=np.uint8), "L").save(folder / "big.png")
    Image.fromarray(rng.integers(0, 256, (200, 200), dtype=np.uint8), "L").save(folder / "small.png")
    model = load_model("demo-denoise", device)
    baseline = torch.cuda.memory_allocated(device)

    cfg = RunConfig("demo-denoise", folder, out, device=str(device), memory_snapshot=True)
    events = list(Runner(cfg, model=model).events())

    rows = {r["image"]: r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}
    big = rows["big.png"]
    print(f"\nbig.png recovered: {big.get('recovered')}")
    assert big["status"] == "ok", big["error"]
    assert big["recovered"][0] == "freed memory and retried: out of memory"
    assert big["recovered"][-1].startswith("tiles of ") and big["recovered"][-1].endswith(": ok")
    assert rows["small.png"]["status"] == "ok" and "recovered" not in rows["small.png"]
    with Image.open(out / big["output"]) as im:
        assert im.size == (2400, 2400)
    snapshot = out / MEMORY_SNAPSHOT
    assert snapshot.exists() and snapshot.stat().st_size > 0
    kinds = [e.kind for e in events if isinstance(e, RunNote)]
    assert "memory_snapshot" in kinds and "out_of_memory" in kinds
    gc.collect()
    after = torch.cuda.memory_allocated(device)
    print(f"allocated: {baseline / MiB:.1f} MiB before, {after / MiB:.1f} MiB after")
    assert after <= baseline + MiB  # back to the model's weights
