"""The GPU path's own pieces on a real CUDA device (marked `cuda`; skipped where CUDA is absent):
batched nvJPEG decode against the CPU decode, one copy back per batch with one synchronisation,
the cache policies, and the warning about other processes holding the GPU.

Run with the proof kit (bash scripts/gpu_proof.sh) or: python -m pytest tests/gpu -m cuda -s
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from functools import partial
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

from batchlens.core.inputs.gpu_decode import DeviceDecoder  # noqa: E402
from batchlens.core.inputs.images import scan_images  # noqa: E402
from batchlens.core.run.bench import load_bench_model, make_synthetic_folder  # noqa: E402
from batchlens.core.run.config import RunConfig  # noqa: E402
from batchlens.core.run.events import RunNote  # noqa: E402
from batchlens.core.run.inference import split_batch  # noqa: E402
from batchlens.core.run.pipeline import BatchPipeline  # noqa: E402
from batchlens.core.run.runner import Runner  # noqa: E402
from tests.helpers import make_shapes_folder  # noqa: E402

MiB = 2**20


def cuda() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device())


def test_nvjpeg_decode_matches_the_cpu_decode(tmp_path: Path):
    folder = make_synthetic_folder(tmp_path / "in", 16, (640, 480))
    paths = sorted(folder.iterdir())
    on_gpu, on_cpu = DeviceDecoder(cuda()), DeviceDecoder(torch.device("cpu"))
    gpu = on_gpu.decode([on_gpu.read(p) for p in paths])
    cpu = on_cpu.decode([on_cpu.read(p) for p in paths])
    diffs = [(g.cpu().float() - c.float()).abs() for g, c in zip(gpu, cpu)]
    mean, worst = max(float(d.mean()) for d in diffs), max(float(d.max()) for d in diffs)
    print(f"\nnvJPEG vs libjpeg-turbo over 16 JPEGs: mean |diff| <= {mean:.3f} grey levels, max {worst:.0f}")
    assert all(g.device.type == "cuda" and g.shape == c.shape for g, c in zip(gpu, cpu))
    assert mean < 1.0 and worst <= 16


def test_gpu_decode_pipeline_matches_the_pillow_path(tmp_path: Path):
    folder = make_synthetic_folder(tmp_path / "in", 8, (1600, 1200))
    model, _ = load_bench_model("resnet18", cuda())
    candidates = list(scan_images(folder))
    pillow = BatchPipeline(model, tmp_path / "a", None).prepare(candidates)
    device = BatchPipeline(model, tmp_path / "b", None, gpu_decode=True).prepare(candidates)
    torch.cuda.current_stream().wait_event(device.ready)
    torch.cuda.current_stream().wait_event(pillow.ready)  # copied to the device on a side stream
    ((_, batch),) = device.groups
    assert batch.device.type == "cuda"
    diff = (pillow.groups[0][1].cuda() - batch).abs()
    mean, worst = float(diff.mean()), float(diff.max())
    print(f"\nmodel input, GPU decode vs Pillow: mean |diff| {mean:.4f}, max {worst:.3f}")
    assert mean < 0.03


def _synchronisations(fn) -> tuple[object, int]:
    """fn's result and how many synchronising CUDA calls it made (torch's sync debug mode warns on
    each: explicit stream waits and implicit blocking copies alike)."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return result, sum("synchronizing CUDA operation" in str(w.message) for w in caught)


def test_one_copy_back_per_batch_with_one_synchronisation():
    outputs = {
        "tensor": torch.randn(8, 1000, device=cuda()),
        "mapping": {"out": torch.randn(8, 3, 32, 32, device=cuda())},
        "list": [
            {"boxes": torch.rand(5, 4, device=cuda()), "scores": torch.rand(5, device=cuda())}
            for _ in range(8)
        ],
    }
    # The check can fail: copying image by image, as a plain loop does, waits once per image.
    _, per_image = _synchronisations(lambda: [row.cpu() for row in outputs["tensor"].unbind(0)])
    assert per_image == 8
    for name, output in outputs.items():
        parts, waits = _synchronisations(partial(split_batch, output, 8))
        print(f"\n{name}: {waits} synchronisation(s) for a batch of 8 (image by image: {per_image})")
        assert waits == 1, name
        assert len(parts) == 8, name
        flat = [
            t
            for p in parts
            for t in (p.values() if isinstance(p, dict) else [p])
            if isinstance(t, torch.Tensor)
        ]
        assert all(t.device.type == "cpu" and not t.is_pinned() for t in flat), name


def test_cache_policy_image_hands_the_cache_back_and_never_keeps_it(tmp_path: Path):
    folder = tmp_path / "in"
    make_shapes_folder(folder, 8)
    left = {}
    for policy in ("never", "image"):
        torch.cuda.empty_cache()
        for _ in Runner(
            RunConfig("demo-shapes", folder, tmp_path / policy, device="cuda", empty_cache=policy)
        ).events():
            pass
        left[policy] = torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
    never, image = left["never"] / MiB, left["image"] / MiB
    print(f"\ncached but unused after the run: never {never:.1f} MiB, image {image:.1f} MiB")
    assert left["image"] < left["never"]


def test_other_processes_holding_the_gpu_are_named(tmp_path: Path):
    total = torch.cuda.get_device_properties(cuda()).total_memory
    hog = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time, torch
                x = torch.empty({int(total * 0.35)}, dtype=torch.uint8, device="cuda")
                print("holding", flush=True)
                time.sleep(120)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert hog.stdout.readline().strip() == "holding"
        folder = tmp_path / "in"
        make_shapes_folder(folder, 4)
        notes = [
            e.message
            for e in Runner(RunConfig("demo-shapes", folder, tmp_path / "out", device="cuda")).events()
            if isinstance(e, RunNote)
        ]
        print("\n" + "\n".join(notes))
        assert any("Other processes hold" in n for n in notes)
    finally:
        hog.kill()
        hog.wait()


def test_memory_probe_reads_what_torch_reports():
    from batchlens.core.machine.memory import CudaProbe

    keep = torch.empty(64 * MiB, dtype=torch.uint8, device=cuda())
    sample = CudaProbe(torch.device(cuda())).sample()
    assert sample.allocated == torch.cuda.memory_allocated() >= 64 * MiB
    assert sample.reserved == torch.cuda.memory_reserved()
    assert sample.peak == torch.cuda.max_memory_allocated()
    assert sample.device_total == torch.cuda.mem_get_info()[1] and sample.device_used >= sample.reserved
    del keep
