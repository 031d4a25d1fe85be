"""Images/s of `batchlens run --cluster` on a local Ray cluster with 1 and 2 workers, next to the
local engine, over generated folders. Prints a table (the numbers in docs/clusters.md come from here).

    python benchmarks/cluster_bench.py [--cpus 2] [--shapes 400] [--denoise 120]
    python benchmarks/cluster_bench.py --address auto     # a cluster started with `ray start --head`

Without --address it starts a Ray cluster of --cpus CPUs in this process (its workers are processes
all the same); with one it joins that cluster as `batchlens run --cluster ADDRESS` does.

"total" counts everything a user waits for once Ray is up (workers starting, loading the model);
"steady" counts from the first image's result to the last, i.e. the rate once the workers run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers makes the folders

import ray  # noqa: E402
from tests.helpers import make_denoise_folder, make_shapes_folder  # noqa: E402

from batchlens.core.cluster import ClusterConfig, ClusterRunner  # noqa: E402
from batchlens.core.run.config import RunConfig  # noqa: E402
from batchlens.core.run.events import ImageResult  # noqa: E402
from batchlens.core.run.runner import Runner  # noqa: E402


def timed(runner) -> tuple[int, float, float]:
    """(images, total seconds, steady images/s) of one run."""
    start = time.perf_counter()
    stamps = [time.perf_counter() for event in runner.events() if isinstance(event, ImageResult)]
    total = time.perf_counter() - start
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    return len(stamps), total, steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--shapes", type=int, default=400, help="images for demo-shapes (96x96)")
    parser.add_argument("--denoise", type=int, default=120, help="images for demo-denoise (300x300)")
    parser.add_argument("--address", help="a running cluster to join (auto, HOST:PORT, ray://...)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="batchlens-cluster-bench-"))
    folders = {"demo-shapes": root / "shapes", "demo-denoise": root / "noisy"}
    make_shapes_folder(folders["demo-shapes"], args.shapes)
    make_denoise_folder(folders["demo-denoise"], args.denoise)
    if not args.address:  # quiet, as BatchLens joins: the table is the output
        ray.init(
            num_cpus=args.cpus,
            include_dashboard=False,
            object_store_memory=200 * 2**20,
            logging_level="ERROR",
            log_to_driver=False,
        )
    rows = []
    try:
        for model, folder in folders.items():
            config = RunConfig(model, folder, root / f"{model}-local", device="cpu", batch_size=8)
            rows.append((model, "local engine", *timed(Runner(config))))
            for workers in range(1, args.cpus + 1):
                config = RunConfig(model, folder, root / f"{model}-{workers}", device="cpu", batch_size=8)
                runner = ClusterRunner(config, ClusterConfig(args.address or "auto", workers=workers))
                rows.append((model, f"Ray, {workers} worker(s)", *timed(runner)))
    finally:
        ray.shutdown()
    print(
        f"\n{'model':<14} {'where':<18} {'images':>6} {'total s':>8} {'total img/s':>11} {'steady img/s':>12}"
    )
    for model, where, images, total, steady in rows:
        print(f"{model:<14} {where:<18} {images:>6} {total:>8.1f} {images / total:>11.1f} {steady:>12.1f}")


if __name__ == "__main__":
    main()
