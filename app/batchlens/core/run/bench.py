"""`batchlens bench`: the engine side by side with hand-written loops, on the same images and model.

Rows (core/run/bench_loops.py has the loops):
  plain    a plain hand-written loop: open -> preprocess -> inference_mode forward -> .cpu()
  expert   a DataLoader with one worker process per core, batch 16, pinned memory on CUDA
  naive    the origin story: no no_grad, every output kept on the device with its autograd graph;
           bounded: it stops when memory has grown past a limit, and reports how far it got
  exact    the engine with --exact (batch 1, no prefetch, torch's threads): exactly a plain loop
  engine   the engine with its defaults (batch size measured on the run, prefetch, threads chosen)
  tuned    the engine with a fixed --batch-size and --prefetch (when the bench is given a number)
  fast     the defaults with --fast-decode (classification: JPEGs decoded at reduced scale), with
           how far the model's inputs move and how often its top-1 label agrees with the default's
  amp      the defaults under --precision fp16/bf16 (when asked for)
  no-probe the defaults with memory sampling switched off (--sampler-check)

Every row is timed end to end, from its start to its last output on the CPU (the engine's batch-size
measuring, thread start-up and summary included), with the model already loaded and warm. Rounds go round all
the rows in turn (starting at a different row each round), so a busy spell on a shared machine hits every row
alike; each row reports the median over rounds and the range, and its ratios to the plain and the expert loop
are the medians of the ratios within each round (paired). CPU time is the whole process's, all threads, plus
worker processes (the expert loop's). Memory is the device's allocated memory on GPUs (the allocator's own
peak) and the process RSS on the CPU (the kernel's own peak since the row's start on Linux, elsewhere sampled
every 10 ms; the expert loop's worker processes hold their own memory besides, not counted: reading their
proportional share costs ~10 ms a read here, too much to sample during the row). "peak mem" is the highest
over rounds; "peak-start" the median over rounds of the peak less the memory at the row's start (what the row
itself added: on the CPU earlier rows have grown the process by then).
"""

from __future__ import annotations

import os
import platform
import resource
import shlex
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import torch

from batchlens import __version__
from batchlens.core.errors import BatchLensError
from batchlens.core.inputs.fast_preprocess import fast_decode_helps
from batchlens.core.inputs.images import Candidate, scan_images
from batchlens.core.machine.devices import resolve_device
from batchlens.core.machine.memory import MemoryProbe, MemorySample, PeakWatch, probe_for
from batchlens.core.models import LoadedModel
from batchlens.core.run.bench_loops import (
    Outcome,
    engine_run,
    expert_loop,
    load_bench_model,
    make_synthetic_folder,
    naive_loop,
    plain_loop,
)
from batchlens.core.run.bench_table import format_table  # noqa: F401 (bench's result as text)
from batchlens.core.run.config import EXACT_SETTINGS
from batchlens.core.run.model_speedups import fold_batch_norms
from batchlens.core.run.pipeline import BatchPipeline

__all__ = ["BenchConfig", "digest", "format_table", "load_bench_model", "make_synthetic_folder", "run_bench"]

DEFAULT_NAIVE_LIMIT = 1 << 30  # the naive loop stops once memory has grown by 1 GiB


@dataclass
class BenchConfig:
    model: str
    input_dir: Path | None = None  # a folder of images, or:
    synthetic: int = 0  # this many generated JPEG photos of `size`
    size: tuple[int, int] = (1600, 1200)
    device: str = "auto"
    batch_size: int | str | None = None  # a number adds the "tuned" row at that size
    prefetch: int = 2  # for the tuned row
    precision: str = "fp32"  # fp16/bf16 adds an AMP row
    naive_limit_bytes: int = DEFAULT_NAIVE_LIMIT
    repeat: int = 1  # rounds over every row; medians are reported
    sampler_check: bool = False
    threads: int | None = None  # torch intra-op threads for the loops' rows (None: torch's default)


