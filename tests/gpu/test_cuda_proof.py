"""The GPU proof, on a real CUDA device (marked `cuda`; skipped where CUDA is absent).

Run on a GPU machine with: python -m pytest tests/gpu -m cuda -s
(-s shows the printed figures: how far the naive loop got, the memory freed, images/s.)
"""

from __future__ import annotations

import copy
import gc
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

from batchlens.core.inputs.images import load_image  # noqa: E402
from batchlens.core.inputs.prefetch import each_here  # noqa: E402
from batchlens.core.machine.memory import CudaProbe, format_bytes  # noqa: E402
from batchlens.core.models import load_model  # noqa: E402
from batchlens.core.run.bench import BenchConfig, format_table, run_bench  # noqa: E402
from batchlens.core.run.config import RunConfig  # noqa: E402
from batchlens.core.run.events import ImageResult  # noqa: E402
from batchlens.core.run.pipeline import BatchPipeline  # noqa: E402
from batchlens.core.run.runner import Runner  # noqa: E402
from tests.gpu.cuda_cap import capped_cuda  # noqa: E402
from tests.helpers import make_denoise_folder  # noqa: E402

MiB = 2**20
CAP = 1536 * MiB  # the per-process limit for the origin story: a small GPU, as in the story


@pytest.fixture
def capped_gpu():
    with capped_cuda(CAP) as device:
        yield device


def test_origin_story_naive_loop_runs_out_of_memory_engine_stays_flat(tmp_path: Path, capped_gpu):
    """300x300 single-channel images through demo-denoise: the naive loop (no no_grad, outputs kept
    on the GPU) hits the limit after a bounded number of images; the engine finishes the whole
    folder under the same limit with flat allocated memory."""
    device = capped_gpu
    folder = tmp_path / "in"
    make_denoise_folder(folder, 120, size=300)
    paths = sorted(folder.iterdir())

    model = load_model("demo-denoise", device)
    naive = copy.deepcopy(model.module).requires_grad_(True)  # fresh from training
    kept, reached = [], 0
    with pytest.raises(torch.OutOfMemoryError):
        for path in paths:
            x = model.adapter.preprocess(load_image(path, "L").image).unsqueeze(0).to(device)
            kept.append(naive(x))  # no no_grad: each output holds its whole graph on the GPU
            reached += 1
    per_image = torch.cuda.memory_allocated(device) / max(1, reached)
    print(f"\nnaive loop: out of memory after {reached} images (~{format_bytes(per_image)} kept per image)")
    assert 1 < reached < len(paths)
    del kept, naive, x
    gc.collect()
    torch.cuda.empty_cache()

    allocated = []
    events = Runner(
        RunConfig("demo-denoise", folder, tmp_path / "out", device=str(device)), model=model
    ).events()
    for event in events:
        if isinstance(event, ImageResult):
            assert event.ok, event.error
            allocated.append(event.memory.allocated)
    assert len(allocated) == len(paths)
    steady = allocated[5:]
    spread = max(steady) - min(steady)
    print(
        f"engine: {len(allocated)} images, allocated {format_bytes(min(steady))}..{format_bytes(max(steady))}"
    )
    assert spread <= 1 * MiB, "allocated memory must stay flat"


def test_clear_cache_hands_back_what_it_reports():
    device = torch.device("cuda", torch.cuda.current_device())
    probe = CudaProbe(device)
    blocks = [torch.empty(64 * MiB, dtype=torch.uint8, device=device) for _ in range(4)]
    del blocks  # freed to PyTorch's cache, still reserved from the driver
    before = torch.cuda.memory_reserved(device)
    result = probe.clear_cache()
    after = torch.cuda.memory_reserved(device)
    print(f"\nclear cache: reserved {format_bytes(before)} -> {format_bytes(after)}; {result.message()}")
    assert result.freed == before - after
    assert result.freed >= 256 * MiB
    assert result.still_allocated == torch.cuda.memory_allocated(device)


def test_batches_are_pinned_and_conv_nets_run_channels_last_on_cuda(tmp_path: Path):
    device = torch.device("cuda", torch.cuda.current_device())
    folder = tmp_path / "in"
    make_denoise_folder(folder, 4, size=64)
    model = load_model("demo-denoise", device)
    pipeline = BatchPipeline(model, tmp_path / "out", None)
    from batchlens.core.inputs.images import scan_images

    candidates = list(scan_images(folder))
    ((_, batch),) = pipeline._prepare(candidates, each_here).groups
    assert batch.is_pinned() and batch.shape[0] == 4  # so the copy to the GPU does not block
    # ... and prepare() copies it to the device on a side stream, ahead of the forward (issue 29)
    prepared = pipeline.prepare(candidates)
    ((_, on_device),) = prepared.groups
    assert on_device.device.type == "cuda" and prepared.ready is not None
    summary = None
    for event in Runner(
        RunConfig("demo-denoise", folder, tmp_path / "out", device=str(device), prefetch=2)
    ).events():
        summary = getattr(event, "summary", summary)
    assert summary["channels_last"] is True and summary["counts"]["ok"] == 4


@pytest.mark.parametrize(
    "model_id, size, precision",
    [
        ("demo-shapes", (96, 96), "fp32"),
        ("demo-denoise", (300, 300), "fp32"),
        ("resnet50", (1600, 1200), "fp16"),
    ],
)
def test_throughput_at_batch_1_and_best_batch(model_id, size, precision):
    """Prints images/s for the plain loop, the expert DataLoader loop, the engine at batch 1 (--exact)
    and with its defaults (batch size measured on the run), and with AMP for the torchvision model.
    Speed is reported, never asserted."""
    device = f"cuda:{torch.cuda.current_device()}"
    result = run_bench(BenchConfig(model_id, synthetic=200, size=size, device=device, precision=precision))
    print("\n" + format_table(result))
    rows = {row["name"]: row for row in result["rows"]}
    for name in ("plain", "expert", "exact", "engine"):
        assert rows[name]["images"] == 200 and rows[name]["images_digest"] == rows["plain"]["images_digest"]
    assert rows["exact"]["settings"]["batch_size"] == 1 and rows["engine"]["settings"]["batch_size"] >= 1
