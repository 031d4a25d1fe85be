"""Long runs as users have them: the figures a user feels, for each contender over one folder of
thousands of JPEGs (issue 29). Driven by `scripts/gpu_bench.py --long N` (the GPU proof kit) and
testable on the CPU with a few images.

For each row: end-to-end images/s (start to last result, start-up included), steady-state images/s
(the images after the first 10 %, over the time after the first 10 % had finished), the time to the
first result, and for the engine rows the allocated-memory medians early and late in the run.

  expert    the tuned DataLoader loop (bench_loops.expert_loop): a worker process per core, pinned
            memory; on CUDA batch 64, fp16 autocast, channels_last
  standard  the engine as the window's Standard runs it (on CUDA: --precision auto)
  fastest   the engine as the window's Fastest runs it (--fast-decode; on CUDA fp16, NHWC, GPU decode)
  compiled  Fastest with --compile (torch.compile), only when asked: the measured switch
  dali      NVIDIA DALI's GPU decode and resize feeding the same forward, where DALI is installed
            (import-guarded: otherwise a row that says why it was skipped)
  ceiling   the forward alone on a batch decoded and preprocessed beforehand, already on the device,
            at the expert loop's batch size and precision: what no pipeline can beat

No figure here has been measured on a GPU yet (docs/gpu.md).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from batchlens.core.inputs.images import Candidate, scan_images
from batchlens.core.models import LoadedModel
from batchlens.core.run.bench_loops import Outcome, engine_run, expert_loop, make_synthetic_folder
from batchlens.core.run.pipeline import BatchPipeline

#: The share of a run left out of the steady-state rate (start-up: workers, batch sizing, kernels)
WARM_SHARE = 0.1
CEILING_SECONDS = 2.0  # the forward-only ceiling's timing (at least 3 forwards)
#: The window's speeds as RunConfig settings (ui/run_form.py's SPEEDS; core cannot import the ui)
STANDARD_ON_GPU = {"precision": "auto"}
FASTEST = {"fast_decode": True}
FASTEST_ON_GPU = {"precision": "fp16", "channels_last": True, "gpu_decode": True}
EXPERT_ON_GPU = {"batch_size": 64, "precision": "fp16", "channels_last": True}


@dataclass
class LongRow:
    name: str
    label: str
    images: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0  # end to end
    steady_images_per_second: float = 0.0  # after the first WARM_SHARE of the images
    first_result_s: float | None = None
    vs_expert: float | None = None  # end to end, over the expert loop's
    steady_vs_expert: float | None = None
    memory: dict | None = None  # engine rows: allocated-memory medians early and late
    note: str = ""
    settings: dict = field(default_factory=dict)
    skipped: str | None = None  # why the row did not run


def rates(timeline: list[float], seconds: float) -> tuple[float, float, float | None]:
    """(end-to-end images/s, steady-state images/s, first result) from `timeline`, the seconds since
    the row's start at which each image's result came, and the row's total `seconds`."""
    n = len(timeline)
    if n == 0 or seconds <= 0:
        return 0.0, 0.0, None
    times = sorted(timeline)
    warm = max(1, math.ceil(WARM_SHARE * n))
    after = seconds - times[warm - 1]
    steady = (n - warm) / after if n > warm and after > 0 else n / seconds
    return n / seconds, steady, times[0]


