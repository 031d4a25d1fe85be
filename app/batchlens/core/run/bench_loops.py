"""The contenders `batchlens bench` times against each other, each a function that processes a list of
images with a loaded model and returns which images it finished and when the first result came.

  plain    what a careful person writes by hand: open -> preprocess -> inference_mode forward -> .cpu()
  expert   what someone who knows PyTorch writes: a DataLoader with one worker process per core,
           batches of 16, pinned memory on CUDA, inference_mode
  naive    the origin story: no no_grad, every output kept on the device with its autograd graph
  engine   the BatchLens engine through its public API, exactly as `batchlens run` drives it
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils._pytree import tree_map
from torch.utils.data import DataLoader, Dataset, default_collate

from batchlens.core.errors import BatchLensError
from batchlens.core.image_guard import open_image
from batchlens.core.inputs.images import Candidate
from batchlens.core.machine.machine_load import usable_cores
from batchlens.core.machine.memory import MemoryProbe, format_bytes
from batchlens.core.models import LoadedModel, load_model
from batchlens.core.outputs.records import OUTPUT_FIELDS
from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import ImageResult, RunFinished
from batchlens.core.run.inference import PRECISIONS
from batchlens.core.run.runner import Runner

EXPERT_BATCH = 16


@dataclass
class Outcome:
    done: list[str]
    first_result_s: float | None = None  # seconds from the start of the row to its first output
    note: str = ""
    settings: dict = field(default_factory=dict)
    top1: dict = field(default_factory=dict)
    before: int | None = None  # memory figures a loop measures itself (the naive loop)
    after: int | None = None
    files_written: int = 0  # output files (PNGs) the engine wrote; the loops write none
    # seconds from the row's start at which each image's result came (the long bench's rows)
    timeline: list[float] = field(default_factory=list)
    allocated: list[int] = field(default_factory=list)  # the engine: allocated memory after each image


# -- images ---------------------------------------------------------------------------------------
def make_synthetic_folder(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> Path:
    """`n` photo-like JPEGs (smooth colour fields with fine noise: they compress and decode like
    photographs, unlike pure noise) of `size` (width, height)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    for i in range(n):
        coarse = rng.integers(0, 256, (max(2, height // 64), max(2, width // 64), 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        pixels = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, (height, width, 3), dtype=np.int16)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            folder / f"img_{i:05d}.jpg", quality=90
        )
    return folder


# -- the model ------------------------------------------------------------------------------------
def load_bench_model(model_id: str, device: torch.device) -> tuple[LoadedModel, str]:
    """The model to benchmark, and a note. A torchvision model whose weights are not downloaded is
    built with random weights (seeded): its speed and memory are those of the trained model."""
    try:
        return load_model(model_id, device), ""
    except BatchLensError:
        from batchlens.core.models import catalogue

        if not catalogue.is_catalogue_model(model_id) or catalogue.is_downloaded(model_id):
            raise
    from batchlens.core.models.base import ModelInfo, prepare
    from batchlens.core.models.preprocessing import Preprocessing

    name, _ = catalogue.split_id(model_id)
    task = catalogue.catalogue_tasks()[name]
    weights = catalogue.weights_for(model_id)
    torch.manual_seed(0)
    module = catalogue.drop_aux_head(catalogue.build_architecture(name))
    adapter = catalogue.catalogue_adapter(task, weights)
    info = ModelInfo(model_id, task, "torchvision", "random weights (offline)")
    preprocessing = Preprocessing.from_torchvision(weights)  # as the trained model's
    loaded = LoadedModel(
        info,
        prepare(module, device),
        adapter,
        device,
        takes_list=task == "detection",
        preprocessing=preprocessing,
    )
    return loaded, "weights not downloaded: random weights (same speed and memory)"


def _batch_of_one(model: LoadedModel, tensor: torch.Tensor):
    return [tensor] if model.takes_list else tensor.unsqueeze(0)


def _to_cpu(value):
    return tree_map(lambda v: v.cpu() if isinstance(v, torch.Tensor) else v, value)


# -- the loops ------------------------------------------------------------------------------------
def plain_loop(model: LoadedModel, candidates: list[Candidate]) -> Outcome:
    """What a careful person writes by hand."""
    start, first, done = time.perf_counter(), None, []
    for c in candidates:
        with open(c.path, "rb") as f, open_image(f) as opened:  # the formats BatchLens reads, only
            image = opened.convert(model.adapter.color_mode)
        x = model.adapter.preprocess(image)
        with torch.inference_mode():
            output = _to_cpu(model.module(_batch_of_one(model, x).to(model.device)))
        del output
        first = first if first is not None else time.perf_counter() - start
        done.append(c.rel)
    return Outcome(done, first)


class _Images(Dataset):
    def __init__(self, model: LoadedModel, candidates: list[Candidate]):
        self.paths = [c.path for c in candidates]
        self.transform, self.mode = model.adapter.preprocess, model.adapter.color_mode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        with open(self.paths[index], "rb") as f, open_image(f) as image:
            return self.transform(image.convert(self.mode))


def expert_loop(
    model: LoadedModel,
    candidates: list[Candidate],
    batch_size: int = EXPERT_BATCH,
    precision: str = "fp32",
    channels_last: bool = False,
) -> Outcome:
    """The loop someone who knows PyTorch writes: worker processes decode and preprocess, batches of
    16, pinned memory on CUDA, inference_mode; on a GPU also mixed precision and channels_last when
    asked (scripts/gpu_bench.py). Its CPU time includes its workers' (the bench reads the children's
    CPU time once they have exited)."""
    workers = usable_cores()
    module = model.module
    if channels_last:  # a copy: the other rows get the model as loaded
        module = copy.deepcopy(module).to(memory_format=torch.channels_last)
    dtype = PRECISIONS[precision]
    loader = DataLoader(
        _Images(model, candidates),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=model.device.type == "cuda",
        collate_fn=list if model.takes_list else default_collate,
    )
    start, first, count, timeline = time.perf_counter(), None, 0, []
    autocast = torch.autocast(model.device.type, dtype=dtype, enabled=dtype is not None)
    with torch.inference_mode(), autocast:
        for batch in loader:
            inputs = (
                [x.to(model.device, non_blocking=True) for x in batch]
                if model.takes_list
                else batch.to(model.device, non_blocking=True)
            )
            if channels_last and not model.takes_list:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            output = _to_cpu(module(inputs))
            del output, inputs
            now = time.perf_counter() - start
            first = first if first is not None else now
            count += len(batch)
            timeline += [now] * len(batch)
    settings, note = {"workers": workers, "batch_size": batch_size}, f"{workers} workers, batch {batch_size}"
    if dtype is not None:
        settings["precision"], note = precision, f"{note}, {precision}"
    if channels_last:
        settings["channels_last"], note = True, f"{note}, channels_last"
    if model.device.type == "cpu":  # its peak RAM is the main process's: the workers decode elsewhere
        note = f"{note}; peak mem: main process only, its workers hold their own"
    return Outcome([c.rel for c in candidates[:count]], first, note, settings, timeline=timeline)


def naive_loop(model: LoadedModel, candidates: list[Candidate], probe: MemoryProbe, limit: int) -> Outcome:
    """The origin story: a model fresh from training (parameters require grad), no no_grad, every
    output kept on the device. Stops when memory has grown past `limit` or the device is out of it.
    Memory is measured from after the model copy, and "after" while the kept outputs still exist."""
    module = copy.deepcopy(model.module).requires_grad_(True)
    start_bytes = probe.sample().allocated
    kept, done, note = [], [], ""
    start, first = time.perf_counter(), None
    try:
        for c in candidates:
            with open(c.path, "rb") as f, open_image(f) as opened:
                image = opened.convert(model.adapter.color_mode)
            x = model.adapter.preprocess(image)
            kept.append(module(_batch_of_one(model, x).to(model.device)))
            first = first if first is not None else time.perf_counter() - start
            done.append(c.rel)
            grown = probe.sample().allocated - start_bytes
            if grown > limit:
                note = f"stopped after {len(done)} of {len(candidates)}: memory grew {format_bytes(grown)}"
                break
    except Exception as exc:
        if "out of memory" not in str(exc).lower():
            raise
        note = f"out of memory after {len(done)} of {len(candidates)} images"
    after = probe.sample().allocated
    del kept, module
    return Outcome(done, first, note or "completed within the memory limit", before=start_bytes, after=after)


def engine_run(
    model: LoadedModel,
    folder: Path,
    out: Path,
    device: str,
    probe: MemoryProbe | None,
    timeline: bool = False,
    **settings,
) -> Outcome:
    """The engine through its public API, exactly as `batchlens run` drives it (`timeline`: keep when
    each result came and the allocated memory after it)."""
    runner = Runner(
        RunConfig(model.info.id, folder, out, device=device, **settings), probe=probe, model=model
    )
    start, first = time.perf_counter(), None
    done, top1, summary, files = [], {}, {}, 0
    times, allocated = [], []
    for event in runner.events():
        if isinstance(event, ImageResult):
            now = time.perf_counter() - start
            first = first if first is not None else now
            if timeline:
                times.append(now)
                allocated.append(event.memory.allocated)
            if event.ok:
                done.append(event.image)
                files += sum(name in event.fields for name in OUTPUT_FIELDS)
                if event.fields.get("top"):
                    top1[event.image] = event.fields["top"][0]["index"]
        elif isinstance(event, RunFinished):
            summary = event.summary
    if summary.get("channels_last"):  # the engine made the model NHWC: the loops get it as loaded
        model.module.to(memory_format=torch.contiguous_format)
    keys = (
        "batch_size",
        "prefetch",
        "precision",
        "channels_last",
        "folded_batch_norm",
        "fast_decode",
        "threads",
        "precision_check",
        "decode_processes",
    )
    shown = {k: summary.get(k) for k in keys}
    shown["batch_size_auto"] = summary.get("batch_size_auto")
    outcome = Outcome(done, first, describe_settings(shown), shown, top1, files_written=files)
    outcome.timeline, outcome.allocated = times, allocated
    return outcome


def describe_settings(shown: dict) -> str:
    parts = [f"batch {shown['batch_size']}", f"prefetch {shown['prefetch']}"]
    threads = shown.get("threads") or {}
    if threads:
        parts.append(f"{threads['torch']}+{threads['decode']} threads")
        if threads.get("decode_in_step"):
            parts.append("decoding in step")
    check = shown.get("precision_check") or {}
    if check.get("asked") == "auto":
        parts.append(f"precision auto: {check['chosen']} ({check['reason']})")
    elif shown.get("precision") not in (None, "fp32"):
        parts.append(shown["precision"])
    if shown.get("decode_processes"):
        parts.append(f"{shown['decode_processes']} decoding processes")
    if shown.get("channels_last"):
        parts.append("channels_last")
    if shown.get("folded_batch_norm") is True:
        parts.append("BatchNorm folded")
    if shown.get("fast_decode"):
        parts.append("fast decode")
    auto = shown.get("batch_size_auto")
    if auto:
        sizes = ", ".join(f"{s['batch_size']}: {s['images_per_second'] or 0:.1f}/s" for s in auto["sizes"])
        parts.append(f"auto: {auto['reason']} ({sizes})")
    return ", ".join(parts)