@dataclass
class Row:
    name: str
    label: str
    images: int = 0
    images_digest: str = ""
    seconds: float = 0.0  # median over rounds, end to end
    cpu_seconds: float = 0.0  # median CPU time of the process (all threads) and its worker processes
    images_per_second: float = 0.0  # median
    images_per_second_range: tuple[float, float] = (0.0, 0.0)
    first_result_s: float | None = None  # median seconds from the row's start to its first output
    ratio: float | None = None  # median over rounds of images/s over the plain loop's, same round
    ratio_expert: float | None = None  # the same against the expert loop
    peak_bytes: int = 0  # the highest over rounds
    peak_growth_bytes: int = 0  # median over rounds of the peak less the row's starting memory
    after_bytes: int = 0
    per_image_bytes: float = 0.0  # memory growth over the row divided by its images
    note: str = ""
    settings: dict = field(default_factory=dict)
    rounds: list[dict] = field(default_factory=list)  # each round's figures


def digest(names: list[str]) -> str:
    """A fingerprint of which images a row processed, to check every row saw the same ones."""
    import hashlib

    return hashlib.sha1("\n".join(sorted(names)).encode()).hexdigest()[:16]


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


def _cpu_seconds() -> float:
    """This process's CPU time and that of its finished children (the expert loop's workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _timed_round(name: str, probe: MemoryProbe, body: Callable[[], Outcome]) -> dict:
    """Run `body` once and measure it: seconds, CPU seconds, time to first result, memory."""
    start = before = _settle(probe).allocated
    with PeakWatch(probe) as watch:
        t0, cpu0 = time.perf_counter(), _cpu_seconds()
        out = body()
        seconds = time.perf_counter() - t0
        cpu_seconds = _cpu_seconds() - cpu0
    after = out.after if out.after is not None else probe.sample().allocated
    before = out.before if out.before is not None else before
    return {
        "outcome": out,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "images_per_second": len(out.done) / seconds if seconds > 0 else 0.0,
        "first_result_s": out.first_result_s,
        "peak_bytes": watch.peak,
        # The peak less the memory at the row's start: what the row itself added. On the CPU the peak is
        # the whole process's RSS, which earlier rows (allocator caches, arenas) have grown by then.
        "start_bytes": start,
        "after_bytes": after,
        "per_image_bytes": (after - before) / max(1, len(out.done)),
        "load_average": _load(),
    }


def _load() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _row(name: str, label: str, rounds: list[dict]) -> Row:
    last = rounds[-1]["outcome"]
    rates = [r["images_per_second"] for r in rounds]
    return Row(
        name,
        label,
        images=len(last.done),
        images_digest=digest(last.done),
        seconds=round(_median([r["seconds"] for r in rounds]), 4),
        cpu_seconds=round(_median([r["cpu_seconds"] for r in rounds]), 4),
        images_per_second=_median(rates),
        images_per_second_range=(min(rates), max(rates)),
        first_result_s=_median([r["first_result_s"] for r in rounds]),
        peak_bytes=max(r["peak_bytes"] for r in rounds),
        peak_growth_bytes=int(_median([r["peak_bytes"] - r["start_bytes"] for r in rounds])),
        after_bytes=rounds[-1]["after_bytes"],
        per_image_bytes=rounds[-1]["per_image_bytes"],
        note=last.note,
        settings=dict(last.settings),
        rounds=[{k: v for k, v in r.items() if k != "outcome"} for r in rounds],
    )


def _say_what_the_loops_leave_out(rows: list[Row], engine: Outcome) -> None:
    """A task whose results are files (image-to-image, masks): the engine rows encode and write a PNG
    per image, the loops only compute the output; their rows say so (docs/performance.md)."""
    if not engine.files_written:
        return
    said = f"writes no output files (the engine rows write {engine.files_written} PNGs, atomically)"
    for row in rows:
        if row.name in ("plain", "expert", "naive"):
            row.note = f"{row.note}; {said}" if row.note else said


def _paired_ratio(rounds: list[dict], base: list[dict]) -> float | None:
    pairs = zip(rounds, base)
    ratios = [r["images_per_second"] / b["images_per_second"] for r, b in pairs if b["images_per_second"]]
    return round(statistics.median(ratios), 3) if ratios else None


def _bench_images(cfg: BenchConfig, scratch: Path, log: Callable[[str], None]) -> tuple[Path, str, list]:
    """The folder the rows run on (given, or --synthetic's JPEGs in `scratch`), its words, its images."""
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
    return folder, source, candidates


def _timed_rows(
    cfg: BenchConfig, model: LoadedModel, folder: Path, candidates: list, scratch: Path, probe
) -> list:
    """The rows timed each round: (name, label, body), the loops first, then the engine's settings."""
    runs = iter(range(1_000_000))

    def engine_row(name: str, label: str, run_probe: MemoryProbe | None = None, **settings):
        def body() -> Outcome:
            out = scratch / f"out-{name}-{next(runs)}"
            return engine_run(model, folder, out, cfg.device, run_probe or probe, **settings)

        return name, label, body

    timed = [
        ("plain", "plain loop", lambda: plain_loop(model, candidates)),
        ("expert", "expert loop (DataLoader)", lambda: expert_loop(model, candidates)),
        engine_row("exact", "BatchLens --exact", **EXACT_SETTINGS),
        engine_row("engine", "BatchLens, defaults"),
    ]
    if cfg.sampler_check:
        timed.append(engine_row("no-probe", "BatchLens, no sampler", run_probe=_NoProbe(probe.kind)))
    if isinstance(cfg.batch_size, int):
        tuned = {"batch_size": cfg.batch_size, "prefetch": cfg.prefetch}
        label = f"BatchLens, batch {cfg.batch_size} prefetch {cfg.prefetch}"
        timed.append(engine_row("tuned", label, **tuned))
    if fast_decode_helps(model, candidates[:1]):
        timed.append(engine_row("fast", "BatchLens, fast decode", fast_decode=True))
    if cfg.precision != "fp32":
        timed.append(engine_row("amp", f"BatchLens, {cfg.precision}", precision=cfg.precision))
    return timed


def _ordered_rows(rows: dict, naive, rounds: dict) -> list:
    """The rows in the table's order, each with its speed against the plain and the expert loop."""
    order = ("plain", "expert", "exact", "engine", "no-probe", "tuned", "fast", "amp")
    ordered = [rows["plain"], rows["expert"], naive] + [rows[k] for k in order[2:] if k in rows]
    for row in ordered[:2] + ordered[3:]:
        row.ratio = _paired_ratio(rounds[row.name], rounds["plain"])
        row.ratio_expert = _paired_ratio(rounds[row.name], rounds["expert"])
    # The naive loop runs once, after the rounds: against the loops' medians
    naive.ratio = naive.images_per_second / rows["plain"].images_per_second
    naive.ratio_expert = naive.images_per_second / rows["expert"].images_per_second
    return ordered


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = lambda _: None) -> dict:
    """Run every row and return the result (see `format_table`), ready for json.dump."""
    if (cfg.input_dir is None) == (not cfg.synthetic):
        raise BatchLensError("Give either --input DIR or --synthetic N (not both).")
    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="batchlens-bench-")))
        folder, source, candidates = _bench_images(cfg, scratch, log)
        model, model_note = load_bench_model(cfg.model, device)
        probe = probe_for(device)
        # Warm up kernels and allocators once, so no row pays for first-call set-up.
        plain_loop(model, candidates[:1])
        # The engine rows leave torch's threads as they found them; the loops use what is set now.
        loop_threads = torch.get_num_threads()
        timed = _timed_rows(cfg, model, folder, candidates, scratch, probe)
        rounds: dict[str, list[dict]] = {name: [] for name, _, _ in timed}
        total = max(1, cfg.repeat)
        for round_ in range(total):
            shift = round_ % len(timed)
            for name, label, body in timed[shift:] + timed[:shift]:
                log(f"{label} (round {round_ + 1} of {total})")
                rounds[name].append(_timed_round(name, probe, body))
        rows = {name: _row(name, label, rounds[name]) for name, label, _ in timed}
        if "fast" in rows:
            _compare_fast_decode(rows, rounds, model, candidates, scratch)
        # The naive loop runs last, so the memory it strands cannot weigh on the other rows.
        log("naive loop (origin story)")
        naive_round = _timed_round(
            "naive", probe, lambda: naive_loop(model, candidates, probe, cfg.naive_limit_bytes)
        )
        naive = _row("naive", "naive loop (no no_grad, kept)", [naive_round])
        _settle(probe)

        ordered = _ordered_rows(rows, naive, rounds)
        _say_what_the_loops_leave_out(ordered, rounds["engine"][-1]["outcome"])
        log("forward-only ceiling")
        ceiling = forward_ceiling(model, candidates, rows["engine"].settings, scratch)

        sampler = measure_sampler(probe, rows["exact"])
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
            "torch_threads": loop_threads,
            "cpu_count": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
            "machine": platform.platform(),
            "repeat": total,
            "naive_limit_bytes": cfg.naive_limit_bytes,
            "rows": [row.__dict__ for row in ordered],
            "sampler": sampler,
            "ceiling": ceiling,
        }


