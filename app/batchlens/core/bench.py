"""`batchlens bench`: the engine side by side with hand-written loops, on the same images and model.

Rows (each timed from its first image to its last output on the CPU, model already loaded and warm):
  plain    a plain hand-written loop: open -> preprocess -> inference_mode forward -> .cpu()
  naive    the origin story: no no_grad, every output kept on the device with its autograd graph;
           bounded: it stops when memory has grown past a limit, and reports how far it got
  engine   the BatchLens engine with default settings (batch 1, no prefetch)
  tuned    the engine with batching (--batch-size, or auto) and prefetching
  fast     the tuned engine with --fast-decode (classification: JPEGs decoded at reduced scale), with
           how often its top-1 label agrees with the default row's full-size decode
  amp      the tuned engine under --precision fp16/bf16 (when asked for)
  no-probe the engine's defaults with memory sampling switched off (--sampler-check), to measure
           what the sampler costs

Memory is the device's allocated memory on GPUs and the process RSS on the CPU (as the probe says).
"""

from __future__ import annotations

import copy
import hashlib
import os
import platform
import shlex
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils._pytree import tree_map

from batchlens import __version__
from batchlens.core.autobatch import choose_batch_size
from batchlens.core.config import RunConfig
from batchlens.core.devices import resolve_device
from batchlens.core.errors import BatchLensError
from batchlens.core.events import ImageResult, RunFinished
from batchlens.core.images import Candidate, decodes_reduced, scan_images
from batchlens.core.inference import use_channels_last
from batchlens.core.memory import MemoryProbe, MemorySample, format_bytes, probe_for
from batchlens.core.models import LoadedModel, load_model
from batchlens.core.pipeline import BatchPipeline
from batchlens.core.runner import Runner

DEFAULT_NAIVE_LIMIT = 1 << 30  # the naive loop stops once memory has grown by 1 GiB


@dataclass
class BenchConfig:
    model: str
    input_dir: Path | None = None  # a folder of images, or:
    synthetic: int = 0  # this many generated JPEG photos of `size`
    size: tuple[int, int] = (1600, 1200)
    device: str = "auto"
    batch_size: int | str = "auto"  # for the tuned row
    prefetch: int = 2  # for the tuned row
    precision: str = "fp32"  # fp16/bf16 adds an AMP row
    naive_limit_bytes: int = DEFAULT_NAIVE_LIMIT
    repeat: int = 1  # time every row this many times and keep the best
    sampler_check: bool = False
    threads: int | None = None  # torch intra-op threads for every row (None: torch's default)


@dataclass
class Row:
    name: str
    label: str
    images: int = 0
    images_digest: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # CPU time of the whole process over the row (all threads)
    images_per_second: float = 0.0
    ratio: float | None = None  # images/s over the plain loop's
    peak_bytes: int = 0
    after_bytes: int = 0
    per_image_bytes: float = 0.0  # memory growth over the row divided by its images
    note: str = ""
    settings: dict = field(default_factory=dict)


def digest(names: list[str]) -> str:
    """A fingerprint of which images a row processed, to check every row saw the same ones."""
    return hashlib.sha1("\n".join(sorted(names)).encode()).hexdigest()[:16]


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

    name, _ = catalogue.split_id(model_id)
    task = catalogue.catalogue_tasks()[name]
    weights = catalogue.weights_for(model_id)
    torch.manual_seed(0)
    module = catalogue.drop_aux_head(catalogue.build_architecture(name))
    adapter = catalogue.catalogue_adapter(task, weights)
    info = ModelInfo(model_id, task, "torchvision", "random weights (offline)")
    loaded = LoadedModel(info, prepare(module, device), adapter, device, takes_list=task == "detection")
    return loaded, "weights not downloaded: random weights (same speed and memory)"


def _batch_of_one(model: LoadedModel, tensor: torch.Tensor):
    return [tensor] if model.takes_list else tensor.unsqueeze(0)


def _to_cpu(value):
    return tree_map(lambda v: v.cpu() if isinstance(v, torch.Tensor) else v, value)


# -- memory ---------------------------------------------------------------------------------------
class _PeakWatch:
    """Samples the probe every 20 ms on a thread while a row runs (as the window's plot does), so
    the CPU's RSS peak is caught between the rows' own samples. GPUs report an exact peak anyway."""

    def __init__(self, probe: MemoryProbe):
        self.probe = probe
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.probe.sample().peak)

    def __enter__(self) -> _PeakWatch:
        self.probe.reset_peak()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.probe.sample().peak)


def _settle(probe: MemoryProbe) -> MemorySample:
    probe.clear_cache()  # collects garbage and hands cached memory back
    return probe.sample()


