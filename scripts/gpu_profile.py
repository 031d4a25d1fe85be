"""Where a fast GPU run spends its CPU time: the run thread's profile (cProfile) of the engine with
the fastest settings (batch 64, fp16, channels_last, GPU decode) on 640x480 JPEGs, for the proof kit.

    python scripts/gpu_profile.py [--images 2048] [--device cuda] [--overlap]

--overlap (issue 29) measures instead the copy ahead of CPU-decoded batches (core/run/pipeline.py:
COPY_AHEAD): images/s with and without it, and from torch.profiler's CUDA trace the share of the
host-to-device copies' time that ran while a kernel ran (overlap with the forward).

Prints images/s without and with the profiler, then the functions that took the most time in the
thread that runs the model, writes and reports (the decoding threads are not in this profile).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from gpu_bench import engine, photo_folder  # noqa: E402

from batchlens.core.run.bench import load_bench_model  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT of the generated JPEGs")
    parser.add_argument("--cpu-decode", action="store_true", help="decode with Pillow, not on the GPU")
    parser.add_argument("--overlap", action="store_true", help="measure the copy ahead on a side stream")
    args = parser.parse_args()
    if args.overlap:
        return overlap(args)
    device = torch.device(args.device)
    model, _ = load_bench_model(args.model, device)
    settings = dict(batch_size=64, prefetch=2, precision="fp16", channels_last=True)
    settings["gpu_decode"] = device.type == "cuda" and not args.cpu_decode
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = photo_folder(root, "photos", args.images, size)
        engine(model, folder, root / "warm", **settings)  # cuDNN and nvJPEG warm up
        start = time.perf_counter()
        run = engine(model, folder, root / "plain", **settings)
        plain = args.images / (time.perf_counter() - start)
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.enable()
        engine(model, folder, root / "profiled", **settings)
        profiler.disable()
        profiled = args.images / (time.perf_counter() - start)
    print(f"{args.model} on {device}, {args.images} JPEGs {args.size}, {settings}")
    print(f"images/s: {plain:.1f} without the profiler, {profiled:.1f} with it")
    print("threads:", run["summary"].get("threads"))
    for order in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).strip_dirs().sort_stats(order).print_stats(30)
        print(f"--- by {order} ---")
        print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[:6000])
    return 0


def _intervals(events, pick) -> list[tuple[float, float]]:
    return sorted((e.time_range.start, e.time_range.end) for e in events if pick(e.name))


def _overlapped(copies, kernels) -> float:
    """The time of `copies` covered by some interval of `kernels` (both sorted (start, end) lists)."""
    total, k = 0.0, 0
    for start, end in copies:
        while k < len(kernels) and kernels[k][1] <= start:
            k += 1
        j = k
        covered_to = start
        while j < len(kernels) and kernels[j][0] < end:
            lo, hi = max(kernels[j][0], covered_to), min(kernels[j][1], end)
            if hi > lo:
                total += hi - lo
                covered_to = hi
            j += 1
    return total


def overlap(args) -> int:
    from batchlens.core.run import pipeline as pipeline_module

    device = torch.device(args.device)
    model, _ = load_bench_model(args.model, device)
    settings = dict(batch_size=64, prefetch=2, precision="fp16", channels_last=True)
    size = tuple(int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = photo_folder(root, "photos", args.images, size)
        engine(model, folder, root / "warm", **settings)
        rates = {}
        for ahead in (False, True, False, True):  # paired, twice each
            pipeline_module.COPY_AHEAD = ahead
            start = time.perf_counter()
            engine(model, folder, root / "o", **settings)
            rates.setdefault(ahead, []).append(args.images / (time.perf_counter() - start))
        pipeline_module.COPY_AHEAD = True
        activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=activities) as prof:
            engine(model, folder, root / "p", **settings)
    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    copies = _intervals(events, lambda name: "HtoD" in name)
    kernels = _intervals(events, lambda name: "Memcpy" not in name and "Memset" not in name)
    copy_time = sum(end - start for start, end in copies)
    share = _overlapped(copies, kernels) / copy_time if copy_time else None
    print(f"{args.model} on {device}, {args.images} JPEGs {args.size}, CPU decode, {settings}")
    for ahead, values in rates.items():
        print(f"copy ahead {'on ' if ahead else 'off'}: images/s {', '.join(f'{v:.1f}' for v in values)}")
    print(
        f"host-to-device copies: {len(copies)}, {copy_time / 1000:.1f} ms in all; "
        f"overlapping a kernel: {'n/a' if share is None else f'{100 * share:.0f} %'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