def forward_ceiling(model: LoadedModel, candidates: list[Candidate], settings: dict, scratch: Path) -> dict:
    """What no pipeline can beat on this machine: the model's forward alone, on images decoded and
    preprocessed beforehand, at the batch size, layout and threads the defaults row settled on."""
    batch_size = max(1, int(settings.get("batch_size") or 1))
    threads = (settings.get("threads") or {}).get("torch") or torch.get_num_threads()
    items = BatchPipeline(model, scratch, None).prepare(candidates[:batch_size]).items
    tensors = [item.tensor for item in items if item.tensor is not None]
    if not tensors or model.takes_list or any(t.shape != tensors[0].shape for t in tensors):
        return {}
    batch = torch.stack(tensors)
    layout = torch.channels_last if settings.get("channels_last") else torch.contiguous_format
    folded = settings.get("folded_batch_norm") is True and fold_batch_norms(model.module)
    module = folded or model.module  # the model as the defaults row ran it
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        module.to(memory_format=layout)
        batch = batch.contiguous(memory_format=layout).to(model.device)
        with torch.inference_mode():
            module(batch)  # warm-up
            count, start = 0, time.perf_counter()
            while count < 5 or time.perf_counter() - start < 3.0:
                module(batch)
                count += 1
            if model.device.type == "cuda":
                torch.cuda.synchronize(model.device)
            seconds = time.perf_counter() - start
    finally:
        model.module.to(memory_format=torch.contiguous_format)
        torch.set_num_threads(before)
    rate = count * len(tensors) / seconds
    return {
        "batch_size": len(tensors),
        "threads": threads,
        "channels_last": layout is torch.channels_last,
        "folded_batch_norm": bool(folded),
        "images_per_second": round(rate, 2),
        "load_average": _load(),
    }