class _NoProbe(MemoryProbe):
    """A probe that reads nothing, to time the engine without memory sampling."""

    def __init__(self, kind: str):
        self.kind = kind
        self._sample = MemorySample(0.0, 0, 0, 0)

    def sample(self) -> MemorySample:
        return self._sample

    def clear_cache(self):  # pragma: no cover - never called in a run
        raise NotImplementedError


# -- the rows -------------------------------------------------------------------------------------
def plain_loop(model: LoadedModel, candidates: list[Candidate]) -> list[str]:
    """What a careful person writes by hand."""
    done = []
    for c in candidates:
        image = Image.open(c.path).convert(model.adapter.color_mode)
        x = model.adapter.preprocess(image)
        with torch.inference_mode():
            output = _to_cpu(model.module(_batch_of_one(model, x).to(model.device)))
        del output
        done.append(c.rel)
    return done


def naive_loop(model: LoadedModel, candidates: list[Candidate], probe: MemoryProbe, limit: int) -> dict:
    """The origin story: a model fresh from training (parameters require grad), no no_grad, every
    output kept on the device. Stops when memory has grown past `limit` or the device is out of it.
    Memory is measured from after the model copy, and "after" while the kept outputs still exist."""
    module = copy.deepcopy(model.module).requires_grad_(True)
    start = probe.sample().allocated
    kept, done, note = [], [], ""
    try:
        for c in candidates:
            image = Image.open(c.path).convert(model.adapter.color_mode)
            x = model.adapter.preprocess(image)
            kept.append(module(_batch_of_one(model, x).to(model.device)))
            done.append(c.rel)
            grown = probe.sample().allocated - start
            if grown > limit:
                note = f"stopped after {len(done)} of {len(candidates)}: memory grew {format_bytes(grown)}"
                break
    except Exception as exc:
        if "out of memory" not in str(exc).lower():
            raise
        note = f"out of memory after {len(done)} of {len(candidates)} images"
    after = probe.sample().allocated
    del kept, module
    return {
        "done": done,
        "note": note or "completed within the memory limit",
        "before": start,
        "after": after,
    }


def engine_run(
    model: LoadedModel, folder: Path, out: Path, device: str, probe: MemoryProbe, **settings
) -> dict:
    """The engine through its public API, exactly as `batchlens run` drives it."""
    runner = Runner(
        RunConfig(model.info.id, folder, out, device=device, **settings), probe=probe, model=model
    )
    done, top1, summary = [], {}, {}
    for event in runner.events():
        if isinstance(event, ImageResult):
            if event.ok:
                done.append(event.image)
                if event.fields.get("top"):
                    top1[event.image] = event.fields["top"][0]["index"]
        elif isinstance(event, RunFinished):
            summary = event.summary
    keys = ("batch_size", "prefetch", "precision", "channels_last", "fast_decode")
    settings = {k: summary.get(k) for k in keys}
    return {"done": done, "note": _describe_settings(settings, summary), "settings": settings, "top1": top1}


