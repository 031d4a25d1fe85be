"""GPU figures for the proof kit (scripts/gpu_proof.sh): throughput against a plain loop and an expert
DataLoader loop, the cost of each --empty-cache policy, and allocated memory over 10,000 images.

    python scripts/gpu_bench.py --out DIR [--quick]
    python scripts/gpu_bench.py --out DIR --long 20000 [--sizes 640x480,1600x1200] [--cache DIR]

--long N runs the long-run rows instead (core/run/bench_long.py: the expert loop, Standard, Fastest,
DALI where installed, the forward-only ceiling; end-to-end and steady-state images/s, first result,
memory early and late) over N JPEGs of each size, and writes DIR/gpu-long.json.

Writes DIR/gpu-bench.json and prints a table. Every figure is measured here, in this run, on the
same images and the same model (ResNet-50 with seeded random weights: no download needed, and the
speed and memory are those of the trained network). Needs a CUDA device.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from batchlens.core.inputs.images import scan_images
from batchlens.core.run.bench import load_bench_model, make_synthetic_folder
from batchlens.core.run.bench_loops import expert_loop, plain_loop
from batchlens.core.run.config import EXACT_SETTINGS, RunConfig
from batchlens.core.run.events import ImageResult, RunFinished
from batchlens.core.run.runner import Runner

MiB = 2**20


# -- images ---------------------------------------------------------------------------------------
def _make_part(args) -> None:
    folder, n, size, seed = args
    make_synthetic_folder(Path(folder), n, size, seed=seed)


def photo_folder(root: Path, name: str, n: int, size: tuple[int, int], distinct: int = 256) -> Path:
    """`n` photo-like JPEGs of `size`: `distinct` generated in parallel, the rest hard links to them
    (the decoder does the same work for each; generating 10,000 would take minutes)."""
    folder = root / name
    parts = root / f"{name}-parts"
    jobs = min(distinct, os.cpu_count() or 4)
    per = -(-distinct // jobs)
    with multiprocessing.Pool(jobs) as pool:
        pool.map(_make_part, [(str(parts / str(j)), per, size, j) for j in range(jobs)])
    sources = sorted(parts.rglob("*.jpg"))[:distinct]
    folder.mkdir(parents=True)
    for i in range(n):
        os.link(sources[i % len(sources)], folder / f"img_{i:05d}.jpg")
    return folder


# -- contenders: the bench's own plain and expert loops (core/run/bench_loops.py), and the engine ------
def engine(model, folder: Path, out: Path, **settings) -> dict:
    """A BatchLens run; returns its summary plus the allocated memory after each image."""
    allocated, summary, first = [], None, None
    config = RunConfig(model.info.id, folder, out, device=str(model.device), **settings)
    start = time.perf_counter()
    for event in Runner(config, model=model).events():
        if isinstance(event, ImageResult):
            first = first or time.perf_counter() - start
            allocated.append(event.memory.allocated)
        elif isinstance(event, RunFinished):
            summary = event.summary
    shutil.rmtree(out, ignore_errors=True)
    return {"summary": summary, "allocated": allocated, "first": first}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    sync()
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    sync()
    return time.perf_counter() - start, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="few small images: a smoke test of the script")
    parser.add_argument("--device", default="cuda", help="cuda (the proof), or cpu for --quick checks")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--long", type=int, default=0, help="the long-run rows over this many images")
    parser.add_argument("--sizes", default="640x480,1600x1200", help="image sizes of the long rows")
    parser.add_argument(
        "--cache", type=Path, help="where the long rows' JPEGs are kept (default: a temp dir)"
    )
    parser.add_argument("--compile-row", action="store_true", help="add Fastest with --compile")
    args = parser.parse_args()
    if args.long:
        return long_rows(args)
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    model, note = load_bench_model(args.model, device)
    fast = dict(batch_size=64, prefetch=2, precision="fp16" if cuda else "fp32", channels_last=cuda)
    n, n_plain = (48, 8) if args.quick else (2048, 256)
    sizes = ((160, 120), (320, 240)) if args.quick else ((640, 480), (1600, 1200))
    report = {
        "device": torch.cuda.get_device_name(device) if cuda else args.device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cores": os.cpu_count(),
        "model": f"{args.model} ({note or 'downloaded weights'})",
        "rows": [],
    }

    def row(name, size, images, seconds, first=None, extra=None):
        entry = {
            "name": name,
            "size": f"{size[0]}x{size[1]}",
            "images": images,
            "seconds": round(seconds, 3),
            "images_per_second": round(images / seconds, 1),
            "first_result_seconds": None if first is None else round(first, 3),
            **(extra or {}),
        }
        report["rows"].append(entry)
        print(json.dumps(entry), flush=True)
        return entry

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for size in sizes:
            folder = photo_folder(root, f"{size[0]}", n, size)
            paths = sorted(folder.iterdir())
            candidates = list(scan_images(folder))
            model.module.to(memory_format=torch.contiguous_format)  # batch-1 rows: the layout as loaded
            plain_loop(model, candidates[:8])  # warm-up: cuDNN picks its kernels
            seconds, outcome = timed(plain_loop, model, candidates[:n_plain])
            plain = row("plain loop, batch 1, fp32", size, n_plain, seconds, outcome.first_result_s)
            small = root / f"{size[0]}-b1"
            small.mkdir()
            for p in paths[:n_plain]:
                os.link(p, small / p.name)
            seconds, run = timed(engine, model, small, root / "o", **EXACT_SETTINGS)
            row(
                "engine, batch 1 (exact), fp32",
                size,
                n_plain,
                seconds,
                run["first"],
                extra={"vs_plain": round((n_plain / seconds) / plain["images_per_second"], 3)},
            )
            expert_settings = dict(batch_size=64, precision="fp16", channels_last=True) if cuda else {}
            seconds, outcome = timed(expert_loop, model, candidates, **expert_settings)
            first = outcome.first_result_s
            expert = row(f"expert DataLoader loop ({outcome.note})", size, n, seconds, first)
            for label, extra_settings in (("CPU decode", {}), ("GPU decode", {"gpu_decode": True})):
                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                seconds, run = timed(engine, model, folder, root / "o", **fast, **extra_settings)
                row(
                    f"engine b64 prefetch 2 fp16 NHWC, {label}",
                    size,
                    n,
                    seconds,
                    run["first"],
                    extra={
                        "vs_expert": round((n / seconds) / expert["images_per_second"], 3),
                        "peak_allocated_mib": round(torch.cuda.max_memory_allocated(device) / MiB, 1)
                        if cuda
                        else None,
                        "reserved_mib": round(torch.cuda.memory_reserved(device) / MiB, 1) if cuda else None,
                        "ok": run["summary"]["counts"]["ok"],
                        "threads": run["summary"]["threads"],  # torch and decoding threads chosen
                    },
                )

        # The cost of each cache policy per image, at batch 1 on the same small-set images.
        small = root / f"{sizes[0][0]}-b1"
        costs = {}
        for policy in ("never", "image", "every:16", "reserved:0.5"):
            rounds = [
                timed(engine, model, small, root / "o", **EXACT_SETTINGS, empty_cache=policy)[0]
                for _ in range(3)
            ]
            costs[policy] = statistics.median(rounds) / n_plain * 1000
        report["cache_policy_ms_per_image"] = {k: round(v, 3) for k, v in costs.items()}
        report["cache_policy_extra_ms_per_image"] = {
            k: round(v - costs["never"], 3) for k, v in costs.items()
        }
        print("cache policies, ms/image:", report["cache_policy_ms_per_image"], flush=True)

        # Flat memory: allocated after 10,000 images equals allocated after 100.
        many = 200 if args.quick else 10_000
        folder = root / "many"
        folder.mkdir()
        sources = sorted((root / f"{sizes[0][0]}").iterdir())
        for i in range(many):
            os.link(sources[i % len(sources)], folder / f"m_{i:05d}.jpg")
        seconds, run = timed(engine, model, folder, root / "o", **fast, gpu_decode=True)
        allocated, batch = run["allocated"], run["summary"].get("batch_size") or 64
        # Like with like: allocated over a stretch of images early in the run against as many late
        # in it, both while the prefetcher still holds its batches in flight (the last image alone
        # reads low: nothing is prefetched after the last batch). The median is what a batch in
        # flight holds; the maximum also catches a moment when one more batch was alive.
        stretch = min(1000, max(1, (len(allocated) - 100) // 3))  # --quick has few images
        guard = min(3 * batch, stretch)
        early_window = allocated[100 : 100 + stretch]
        late_window = allocated[-stretch - guard : -guard]
        early, late = statistics.median(early_window), statistics.median(late_window)
        report["flat_memory"] = {
            "images": len(allocated),
            "batch": batch,
            "stretch_images": stretch,
            "early_median_allocated_mib": round(early / MiB, 2),
            "late_median_allocated_mib": round(late / MiB, 2),
            "early_max_allocated_mib": round(max(early_window) / MiB, 2),
            "late_max_allocated_mib": round(max(late_window) / MiB, 2),
            "difference_mib": round((late - early) / MiB, 3),
            "allocated_after_100_mib": round(allocated[99] / MiB, 2),
            "allocated_at_end_mib": round(allocated[-1] / MiB, 2),
            "images_per_second": round(len(allocated) / seconds, 1),
        }
        print("flat memory:", report["flat_memory"], flush=True)

    (args.out / "gpu-bench.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


def long_rows(args) -> int:
    """The long-run rows (core/run/bench_long.py) for each size; DIR/gpu-long.json."""
    from batchlens.core.run.bench_long import cached_folder, rows_json, run_long_bench

    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    model, note = load_bench_model(args.model, device)
    report = {
        "device": torch.cuda.get_device_name(device) if cuda else args.device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cores": os.cpu_count(),
        "model": f"{args.model} ({note or 'downloaded weights'})",
        "images": args.long,
        "sizes": {},
    }
    path = args.out / "gpu-long.json"
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp) / "sets"
        for text in args.sizes.split(","):
            width, height = (int(v) for v in text.lower().split("x"))
            started = time.perf_counter()
            folder = cached_folder(cache, args.long, (width, height))
            print(f"{text}: {args.long} JPEGs ready in {time.perf_counter() - started:.1f} s", flush=True)
            rows = run_long_bench(
                model, folder, Path(tmp) / f"scratch-{text}", compile_row=args.compile_row, log=print
            )
            report["sizes"][text] = rows_json(rows)
            for row in report["sizes"][text]:
                print(json.dumps({k: v for k, v in row.items() if k != "settings"}), flush=True)
            path.write_text(json.dumps(report, indent=2) + "\n")  # what finished, should a later size not
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
