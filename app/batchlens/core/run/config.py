"""The settings of one run.

RunConfig sits below the runner, the pipeline and the cluster runner, which all read it, so none of
them has to import another just for the settings (core/run/pipeline.py used to import core/run/runner.py,
which imports the pipeline).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from batchlens.core.formats import DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class RunConfig:
    model: str
    input_dir: Path
    output_dir: Path
    device: str = "auto"
    # Images per forward pass, or "auto": measured on the run's own batches, starting at 1 so the first
    # result comes as soon as a plain loop's (core/run/autobatch.py). Batching changes results only by
    # float rounding; detection models stay at 1 under auto (a batch pads their images to one size).
    batch_size: int | str = "auto"
    recursive: bool = False
    resume: bool = False  # keep the folder's finished images (same model, input and settings only)
    overwrite: bool = False  # replace the run the output folder holds (only its own files go)
    previews: bool = False  # make small preview images for the window (costs a little time)
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    model_options: dict = field(default_factory=dict)  # task options, e.g. {"min_score": 0.5}
    # Batches decoded ahead on background threads (0: decode in the loop). None: the run decides: 2,
    # or on the CPU of a quiet machine none, decoding each batch on every core in step with the
    # forward (core/run/threads.py)
    prefetch: int | None = None
    # torch's intra-op threads: "auto" sizes them with the decoding threads from the free cores
    # (core/run/threads.py), a number fixes them, None keeps torch's own choice (the exact mode)
    threads: int | str | None = "auto"
    precision: str = "fp32"  # "fp32", or "fp16"/"bf16" to run the model under autocast
    channels_last: bool | None = None  # NHWC for conv nets; None: on for CUDA, where it helps
    # Decode JPEGs at a reduced scale when the model shrinks them anyway (classification only);
    # off by default so that results match a plain full-size decode exactly.
    fast_decode: bool = False
    max_failures: int | None = None  # stop the run once this many images have failed (misconfigured)
    cpu_fallback: bool = False  # out of memory even in tiles: run that one image on the CPU
    #: CUDA: record the allocator's history: "off", "oom" (written at the first out-of-memory error),
    #: "always" or "always:N" (written after N images); True means "oom" (core/run/snapshot_recorder.py)
    memory_snapshot: bool | str = "off"
    # Seconds one batch's forward may take before its images are marked as errors and the run goes on
    # (None: no limit); see core/run/watchdog.py for what can and cannot be stopped
    image_timeout: float | None = None
    # Decode JPEGs on the model's device in batches (nvJPEG on CUDA; classification), see inputs/gpu_decode.py
    gpu_decode: bool = False
    # When to hand cached device memory back to the driver: "never", "image", "every:N" or
    # "reserved:F" (reserved over F of the device), see core/run/cache_policy.py
    empty_cache: str = "never"
    # torch.compile the model before the run (the first batch pays the compile time; see summary.json);
    # a string is torch.compile's mode, e.g. "reduce-overhead" (CUDA graphs on a GPU)
    compile: bool | str = False
    # CPU decoding in worker processes: a number (0: none), or "auto": on CUDA without gpu_decode on a
    # machine with many cores (core/inputs/process_decode.py)
    decode_processes: int | str = "auto"


#: "Exactly a plain loop": one image per forward, decoded in the loop, torch's own threads. The
#: defaults batch and prefetch instead (their results differ from these only by float rounding);
#: `batchlens run --exact` and the window's Exact speed use these.
EXACT_SETTINGS = {"batch_size": 1, "prefetch": 0, "threads": None}