def _timed(name: str, label: str, probe: MemoryProbe, body: Callable[[], dict]) -> Row:
    """Run `body` (which returns {"done": [...], "note": ..., optionally "before"/"after"/"settings"})
    and fill a Row with its speed and memory."""
    before = _settle(probe).allocated
    with _PeakWatch(probe) as watch:
        t0, cpu0 = time.perf_counter(), time.process_time()
        out = body()
        seconds = time.perf_counter() - t0
        cpu_seconds = time.process_time() - cpu0
    done = out["done"]
    after = out.get("after", probe.sample().allocated)
    before = out.get("before", before)
    return Row(
        name,
        label,
        images=len(done),
        images_digest=digest(done),
        seconds=round(seconds, 4),
        cpu_seconds=round(cpu_seconds, 4),
        images_per_second=len(done) / seconds if seconds > 0 else 0.0,
        peak_bytes=watch.peak,
        after_bytes=after,
        per_image_bytes=(after - before) / max(1, len(done)),
        note=out.get("note", ""),
        settings=out.get("settings", {}),
    )


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = lambda _: None) -> dict:
    """Run every row and return the result (see `format_table`), ready for json.dump."""
    if (cfg.input_dir is None) == (not cfg.synthetic):
        raise BatchLensError("Give either --input DIR or --synthetic N (not both).")
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="batchlens-bench-")))
        if cfg.synthetic:
            log(f"writing {cfg.synthetic} synthetic {cfg.size[0]}x{cfg.size[1]} JPEGs")
            folder = make_synthetic_folder(scratch / "images", cfg.synthetic, cfg.size)
            source = f"{cfg.synthetic} synthetic {cfg.size[0]}x{cfg.size[1]} JPEGs"
        else:
            folder = Path(cfg.input_dir).expanduser()
            if not folder.is_dir():
                raise BatchLensError(f"The input folder {folder} does not exist.")
            source = str(folder)
        candidates = list(scan_images(folder))
        if not candidates:
            raise BatchLensError(f"There are no images in {folder}.")
        model, model_note = load_bench_model(cfg.model, device)
        probe = probe_for(device)
        # Warm up kernels and allocators once, so no row pays for first-call set-up.
        plain_loop(model, candidates[:1])

        top1: dict[str, dict] = {}  # each engine row's top-1 label index per image (classification)

        def engine_row(name: str, label: str, run_probe: MemoryProbe | None = None, **settings):
            runs = iter(range(1_000_000))

            def body() -> dict:
                out = scratch / f"out-{name}-{next(runs)}"
                result = engine_run(model, folder, out, cfg.device, run_probe or probe, **settings)
                top1[name] = result.pop("top1")
                return result

            return name, label, body

        batch_size, tuning = cfg.batch_size, None
        if batch_size == "auto":
            # Tuned once, outside the timed rows: its cost is paid once a run, not once an image.
            log("choosing the batch size (auto)")
            batch_size, tuning = tune_batch_size(model, scratch, candidates, probe)
        timed = [("plain", "plain loop", lambda: {"done": plain_loop(model, candidates)})]
        timed.append(engine_row("engine", "BatchLens, defaults"))
        if cfg.sampler_check:
            timed.append(engine_row("no-probe", "BatchLens, no sampler", run_probe=_NoProbe(probe.kind)))
        tuned = {"batch_size": batch_size, "prefetch": cfg.prefetch}
        timed.append(engine_row("tuned", "BatchLens, batch+prefetch", **tuned))
        if decodes_reduced(candidates[0].path, model.adapter.decode_size):
            label = "BatchLens, batch+prefetch+fast decode"
            timed.append(engine_row("fast", label, **tuned, fast_decode=True))
        if cfg.precision != "fp32":
            timed.append(engine_row("amp", f"BatchLens, {cfg.precision}", **tuned, precision=cfg.precision))
        # Repeats go round all the rows in turn, so a busy spell on a shared machine hits every row
        # alike; each row keeps its best round.
        rows: dict[str, Row] = {}
        for round_ in range(max(1, cfg.repeat)):
            for name, label, body in timed:
                log(f"{label} (round {round_ + 1} of {max(1, cfg.repeat)})")
                row = _timed(name, label, probe, body)
                if name not in rows or row.images_per_second > rows[name].images_per_second:
                    rows[name] = row
        if tuning:
            rows["tuned"].note += f"; {tuning}"
            rows["tuned"].settings["batch_size_auto"] = tuning
        if "fast" in rows and top1.get("engine"):
            same = sum(top1["fast"].get(image) == index for image, index in top1["engine"].items())
            difference = input_difference(model, candidates[:8], scratch)
            rows["fast"].note += (
                f"; model input vs full decode: mean |diff| {difference:.4f}; "
                f"top-1 as with full decode on {same} of {len(top1['engine'])} images"
            )
            rows["fast"].settings["top1_agreement"] = [same, len(top1["engine"])]
            rows["fast"].settings["input_mean_abs_diff"] = round(difference, 5)
        # The naive loop runs last, so the memory it strands cannot weigh on the other rows.
        log("naive loop (origin story)")
        naive = _timed(
            "naive",
            "naive loop (no no_grad, kept)",
            probe,
            lambda: naive_loop(model, candidates, probe, cfg.naive_limit_bytes),
        )
        _settle(probe)

        ordered = [rows["plain"], naive] + [
            rows[k] for k in ("engine", "no-probe", "tuned", "fast", "amp") if k in rows
        ]
        plain_rate = rows["plain"].images_per_second
        for row in ordered:
            row.ratio = row.images_per_second / plain_rate if plain_rate else None

        sampler = measure_sampler(probe, rows["engine"])
        if "no-probe" in rows and rows["no-probe"].images_per_second:
            sampler["ab_percent"] = round(
                100 * (1 - rows["engine"].images_per_second / rows["no-probe"].images_per_second), 2
            )
        return {
            "command": bench_command(cfg),
            "batchlens_version": __version__,
            "model": cfg.model,
            "model_note": model_note,
            "device": str(device),
            "memory_kind": probe.kind,
            "images": len(candidates),
            "source": source,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
            "machine": platform.platform(),
            "repeat": cfg.repeat,
            "naive_limit_bytes": cfg.naive_limit_bytes,
            "rows": [row.__dict__ for row in ordered],
            "sampler": sampler,
        }


def input_difference(model: LoadedModel, candidates: list[Candidate], scratch: Path) -> float:
    """Mean absolute difference between the preprocessed model inputs with and without --fast-decode:
    what the model sees differently (a random model's labels say little about that)."""
    full = BatchPipeline(model, scratch, None).prepare(candidates).items
    fast = BatchPipeline(model, scratch, None, fast_decode=True).prepare(candidates).items
    diffs = [
        float((a.tensor - b.tensor).abs().mean())
        for a, b in zip(full, fast)
        if a.tensor is not None and b.tensor is not None  # (an image that fails to decode has none)
    ]
    return sum(diffs) / len(diffs) if diffs else float("nan")


