"""--batch-size auto on CUDA: the size from the device's memory (core/run/memory_batch.py), here with
fake memory figures, and in a real run on the CPU with the process's memory standing in."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from batchlens.core.machine.memory import MemorySample
from batchlens.core.run import autobatch, sizing
from batchlens.core.run.config import RunConfig
from batchlens.core.run.memory_batch import PROBE_BATCH, MemoryBatchSizer, others_bytes, size_for
from batchlens.core.run.runner import Runner
from tests.helpers import make_shapes_folder

GiB, MiB = 2**30, 2**20


def _sizes(sizer: MemoryBatchSizer, peaks: list[int]) -> list[int]:
    """The sizes the sizer hands out while batches with these memory peaks finish one by one."""
    sizes = []
    for peak in peaks:
        size = sizer.next_size()
        sizes.append(size)
        sizer.record(size, 0.01 * size, 0.01 * size, peak)
    return sizes + [sizer.next_size()]


def test_size_is_the_largest_power_of_two_that_fits_twice_over():
    assert size_for(1000 * MiB, 10 * MiB, 256) == 32  # 50 fit with x2 to spare: 32
    assert size_for(1000 * MiB, 10 * MiB, 16) == 16  # capped
    assert size_for(10 * MiB, 10 * MiB, 256) == 1  # nothing to spare: one image
    assert size_for(100 * GiB, 1, 10_000) == 256  # never past MAX_AUTO_BATCH


def test_the_probe_batch_gives_the_footprint_and_the_size():
    sizer = MemoryBatchSizer(max_batch=20_000, memory_limit=10 * GiB)
    base = 1 * GiB
    # batch 1 peaks at 1 GiB, the probe batch of 8 at 1 GiB + 7 x 50 MiB
    sizes = _sizes(sizer, [base, base + (PROBE_BATCH - 1) * 50 * MiB])
    # free: 85 % of 10 GiB less 1 GiB = 7.5 GiB; 7.5 GiB / (2 x 50 MiB) = 76 images: 64
    assert sizes == [1, PROBE_BATCH, 64]
    assert sizer.per_image_bytes == 50 * MiB
    summary = sizer.to_json()
    assert summary["from_memory"] is True and summary["chosen"] == 64
    assert "50.0 MiB an image" in summary["reason"], summary["reason"]
    assert sizer.take_notes() == [sizer.message()]  # one note when it settles
    sizer.record(64, 1.0, 1.0, 9 * GiB, out_of_memory=True)  # out of memory all the same: halved
    assert sizer.next_size() == 32


def test_memory_other_processes_hold_is_not_counted_as_free():
    sample = MemorySample(0.0, allocated=1 * GiB, reserved=2 * GiB, peak=1 * GiB, device_used=9 * GiB)
    assert others_bytes(sample) == 7 * GiB
    assert others_bytes(MemorySample(0.0, 0, 0, 0)) == 0  # unknown: nothing assumed
    crowded = MemoryBatchSizer(max_batch=1000, memory_limit=10 * GiB, others=7 * GiB)
    # free: 8.5 - 7 - 1 = 0.5 GiB: 5 images with x2 to spare: 4
    assert _sizes(crowded, [GiB, GiB + 7 * 50 * MiB])[-1] == 4


def test_only_cuda_takes_its_size_from_memory():
    class FakeProbe:
        def __init__(self, kind):
            self.kind = kind

    assert autobatch.memory_sized(torch.device("cuda"), FakeProbe("cuda"))
    assert not autobatch.memory_sized(torch.device("cpu"), FakeProbe("cpu"))


def test_a_run_sized_from_memory_goes_1_then_the_probe_batch_then_the_size(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(sizing, "memory_sized", lambda device, probe: True)
    make_shapes_folder(tmp_path / "in", 40)
    for _ in Runner(RunConfig("demo-shapes", tmp_path / "in", tmp_path / "out", device="cpu")).events():
        pass
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    auto = summary["batch_size_auto"]
    assert summary["counts"]["ok"] == 40
    assert auto["from_memory"] is True and auto["per_image_bytes"] >= 1
    assert auto["chosen"] & (auto["chosen"] - 1) == 0 and 1 <= auto["chosen"] <= 40
    assert {s["batch_size"] for s in auto["sizes"]} >= {1, PROBE_BATCH}


def test_sizer_for_run_on_cuda_reads_the_device_memory_from_the_probe():
    """The CUDA code path with a fake memory probe: total and other processes' memory come from it."""
    from types import SimpleNamespace

    from batchlens.core.models import load_model

    class FakeCudaProbe:
        kind = "cuda"

        def sample(self):
            return MemorySample(
                0.0, allocated=GiB, reserved=2 * GiB, peak=GiB, device_used=5 * GiB, device_total=16 * GiB
            )

    loaded = load_model("demo-shapes", torch.device("cpu"))
    model = SimpleNamespace(
        module=loaded.module, takes_list=False, info=loaded.info, device=torch.device("cuda", 0)
    )
    config = RunConfig("demo-shapes", Path("in"), Path("out"))
    sizer = sizing.sizer_for_run(config, model, False, FakeCudaProbe(), list(range(5000)))
    assert isinstance(sizer, MemoryBatchSizer)
    assert sizer.memory_limit == 16 * GiB and sizer.others == 3 * GiB and sizer.ceiling == 256
    # 85 % of 16 GiB less 3 GiB (others) less 1 GiB (the run at one image) = 9.6 GiB; 40 MiB an image
    assert _sizes(sizer, [GiB, GiB + 7 * 40 * MiB])[-1] == 64  # 9.6 GiB / 80 MiB = 122: 64
    few = sizing.sizer_for_run(config, model, False, FakeCudaProbe(), list(range(20)))
    assert few.ceiling == 20 and _sizes(few, [GiB, GiB + 7 * MiB])[-1] == 16  # never past the folder
