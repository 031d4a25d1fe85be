"""Issue 29's fast path on a real CUDA device (marked `cuda`; skipped where CUDA is absent): no hidden
synchronisation in a batch's forward and copy back (under torch's sync debug mode "error", the one
wait on the copy allowed), flat allocated memory from image 1,000 on with the fast settings, the
batch size from the GPU's memory, and --precision auto's check. None of these has run on a GPU yet.

Run with the proof kit (bash scripts/gpu_proof.sh) or: python -m pytest tests/gpu -m cuda -s
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

from batchlens.core.inputs.images import scan_images  # noqa: E402
from batchlens.core.run.bench_long import cached_folder, memory_medians  # noqa: E402
from batchlens.core.run.bench_loops import engine_run, load_bench_model  # noqa: E402
from batchlens.core.run.config import RunConfig  # noqa: E402
from batchlens.core.run.pipeline import BatchPipeline  # noqa: E402
from batchlens.core.run.runner import Runner  # noqa: E402

MiB = 2**20


def cuda() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device())


@pytest.mark.parametrize("gpu_decode", [False, True], ids=["cpu-decode", "gpu-decode"])
def test_a_batch_makes_no_hidden_synchronisation(tmp_path: Path, monkeypatch, gpu_decode: bool):
    """pipeline.finish (H2D copy, fp16 NHWC forward, the copy back, the task's results) under sync
    debug mode "error": only batch_to_host's one wait is let through, and it must come exactly once."""
    folder = cached_folder(tmp_path / "sets", 32, (640, 480), distinct=8)
    model, _ = load_bench_model("resnet18", cuda())
    model.module.to(memory_format=torch.channels_last)
    pipeline = BatchPipeline(model, tmp_path / "out", None, "fp16", True, gpu_decode=gpu_decode)
    candidates = list(scan_images(folder))
    pipeline.finish(pipeline.prepare(candidates[:16]))  # warm-up: kernels chosen, allocator filled
    prepared = pipeline.prepare(candidates[16:])
    waits = []
    real_current_stream = torch.cuda.current_stream

    class OneWait:
        def __init__(self, stream):
            self.stream = stream

        def __getattr__(self, name):
            return getattr(self.stream, name)

        def synchronize(self):
            waits.append(1)
            torch.cuda.set_sync_debug_mode("default")
            try:
                self.stream.synchronize()
            finally:
                torch.cuda.set_sync_debug_mode("error")

    monkeypatch.setattr(
        torch.cuda, "current_stream", lambda device=None: OneWait(real_current_stream(device))
    )
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        items = pipeline.finish(prepared)
    finally:
        torch.cuda.set_sync_debug_mode("default")
        model.module.to(memory_format=torch.contiguous_format)
    assert len(items) == 16 and all(item.error is None for item in items)
    assert len(waits) == 1


def test_allocated_memory_is_flat_from_image_1000_with_the_fast_settings(tmp_path: Path):
    n = int(os.environ.get("FLAT_IMAGES", "6000"))  # the long bench reports it over 20,000
    folder = cached_folder(tmp_path / "sets", n, (640, 480), distinct=64)
    model, _ = load_bench_model("resnet50", cuda())
    fastest = {"fast_decode": True, "precision": "fp16", "channels_last": True, "gpu_decode": True}
    outcome = engine_run(model, folder, tmp_path / "out", str(model.device), None, timeline=True, **fastest)
    memory = memory_medians(outcome.allocated)
    print(f"\nallocated medians over {n} images: {memory}")
    assert len(outcome.done) == n
    assert abs(memory["difference"]) <= max(8 * MiB, 0.01 * memory["early_median"])


def test_batch_size_auto_comes_from_the_gpu_memory(tmp_path: Path):
    folder = cached_folder(tmp_path / "sets", 96, (640, 480), distinct=8)
    model, _ = load_bench_model("resnet18", cuda())
    for _ in Runner(RunConfig("resnet18", folder, tmp_path / "out", device="cuda"), model=model).events():
        pass
    auto = json.loads((tmp_path / "out" / "summary.json").read_text())["batch_size_auto"]
    print(f"\nbatch size from memory: {auto}")
    assert auto["from_memory"] is True and auto["per_image_bytes"] > 0
    assert auto["chosen"] >= 8 and auto["chosen"] & (auto["chosen"] - 1) == 0


def test_precision_auto_checks_fp16_on_the_first_batch(tmp_path: Path):
    folder = cached_folder(tmp_path / "sets", 24, (640, 480), distinct=8)
    model, _ = load_bench_model("resnet50", cuda())
    for _ in Runner(
        RunConfig("resnet50", folder, tmp_path / "out", device="cuda", precision="auto"), model=model
    ).events():
        pass
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    check = summary["precision_check"]
    print(f"\nprecision auto: {check}")
    assert check["candidate"] == "fp16" and check["checked_max_diff"] is not None
    assert summary["precision"] == check["chosen"] in ("fp16", "fp32")