def _compare_fast_decode(rows: dict, rounds: dict, model: LoadedModel, candidates, scratch: Path) -> None:
    top1 = {name: rounds[name][-1]["outcome"].top1 for name in ("engine", "fast")}
    if not top1["engine"]:
        return
    same = sum(top1["fast"].get(image) == index for image, index in top1["engine"].items())
    difference = input_difference(model, candidates[:8], scratch)
    rows["fast"].note += (
        f"; model input vs full decode: mean |diff| {difference:.4f}; "
        f"top-1 as with full decode on {same} of {len(top1['engine'])} images"
    )
    rows["fast"].settings["top1_agreement"] = [same, len(top1["engine"])]
    rows["fast"].settings["input_mean_abs_diff"] = round(difference, 5)


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
    parts += ["--device", cfg.device]
    if cfg.batch_size not in (None, "auto"):
        parts += ["--batch-size", str(cfg.batch_size), "--prefetch", str(cfg.prefetch)]
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


def measure_sampler(probe: MemoryProbe, exact: Row, calls: int = 500) -> dict:
    """What one probe.sample() costs, and its share of the --exact run: one sample per image, plus
    on the CPU the peak watch's 100 a second."""
    start = time.perf_counter()
    for _ in range(calls):
        probe.sample()
    per_call = (time.perf_counter() - start) / calls
    samples = exact.images + (int(exact.seconds * 100) if probe.kind == "cpu" else 0)
    percent = 100 * per_call * samples / exact.seconds if exact.seconds else None
    return {"us_per_sample": round(per_call * 1e6, 2), "samples": samples, "percent_of_run": percent}
