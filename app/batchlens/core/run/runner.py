"""The loop: RunConfig in, events out.

Scans the folder, drives BatchPipeline batch by batch, writes predictions.jsonl and summary.json,
and turns everything into events. Cancel and pause are flags checked between batches.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from batchlens.core.errors import BatchLensError
from batchlens.core.files import OutputFolder, write_error
from batchlens.core.inputs.images import ScanStats, no_images_sentence, scan_images, unlistable
from batchlens.core.inputs.prefetch import Prefetcher
from batchlens.core.machine.devices import resolve_device
from batchlens.core.machine.memory import MemoryProbe, PeakWatch, probe_for
from batchlens.core.models import LoadedModel, load_model
from batchlens.core.outputs.manifest import open_output, refuse_before_load
from batchlens.core.outputs.results import ResultsWriter
from batchlens.core.outputs.runlock import RunLock
from batchlens.core.run.autobatch import BatchSizer
from batchlens.core.run.batch_item import Item, Prepared, record_line
from batchlens.core.run.cache_policy import CachePolicy, empty_device_cache
from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import Event, ImageResult, RunNote
from batchlens.core.run.inference import check_precision
from batchlens.core.run.model_speedups import ModelSpeedups
from batchlens.core.run.pipeline import BatchPipeline
from batchlens.core.run.precision import precision_entries
from batchlens.core.run.run_record import Costliest, RunRecord, batch_peak, finish_run, start_events
from batchlens.core.run.run_watch import RunWatch, too_many_failures
from batchlens.core.run.sizing import sizer_for_run
from batchlens.core.run.snapshot_recorder import SnapshotRecorder
from batchlens.core.run.threads import UseThreads, decode_thread_setup, plan_threads
from batchlens.core.tasks.base import thumbnail

__all__ = ["MEMORY_SNAPSHOT", "RunConfig", "Runner", "check_folders"]

log = logging.getLogger(__name__)

MEMORY_SNAPSHOT = "memory-snapshot.pickle"  # --memory-snapshot: open it in https://pytorch.org/memory_viz


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
        todo = [c for c in candidates if c.rel not in writer.done]
        record = RunRecord(input_dir, candidates, todo, stats, device=str(device), memory_kind=probe.kind)
        t0 = time.perf_counter()
        yield from start_events(model, record, output_dir, cfg.fast_decode)
        if writer.rejected_note():
            yield RunNote("warning", writer.rejected_note())
        watch = RunWatch(cfg, model, device, probe, todo)
        yield from watch.preflight()
        stopped = yield from self._run(model, probe, folder, writer, record, watch, cache_policy)
        record.seconds = time.perf_counter() - t0
        record.paused_seconds = self.paused_seconds
        yield finish_run(cfg, model, writer, record, cancelled=self._cancel.is_set(), stopped=stopped)

    def _run(
        self,
        model: LoadedModel,
        probe: MemoryProbe,
        folder: OutputFolder,
        writer: ResultsWriter,
        record: RunRecord,
        watch: RunWatch,
        cache_policy: CachePolicy,
    ) -> Generator[Event, None, str | None]:
        """The batches, one after another, until the last, a cancel or --max-failures (whose sentence
        it returns); whatever ends it, every thread is stopped and predictions.jsonl closed."""
        cfg, device = self.config, model.device
        # Decided now, made after the first batch: the first result comes as soon as a plain loop's
        speedups = ModelSpeedups(model, device, cfg)
        recorder = SnapshotRecorder(cfg.memory_snapshot, device, folder.path / MEMORY_SNAPSHOT)
        pipeline = BatchPipeline.for_run(
            model, folder, cfg, False, on_first_oom=recorder.on_first_oom, local=True
        )
        sizer = sizer_for_run(cfg, model, speedups.channels_last, probe, record.todo)
        if sizer.one_at_a_time and cfg.batch_size != 1:
            yield RunNote("info", f"The model takes one image at a time ({sizer.one_at_a_time}): batch 1.")
        threads = plan_threads(cfg.threads, cfg.prefetch, device, batching=cfg.batch_size != 1)
        record.threads, record.prefetch = threads.to_json(), threads.prefetch(cfg.prefetch)
        decoding = (threads.decode_threads, decode_thread_setup)
        ahead = Prefetcher(pipeline.prepare, sizer.batches(record.todo), record.prefetch, *decoding)
        running = ExitStack()  # torch's threads for the run, and the watch on memory's peak
        stopped = None
        recorder.start()
        try:
            running.enter_context(UseThreads(threads))
            peaks = running.enter_context(PeakWatch(probe))
            parts = _RunParts(model, probe, peaks, writer, record, watch, pipeline, sizer, ahead, speedups)
            parts.cache_policy, parts.recorder = cache_policy, recorder
            while True:
                self._wait_if_paused()
                if self._cancel.is_set():
                    break
                prepared = next(ahead, None)
                if prepared is None:
                    break
                stopped = yield from self._batch(parts, prepared)
                if stopped:
                    break
            if stopped is None and not self._cancel.is_set():
                yield from watch.at_end()
        finally:
            watch.headers.close()
            ahead.close()
            pipeline.close()
            pipeline.writers.close()
            running.close()
            speedups.restore()
            recorder.stop()
            try:
                writer.close(order=[c.rel for c in record.candidates] if cfg.resume else None)
            except OSError as exc:  # the lines are all there; only their order after a resume is not
                log.warning("Could not sort %s after the resume: %s", writer.path, exc)

        sizer.remember()
        record.batch_size, record.batch_note = sizer.size, sizer.one_at_a_time
        record.batch_choice = sizer if sizer.auto else None
        record.channels_last = pipeline.channels_last
        record.peak, record.peak_source = max(record.peak, peaks.peak), peaks.source
        record.extra.update(
            folded_batch_norm=speedups.folded,
            fast_resize=pipeline.fast_resize,
            compile=watch.compiled[1] if watch.compiled else None,
            **precision_entries(cfg, pipeline),
            decode_processes=pipeline.decode_processes,
            decoded_in_processes=pipeline.decoded_in_processes,
            costliest_images=parts.costliest.top(),
        )
        return stopped

    def _batch(self, parts: _RunParts, prepared: Prepared) -> Generator[Event, None, str | None]:
        """One prepared batch through the model, its notes, its lines and events; returns the sentence
        that stops the run when --max-failures is reached."""
        p, record = parts, parts.record
        if self._snapshot_asked.is_set():  # the window's Record snapshot button
            self._snapshot_asked.clear()
            yield RunNote("info", p.recorder.begin_now(), None, "memory_snapshot")
        p.recorder.mark_batch([i.candidate.rel for i in prepared.items])
        p.probe.start_span()  # the sample after the batch holds its own peak (each line's)
        started, cpu_started = time.perf_counter(), time.process_time()
        shape = next((tuple(i.tensor.shape) for i in prepared.items if i.tensor is not None), None)
        items = p.pipeline.finish(prepared)
        sample = p.probe.sample()  # after the batch's device tensors were dropped
        p.sizer.record(
            len(items),
            time.perf_counter() - started,
            time.process_time() - cpu_started,
            p.peaks.read(sample),
            shape,
            out_of_memory=any(item.recovered for item in items),
            one_at_a_time=p.pipeline.one_at_a_time,
        )
        if saved := p.recorder.after_batch(len(items)):
            yield RunNote("info", saved, sample, "memory_snapshot")
        done = sum(record.counts.values())
        if p.cache_policy.due(done, done + len(items), sample):
            empty_device_cache(p.model.device)
        record.peak = max(record.peak, sample.peak)
        yield from p.watch.after_batch(sample, p.pipeline, p.sizer)
        for item in items:
            p.costliest.add(batch_peak(sample), item.candidate.rel)
            event = self._record(item, sum(record.counts.values()) + 1, len(record.todo), sample, p.model)
            line = record_line(event.image, event.status, event.error, event.seconds, event.fields)
            p.writer.write_line(line)  # a failed write: one sentence (BatchLensError)
            record.counts[event.status] += 1
            yield event
        p.writer.check()  # the folder and file still the ones opened, or the run stops here
        p.watch.headers.start()  # after the first results, not before (it would share their cores)
        # after the first results, not before (once), with no image being prepared
        p.speedups.apply(p.pipeline, shape, p.ahead.settle)
        yield from p.watch.after_lines(sum(record.counts.values()), sample)
        return too_many_failures(self.config, record.counts, items, p.writer.output_dir)

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


@dataclass
class _RunParts:
    """What one run's batches go through, made once by `Runner._run`."""

    model: LoadedModel
    probe: MemoryProbe
    peaks: PeakWatch
    writer: ResultsWriter
    record: RunRecord
    watch: RunWatch
    pipeline: BatchPipeline
    sizer: BatchSizer
    ahead: Prefetcher
    speedups: ModelSpeedups
    cache_policy: CachePolicy = field(default_factory=CachePolicy)  # --empty-cache
    recorder: SnapshotRecorder | None = None  # --memory-snapshot and the window's Record snapshot
    costliest: Costliest = field(default_factory=Costliest)  # summary.json's costliest_images
