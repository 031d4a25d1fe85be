"""Where a fast GPU run spends its CPU time: the run thread's profile (cProfile) of the engine with
the fastest settings (batch 64, fp16, channels_last, GPU decode) on 640x480 JPEGs, for the proof kit.

    python scripts/gpu_profile.py [--images 2048] [--device cuda]

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
    args = parser.parse_args()
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


if __name__ == "__main__":
    raise SystemExit(main())