def memory_medians(allocated: list[int], early_at: int = 1000, stretch: int = 1000) -> dict | None:
    """Allocated memory over `stretch` images from image `early_at` against as many at the end (less a
    guard: the last batches read low, nothing is prefetched after them); None for a short run."""
    n = len(allocated)
    stretch = min(stretch, n // 4)
    early_at = min(early_at, n // 4)
    if stretch < 2:
        return None
    early = allocated[early_at : early_at + stretch]
    late = allocated[n - 2 * stretch : n - stretch]
    return {
        "early_from_image": early_at + 1,
        "late_from_image": n - 2 * stretch + 1,
        "stretch": stretch,
        "early_median": int(statistics.median(early)),
        "late_median": int(statistics.median(late)),
        "difference": int(statistics.median(late) - statistics.median(early)),
    }


def cached_folder(root: Path, n: int, size: tuple[int, int], distinct: int = 256) -> Path:
    """`n` photo-like JPEGs of `size` under `root` (kept: the next bench reuses them): `distinct`
    generated, the rest hard links to them (each decodes as much work as a different photo)."""
    folder = root / f"{size[0]}x{size[1]}-{n}"
    if folder.is_dir() and sum(1 for _ in folder.iterdir()) == n:
        return folder
    sources = make_synthetic_folder(root / f"{size[0]}x{size[1]}-distinct-{distinct}", distinct, size)
    originals = sorted(sources.glob("img_*.jpg"))[:distinct]
    partial = folder.with_name(folder.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        target = partial / f"img_{i:06d}.jpg"
        if not target.exists():
            os.link(originals[i % len(originals)], target)
    partial.rename(folder)  # complete or absent: a cut-short generation is never taken for a set
    return folder


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_ceiling(
    model: LoadedModel, candidates: list[Candidate], batch_size: int, precision: str, channels_last: bool
) -> LongRow:
    """The forward alone on one batch decoded, preprocessed and moved to the device beforehand."""
    row = LongRow("ceiling", "forward only (pre-decoded batch on the device)")
    items = BatchPipeline(model, Path(os.devnull), None).prepare(candidates[:batch_size]).items
    tensors = [i.tensor for i in items if i.tensor is not None]
    if not tensors or model.takes_list or any(t.shape != tensors[0].shape for t in tensors):
        row.skipped = "the model takes lists or the images differ in size"
        return row
    while len(tensors) < batch_size:  # fewer images than a batch: repeat them
        tensors += tensors[: batch_size - len(tensors)]
    layout = torch.channels_last if channels_last else torch.contiguous_format
    batch = torch.stack(tensors).to(model.device).contiguous(memory_format=layout)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    module = model.module.to(memory_format=layout)
    try:
        with (
            torch.inference_mode(),
            torch.autocast(model.device.type, dtype=dtype, enabled=dtype is not None),
        ):
            module(batch)  # warm-up: kernels chosen
            _sync(model.device)
            count, start = 0, time.perf_counter()
            while count < 3 or time.perf_counter() - start < CEILING_SECONDS:
                module(batch)
                count += 1
            _sync(model.device)
            seconds = time.perf_counter() - start
    finally:
        model.module.to(memory_format=torch.contiguous_format)
    row.images, row.seconds = count * batch_size, round(seconds, 3)
    row.images_per_second = row.steady_images_per_second = row.images / seconds
    row.settings = {"batch_size": batch_size, "precision": precision, "channels_last": channels_last}
    row.note = f"batch {batch_size}, {precision}" + (", channels_last" if channels_last else "")
    return row


def dali_row(model: LoadedModel, folder: Path, batch_size: int, precision: str) -> LongRow:
    """NVIDIA DALI decoding (nvJPEG, "mixed") and resizing on the GPU, feeding the same forward."""
    row = LongRow("dali", "DALI GPU decode + the same forward")
    if model.device.type != "cuda":
        row.skipped = "DALI needs a CUDA device"
        return row
    try:
        from nvidia.dali import fn, pipeline_def, types
        from nvidia.dali.plugin.pytorch import DALIGenericIterator
    except ImportError as exc:
        row.skipped = f"NVIDIA DALI is not installed ({exc})"
        return row
    pre = model.preprocessing
    plain = pre is not None and pre.resize is not None and len(pre.resize) == 1 and pre.crop and pre.mean
    if not plain or model.takes_list or pre.channel_order != "RGB":
        row.skipped = "the model's preprocessing is not a short-side resize, centre crop and normalise"
        return row
    size, (crop_h, crop_w) = pre.resize[0], pre.crop
    files = sorted(str(p) for p in folder.glob("*.jpg"))

    @pipeline_def(batch_size=batch_size, num_threads=max(1, (os.cpu_count() or 2) - 2), device_id=0)
    def images():
        jpegs, _ = fn.readers.file(files=files, random_shuffle=False, name="reader")
        decoded = fn.decoders.image(jpegs, device="mixed", output_type=types.RGB)
        resized = fn.resize(decoded, resize_shorter=size, antialias=True)
        return fn.crop_mirror_normalize(
            resized,
            dtype=types.FLOAT,
            output_layout="CHW",
            crop=(crop_h, crop_w),
            mean=[255 * m for m in pre.mean],
            std=[255 * s for s in pre.std],
        )

    pipe = images()
    pipe.build()
    loader = DALIGenericIterator(pipe, ["x"], reader_name="reader", auto_reset=False)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    module = model.module.to(memory_format=torch.channels_last)
    timeline, start = [], time.perf_counter()
    try:
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            for data in loader:
                x = data[0]["x"].contiguous(memory_format=torch.channels_last)
                out = module(x).float().cpu()
                now = time.perf_counter() - start
                timeline += [now] * len(out)
    finally:
        model.module.to(memory_format=torch.contiguous_format)
    seconds = time.perf_counter() - start
    _fill(row, timeline[: len(files)], seconds)
    row.note = f"batch {batch_size}, {precision}, channels_last; resize {size}, crop {crop_h}x{crop_w}"
    return row


def _fill(row: LongRow, timeline: list[float], seconds: float) -> None:
    row.images, row.seconds = len(timeline), round(seconds, 3)
    row.images_per_second, row.steady_images_per_second, row.first_result_s = rates(timeline, seconds)


def _outcome_row(name: str, label: str, outcome: Outcome, seconds: float) -> LongRow:
    row = LongRow(name, label, note=outcome.note, settings=dict(outcome.settings))
    _fill(row, outcome.timeline, seconds)
    if outcome.allocated:
        row.memory = memory_medians(outcome.allocated)
    return row


def run_long_bench(
    model: LoadedModel,
    folder: Path,
    scratch: Path,
    *,
    compile_row: bool = False,
    dali: bool = True,
    log=lambda _: None,
) -> list[LongRow]:
    """Every row over the images of `folder` with `model` (loaded and warm), in a fixed order."""
    cuda = model.device.type == "cuda"
    candidates = list(scan_images(folder))
    device = str(model.device)
    expert_settings = EXPERT_ON_GPU if cuda else {}
    standard = STANDARD_ON_GPU if cuda else {}
    fastest = {**FASTEST, **(FASTEST_ON_GPU if cuda else {})}
    rows: list[LongRow] = []

    def timed(name: str, label: str, body) -> LongRow:
        log(f"{label}: {len(candidates)} images")
        _sync(model.device)
        start = time.perf_counter()
        outcome = body()
        _sync(model.device)
        row = _outcome_row(name, label, outcome, time.perf_counter() - start)
        rows.append(row)
        return row

    def engine(name: str, **settings):
        out = scratch / f"out-{name}"
        return lambda: engine_run(model, folder, out, device, None, timeline=True, **settings)

    expert = timed(
        "expert", "expert DataLoader loop", lambda: expert_loop(model, candidates, **expert_settings)
    )
    timed("standard", "BatchLens Standard", engine("standard", **standard))
    timed("fastest", "BatchLens Fastest", engine("fastest", **fastest))
    if compile_row:
        mode = "reduce-overhead" if cuda else True  # CUDA graphs on a GPU
        timed("compiled", f"BatchLens Fastest, compile {mode}", engine("compiled", **fastest, compile=mode))
    if dali:
        rows.append(
            dali_row(model, folder, expert_settings.get("batch_size", 16), fastest.get("precision", "fp32"))
        )
    log("forward-only ceiling")
    rows.append(
        forward_ceiling(
            model,
            candidates,
            expert_settings.get("batch_size", 16),
            expert_settings.get("precision", "fp32"),
            expert_settings.get("channels_last", False),
        )
    )
    for row in rows:
        if expert.images_per_second and row.images and row.name != "expert":
            row.vs_expert = round(row.images_per_second / expert.images_per_second, 3)
            if expert.steady_images_per_second:
                row.steady_vs_expert = round(
                    row.steady_images_per_second / expert.steady_images_per_second, 3
                )
    return rows


def rows_json(rows: list[LongRow]) -> list[dict]:
    return [asdict(row) for row in rows]