def bench_command(cfg: BenchConfig) -> str:
    """The command line that reproduces this benchmark."""
    parts = ["batchlens", "bench", "--model", cfg.model]
    if cfg.synthetic:
        parts += ["--synthetic", str(cfg.synthetic), "--size", f"{cfg.size[0]}x{cfg.size[1]}"]
    else:
        parts += ["--input", shlex.quote(str(cfg.input_dir))]
    parts += ["--device", cfg.device, "--batch-size", str(cfg.batch_size), "--prefetch", str(cfg.prefetch)]
    if cfg.precision != "fp32":
        parts += ["--precision", cfg.precision]
    if cfg.naive_limit_bytes != DEFAULT_NAIVE_LIMIT:
        parts += ["--naive-limit", f"{cfg.naive_limit_bytes / 2**20:g}"]
    if cfg.repeat != 1:
        parts += ["--repeat", str(cfg.repeat)]
    if cfg.sampler_check:
        parts.append("--sampler-check")
    if cfg.threads:
        parts += ["--threads", str(cfg.threads)]
    return " ".join(parts)


def tune_batch_size(
    model: LoadedModel, scratch: Path, candidates: list[Candidate], probe: MemoryProbe
) -> tuple[int, str]:
    """What `--batch-size auto` would choose for a run over these images, and how it got there."""
    start = time.perf_counter()
    channels_last = use_channels_last(model.module, model.device, None)  # as the runner sets it up
    pipeline = BatchPipeline(model, scratch / "tuning", None, channels_last=channels_last)
    choice = choose_batch_size(pipeline, candidates, probe)
    seconds = time.perf_counter() - start
    tried = ", ".join(f"{t.batch_size}: {t.images_per_second or 0:.1f}/s" for t in choice.trials)
    return choice.batch_size, f"auto chose {choice.batch_size} in {seconds:.1f} s ({choice.reason}; {tried})"


def _describe_settings(shown: dict, summary: dict) -> str:
    parts = [f"batch {shown['batch_size']}", f"prefetch {shown['prefetch']}"]
    if shown.get("precision") not in (None, "fp32"):
        parts.append(shown["precision"])
    if shown.get("channels_last"):
        parts.append("channels_last")
    if shown.get("fast_decode"):
        parts.append("fast decode")
    auto = summary.get("batch_size_auto")
    if auto:
        parts.append(f"auto: {auto['reason']}")
    return ", ".join(parts)


def measure_sampler(probe: MemoryProbe, engine: Row, calls: int = 500) -> dict:
    """What one probe.sample() costs, and its share of the engine's run (it samples once a batch)."""
    start = time.perf_counter()
    for _ in range(calls):
        probe.sample()
    per_call = (time.perf_counter() - start) / calls
    samples = engine.images  # batch size 1: one sample per image
    percent = 100 * per_call * samples / engine.seconds if engine.seconds else None
    return {"us_per_sample": round(per_call * 1e6, 2), "samples": samples, "percent_of_run": percent}


# -- output ---------------------------------------------------------------------------------------
def format_table(result: dict) -> str:
    kind = "RAM (RSS)" if result["memory_kind"] == "cpu" else f"{result['memory_kind'].upper()} allocated"
    head = (
        f"{result['model']} on {result['device']}, {result['source']}"
        + (f" ({result['model_note']})" if result["model_note"] else "")
        + f"; memory is {kind}"
    )
    columns = [
        "row",
        "images",
        "images/s",
        "vs plain",
        "CPU ms/img",
        "peak mem",
        "mem after",
        "mem/image",
        "notes",
    ]
    lines = []
    for row in result["rows"]:
        lines.append(
            [
                row["label"],
                str(row["images"]),
                f"{row['images_per_second']:.2f}",
                f"{row['ratio']:.2f}x" if row["ratio"] is not None else "",
                f"{1000 * row['cpu_seconds'] / max(1, row['images']):.0f}",
                format_bytes(row["peak_bytes"]),
                format_bytes(row["after_bytes"]),
                format_bytes(row["per_image_bytes"]),
                row["note"],
            ]
        )
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(columns)]
    out = [head, "  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines]
    sampler = result["sampler"]
    if sampler.get("percent_of_run") is not None:
        out.append(
            f"memory sampler: {sampler['us_per_sample']:.1f} µs a sample, "
            f"{sampler['percent_of_run']:.3f} % of the default engine run"
            + (
                f"; with vs without sampling: {sampler['ab_percent']:+.2f} %"
                if "ab_percent" in sampler
                else ""
            )
        )
    return "\n".join(out)
