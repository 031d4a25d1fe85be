"""The loop: RunConfig in, events out.

Scans the folder, drives BatchPipeline batch by batch, writes predictions.jsonl and summary.json,
and turns everything into events. Cancel and pause are flags checked between batches.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from batchlens import __version__
from batchlens.core.errors import BatchLensError
from batchlens.core.files import OutputFolder, write_error
from batchlens.core.inputs.fast_preprocess import fast_decode_helps
from batchlens.core.inputs.header_scan import HeaderScan
from batchlens.core.inputs.images import (
    Candidate,
    ScanStats,
    no_images_sentence,
    scan_images,
    unlistable,
)
from batchlens.core.inputs.prefetch import Prefetcher
from batchlens.core.machine.devices import resolve_device
from batchlens.core.machine.gpu_processes import read_gpu_processes
from batchlens.core.machine.memory import CpuProbe, MemoryProbe, MemorySample, PeakWatch, probe_for
from batchlens.core.models import LoadedModel, load_model
from batchlens.core.outputs.manifest import open_output, refuse_before_load
from batchlens.core.outputs.results import ResultsWriter, read_records
from batchlens.core.outputs.runlock import RunLock
from batchlens.core.run.cache_policy import CachePolicy, empty_device_cache
from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import Event, ImageResult, RunFinished, RunNote, RunStarted
from batchlens.core.run.inference import check_precision
from batchlens.core.run.model_speedups import ModelSpeedups
from batchlens.core.run.pipeline import BatchPipeline, Item, record_line
from batchlens.core.run.precision import precision_entries
from batchlens.core.run.recovery import (
    image_bytes_per_pixel,
    leak_warning,
    leak_watch_for,
    other_processes_warning,
    outsized_image_warning,
)
from batchlens.core.run.run_speed import images_per_second
from batchlens.core.run.sizing import sizer_for_run
from batchlens.core.run.snapshot_recorder import SnapshotRecorder
from batchlens.core.run.threads import UseThreads, decode_thread_setup, plan_threads
from batchlens.core.tasks.base import thumbnail

log = logging.getLogger(__name__)

MEMORY_SNAPSHOT = "memory-snapshot.pickle"  # --memory-snapshot: open it in https://pytorch.org/memory_viz
FAST_DECODE_PROBES = 20  # images whose headers say whether --fast-decode will help


def check_folders(input_dir: Path, output_dir: Path) -> tuple[Path, Path]:
    """Validate the folders of a run; raise BatchLensError with one clear sentence if they are wrong."""
    input_dir = Path(input_dir).expanduser()
    output_dir = Path(output_dir).expanduser()
    if not input_dir.exists():
        raise BatchLensError(f"The input folder {input_dir} does not exist.")
    if not input_dir.is_dir():
        raise BatchLensError(f"The input {input_dir} is a file, not a folder.")
    why = unlistable(input_dir)  # never "0 images" for a folder that could not be read
    if why:
        raise BatchLensError(why)
    if output_dir.resolve() == input_dir.resolve():
        raise BatchLensError(
            f"The output folder {output_dir} is the input folder; choose another one "
            "(BatchLens never writes into the folder of your images)."
        )
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".batchlens-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise BatchLensError(f"Cannot write to the output folder {output_dir}: {reason}.") from None
    return input_dir, output_dir


def run_summary(
    cfg: RunConfig,
    model: LoadedModel,
    *,
    device: str,
    memory_kind: str,
    input_dir: Path,
    output_dir: Path,
    batch_size: int,
    batch_choice,
    channels_last: bool,
    counts: dict,
    candidates: list[Candidate],
    todo: list[Candidate],
    stats: ScanStats,
    cancelled: bool,
    seconds: float,
    peak: int,
    started_at: datetime,
    files: list[str],
    stopped: str | None,
    prefetch: int | None = None,
    batch_note: str | None = None,
    threads: dict | None = None,
    paused_seconds: float = 0.0,
    peak_source: str | None = None,
    **extra,
) -> dict:
    """summary.json: the same keys for a local run and a cluster run (which adds its own `extra`).
    `candidates` are the images the scan found, `todo` those this run set out to process."""
    processed = counts["ok"] + counts["error"]
    # run_speed's one definition: images processed / seconds spent running (pauses left out)
    rate = images_per_second(processed, seconds - paused_seconds)
    return {
        "batchlens_version": __version__,
        "model": model.info.id,
        "task": model.info.task,
        "device": device,
        "memory_kind": memory_kind,
        "input": str(Path(input_dir).resolve()),
        "output": str(Path(output_dir).resolve()),
        "recursive": cfg.recursive,
        "batch_size": batch_size,
        "batch_size_auto": batch_choice.to_json() if batch_choice else None,
        "batch_note": batch_note,  # why the run went at batch 1 when more was asked for
        "prefetch": cfg.prefetch if prefetch is None else prefetch,
        "precision": cfg.precision,
        "channels_last": channels_last,
        "fast_decode": cfg.fast_decode,
        "preprocessing": model.preprocessing.to_json() if model.preprocessing else None,
        "gpu_decode": cfg.gpu_decode,
        "empty_cache": cfg.empty_cache,
        "counts": {
            "ok": counts["ok"],
            "error": counts["error"],
            "skipped": stats.skipped,
            "already_done": len(candidates) - len(todo),
            "not_processed": len(todo) - processed,
        },
        "cancelled": cancelled,
        "seconds": round(seconds, 3),
        "paused_seconds": round(paused_seconds, 3),
        "images_per_second": round(rate, 3) if rate else None,
        "peak_memory_bytes": peak,
        "peak_memory_source": peak_source,
        # (the kernel's ru_maxrss: the whole process's life, model loading and earlier runs included)
        "peak_rss_process_lifetime_bytes": CpuProbe.lifetime_peak_rss() if memory_kind == "cpu" else None,
        "threads": threads,
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": files,
        "stopped": stopped,
        **extra,
    }


def batch_peak(sample: MemorySample) -> int:
    """The peak while the batch ran (the probe's span peak; where the backend keeps none, MPS, the
    memory held after it)."""
    return sample.span_peak if sample.span_peak is not None else sample.allocated


class Costliest:
    """The images whose batches peaked highest (summary.json's `costliest_images`): a bounded heap."""

    def __init__(self, keep: int = 5):
        self.keep = keep
        self._heap: list[tuple[int, str]] = []

    def add(self, peak: int, image: str) -> None:
        if len(self._heap) < self.keep:
            heapq.heappush(self._heap, (peak, image))
        elif peak > self._heap[0][0]:
            heapq.heapreplace(self._heap, (peak, image))

    def top(self) -> list[dict]:
        return [
            {"image": image, "peak_memory_bytes": peak} for peak, image in sorted(self._heap, reverse=True)
        ]


def start_events(
    model: LoadedModel,
    where: str,
    memory_kind: str,
    candidates: list[Candidate],
    todo: list[Candidate],
    stats: ScanStats,
    output_dir: Path,
    fast_decode: bool = False,
) -> Iterator[Event]:
    """The start of a run, local or on a cluster: RunStarted, then a note per folder the scan skipped,
    and one when --fast-decode was asked for but has nothing to do."""
    yield RunStarted(
        model.info.id,
        model.info.task,
        where,
        memory_kind,
        len(todo),
        len(candidates) - len(todo),
        stats.skipped,
        str(output_dir),
    )
    for note in model.notes:  # from the model source, e.g. which of two sidecars it used
        yield RunNote("info", note)
    for dirname in stats.skipped_dirs:
        yield RunNote(
            "warning",
            f"Skipped folder {dirname}: unreadable, or a link back to a folder already scanned.",
        )
    if fast_decode and todo and not fast_decode_helps(model, todo[:FAST_DECODE_PROBES]):
        yield RunNote(
            "info",
            "--fast-decode has nothing to do here: this model's preprocessing does not shrink these "
            "images with a resize BatchLens recognises (it helps classification models that resize "
            "photos down), so every image is decoded and preprocessed as without it.",
        )


def finish_run(
    cfg: RunConfig,
    model: LoadedModel,
    writer: ResultsWriter,
    *,
    cancelled: bool,
    stopped: str | None,
    **fields,
) -> RunFinished:
    """The end of a run, local or on a cluster: the task's end-of-run files (unless cancelled or
    stopped), summary.json, then the RunFinished event, or the sentence that stopped the run."""
    output_dir = writer.output_dir
    try:
        files = []
        if not cancelled and stopped is None:
            writer.check()  # the folder is still the run's: nothing is written anywhere else
            files = [str(p) for p in model.adapter.finish(writer.folder, read_records(writer.path))]
        summary = run_summary(
            cfg, model, output_dir=output_dir, cancelled=cancelled, stopped=stopped, files=files, **fields
        )
        writer.write_summary(summary)  # (checks the folder first)
    except OSError as exc:
        writer.check()  # the folder gone or replaced: that sentence rather than the write's
        raise BatchLensError(write_error(exc, output_dir)) from None
    if stopped:
        raise BatchLensError(stopped)
    return RunFinished(summary, cancelled=cancelled)


class Runner:
    """Runs one RunConfig. Iterate `events()` (on any thread); `cancel()`/`pause()` from another."""

    def __init__(self, config: RunConfig, probe: MemoryProbe | None = None, model: LoadedModel | None = None):
        self.config = config
        self.probe = probe
        self.model = model
        self._cancel = threading.Event()
        self._snapshot_asked = threading.Event()
        self._unpaused = threading.Event()
        self._unpaused.set()
        self.paused_seconds = 0.0

    # -- control, safe to call from any thread -------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()
        self._unpaused.set()

    def pause(self) -> None:
        self._unpaused.clear()

    def record_snapshot(self) -> None:
        """Record the allocator's history from the next batch for the next images, then write it (the
        window's Record snapshot button; a thread-safe flag, read between batches)."""
        self._snapshot_asked.set()

    def resume(self) -> None:
        self._unpaused.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def paused(self) -> bool:
        return not self._unpaused.is_set()

    def _wait_if_paused(self) -> None:
        if self._unpaused.is_set():
            return
        paused_at = time.perf_counter()  # paused time is left out of images/s (core/run/run_speed.py)
        self._wait_until_resumed()
        self.paused_seconds += time.perf_counter() - paused_at

    def _wait_until_resumed(self) -> None:
        while not self._unpaused.wait(timeout=0.1):
            if self._cancel.is_set():
                return

    # -- the run -------------------------------------------------------------------------------
    def events(self) -> Iterator[Event]:
        cfg = self.config
        if cfg.batch_size != "auto" and (not isinstance(cfg.batch_size, int) or cfg.batch_size < 1):
            raise BatchLensError("The batch size must be a whole number of at least 1, or auto.")
        if cfg.prefetch is not None and cfg.prefetch < 0:
            raise BatchLensError("The prefetch depth must be 0 or more batches.")
        if cfg.max_failures is not None and cfg.max_failures < 1:
            raise BatchLensError("--max-failures must be at least 1.")
        cache_policy = CachePolicy.parse(cfg.empty_cache)  # a wrong one: one sentence before anything starts
        if cfg.resume and cfg.overwrite:
            raise BatchLensError("Choose --resume or --overwrite, not both.")
        input_dir, output_dir = check_folders(cfg.input_dir, cfg.output_dir)
        try:  # held for the run: every output write goes through it (core/files.py)
            folder = OutputFolder.open(output_dir)
        except OSError as exc:
            raise BatchLensError(write_error(exc, output_dir)) from None
        with folder, RunLock(output_dir):  # one run at a time in a folder, released however it ends
            yield from self._events(input_dir, folder, cache_policy)

    def _events(self, input_dir: Path, folder: OutputFolder, cache_policy: CachePolicy) -> Iterator[Event]:
        cfg = self.config
        output_dir = folder.path
        refuse_before_load(output_dir, input_dir, cfg.resume, cfg.overwrite)  # a refusal comes at once
        stats = ScanStats()
        candidates = list(scan_images(input_dir, cfg.recursive, stats, exclude=output_dir))
        if not candidates:  # before the model loads, and nothing written: an empty run is no run
            raise BatchLensError(no_images_sentence(input_dir, cfg.recursive, stats, exclude=output_dir))
        device = resolve_device(cfg.device)
        model = self.model or load_model(cfg.model, device, cfg.model_options)
        device = model.device
        check_precision(cfg.precision, device)  # a run-level refusal leaves the output folder as it was
        probe = self.probe or probe_for(device)
        probe.reset_peak()

        writer = open_output(cfg, model, input_dir, folder)
        done = writer.done
        todo = [c for c in candidates if c.rel not in done]
        started_at = datetime.now(UTC)
        t0 = time.perf_counter()
        peak = 0
        counts = {"ok": 0, "error": 0}
        yield from start_events(
            model, str(device), probe.kind, candidates, todo, stats, output_dir, cfg.fast_decode
        )
        if writer.rejected_note():
            yield RunNote("warning", writer.rejected_note())
        headers, start_sample = yield from self._preflight(todo, device, probe, model)

        # Decided now, made after the first batch: the first result comes as soon as a plain loop's
        speedups = ModelSpeedups(model, device, cfg)
        pipeline = BatchPipeline.for_run(model, folder, cfg, False, local=True)
        recorder = SnapshotRecorder(cfg.memory_snapshot, device, output_dir / MEMORY_SNAPSHOT)
        recorder.start()
        pipeline.recovery = pipeline.make_recovery(
            cpu_fallback=cfg.cpu_fallback,
            on_first_oom=recorder.on_first_oom,
        )
        leaks = leak_watch_for(probe.kind)
        stopped = None
        sizer = sizer_for_run(cfg, model, speedups.channels_last, probe, todo)
        if sizer.one_at_a_time and cfg.batch_size != 1:
            yield RunNote("info", f"The model takes one image at a time ({sizer.one_at_a_time}): batch 1.")
        threads = plan_threads(cfg.threads, cfg.prefetch, device, batching=cfg.batch_size != 1)
        decoding = (threads.decode_threads, decode_thread_setup)
        ahead = Prefetcher(pipeline.prepare, sizer.batches(todo), threads.prefetch(cfg.prefetch), *decoding)
        index = 0
        costliest = Costliest()
        compiled = None  # --compile: (sentence, summary entry) once the first forward ran
        running = ExitStack()  # torch's threads for the run, and the watch on memory's peak
        try:
            running.enter_context(UseThreads(threads))
            watch = running.enter_context(PeakWatch(probe))
            while True:
                self._wait_if_paused()
                if self._cancel.is_set():
                    break
                prepared = next(ahead, None)
                if prepared is None:
                    break
                if self._snapshot_asked.is_set():  # the window's Record snapshot button
                    self._snapshot_asked.clear()
                    yield RunNote("info", recorder.begin_now(), None, "memory_snapshot")
                recorder.mark_batch([i.candidate.rel for i in prepared.items])
                probe.start_span()  # the sample after the batch holds its own peak (each line's)
                started, cpu_started = time.perf_counter(), time.process_time()
                shape = next((tuple(i.tensor.shape) for i in prepared.items if i.tensor is not None), None)
                items = pipeline.finish(prepared)
                sample = probe.sample()  # after the batch's device tensors were dropped
                sizer.record(
                    len(items),
                    time.perf_counter() - started,
                    time.process_time() - cpu_started,
                    watch.read(sample),
                    shape,
                    out_of_memory=any(item.recovered for item in items),
                    one_at_a_time=pipeline.one_at_a_time,
                )
                for message in sizer.take_notes():
                    yield RunNote("info", message, sample)
                if saved := recorder.after_batch(len(items)):
                    yield RunNote("info", saved, sample, "memory_snapshot")
                if cache_policy.due(index, index + len(items), sample):
                    empty_device_cache(device)
                peak = max(peak, sample.peak)
                for note in pipeline.recovery.take_notes():
                    yield RunNote(note.level, note.message, sample, note.kind)
                if compiled is None and (compiled := pipeline.compile_report()) is not None:
                    yield RunNote("warning" if compiled[1]["failed"] else "info", compiled[0], sample)
                yield from self._outsized_note(headers, start_sample, model)
                for item in items:
                    index += 1
                    costliest.add(batch_peak(sample), item.candidate.rel)
                    event = self._record(item, index, len(todo), sample, model)
                    line = record_line(event.image, event.status, event.error, event.seconds, event.fields)
                    writer.write_line(line)  # a failed write: one sentence (BatchLensError)
                    counts[event.status] += 1
                    yield event
                writer.check()  # the folder and file still the ones opened, or the run stops here
                headers.start()  # after the first results, not before (it would share their cores)
                # after the first results, not before (once), with no image being prepared
                speedups.apply(pipeline, shape, ahead.settle)
                if probe.kind != "cpu" and not self._crowded_warned:  # other programs may start later
                    yield from self._crowded_note(sample, device)
                rate = leaks.add(index, sample)
                if rate is not None:
                    yield RunNote("warning", leak_warning(rate, leaks.window), sample, "leak")
                if cfg.max_failures and counts["error"] >= cfg.max_failures:
                    stopped = self._too_many_failures(counts, items, output_dir)
                    break
            if stopped is None and not self._cancel.is_set():
                headers.wait()  # a run shorter than the header scan: its note still comes
                yield from self._outsized_note(headers, start_sample, model)
        finally:
            headers.close()
            ahead.close()
            pipeline.close()
            pipeline.writers.close()
            running.close()
            speedups.restore()
            recorder.stop()
            try:
                writer.close(order=[c.rel for c in candidates] if cfg.resume else None)
            except OSError as exc:  # the lines are all there; only their order after a resume is not
                log.warning("Could not sort %s after the resume: %s", writer.path, exc)

        sizer.remember()
        yield finish_run(
            cfg,
            model,
            writer,
            cancelled=self._cancel.is_set(),
            stopped=stopped,
            device=str(device),
            memory_kind=probe.kind,
            input_dir=input_dir,
            batch_size=sizer.size,
            batch_choice=sizer if sizer.auto else None,
            batch_note=sizer.one_at_a_time,
            threads=threads.to_json(),
            prefetch=threads.prefetch(cfg.prefetch),
            channels_last=pipeline.channels_last,
            folded_batch_norm=speedups.folded,
            fast_resize=pipeline.fast_resize,
            counts=counts,
            candidates=candidates,
            todo=todo,
            stats=stats,
            seconds=time.perf_counter() - t0,
            paused_seconds=self.paused_seconds,
            peak=max(peak, watch.peak),
            peak_source=watch.source,
            started_at=started_at,
            compile=compiled[1] if compiled else None,
            **precision_entries(cfg, pipeline),
            decode_processes=pipeline.decode_processes,
            decoded_in_processes=pipeline.decoded_in_processes,
            costliest_images=costliest.top(),
        )

    def _preflight(
        self, todo: list[Candidate], device, probe: MemoryProbe, model: LoadedModel
    ) -> Generator[RunNote, None, tuple[HeaderScan, MemorySample]]:
        """Warnings before the first image: a crowded GPU, a snapshot we cannot take. Returns the header
        scan, whose outsized-image warning comes once it is done (`_outsized_note`), and the memory
        as the run starts."""
        cfg = self.config
        sample = probe.sample()
        self._crowded_warned = False
        if probe.kind != "cpu":
            yield from self._crowded_note(sample, device)
        if note := SnapshotRecorder(cfg.memory_snapshot, device, Path()).unavailable_note():
            yield RunNote("info", note)
        return HeaderScan(todo), sample  # the headers are read beside the first batches

    def _outsized_note(self, scan: HeaderScan, sample, model: LoadedModel) -> Iterator[RunNote]:
        """The outsized-image warning, once the header scan has read the headers."""
        sizes = scan.take()
        if sizes is None:
            return
        free = (
            sample.device_total - sample.device_used
            if sample.device_total is not None and sample.device_used is not None
            else None
        )
        message = outsized_image_warning(sizes, self.config.max_pixels, free, image_bytes_per_pixel(model))
        if message:
            yield RunNote("warning", message, sample, "outsized_image")

    def _crowded_note(self, sample, device) -> Iterator[RunNote]:
        """Warn (once a run) when other processes hold much of the device (NVML's list where it answers,
        the same source as the window's panel of GPU processes)."""
        message = other_processes_warning(sample, device)
        if message and device.type == "cuda":  # NVML is asked only when the cheap estimate says so,
            now = time.monotonic()  # and at most every 10 s (it lists the processes, and names them)
            if now - getattr(self, "_nvml_read_at", -math.inf) < 10:
                return
            self._nvml_read_at = now
            report = read_gpu_processes(device.type, device.index or 0)
            message = other_processes_warning(sample, device, report=report)
        if message:
            self._crowded_warned = True
            yield RunNote("warning", message, sample, "other_processes")

    def _too_many_failures(self, counts: dict, items: list[Item], output_dir: Path) -> str:
        last = next((item.error_message() for item in reversed(items) if not item.ok), None)
        everything = " (every image so far)" if counts["ok"] == 0 else ""
        return (
            f"Stopped after {counts['error']} failed image(s){everything}, the limit set by "
            f"--max-failures {self.config.max_failures}. The last error: {last}. When most images fail, "
            "the model or its settings usually do not fit these images. The results so far are in "
            f"{output_dir / 'predictions.jsonl'}; fix the cause and run again with --resume."
        )

    def _record(self, item: Item, index: int, total: int, sample, model: LoadedModel) -> ImageResult:
        ok = item.ok
        fields = {**item.fields(), "peak_memory_bytes": batch_peak(sample)}
        input_preview = output_preview = None
        if self.config.previews and item.decoded is not None:
            input_preview = thumbnail(item.decoded.image)
            if ok:
                output_preview = model.adapter.preview(item.decoded.image, item.result)
        return ImageResult(
            index=index,
            total=total,
            image=item.candidate.rel,
            status="ok" if ok else "error",
            seconds=item.seconds(),
            error=item.error_message(),
            fields=fields,
            memory=sample,
            input_preview=input_preview,
            output_preview=output_preview,
        )
