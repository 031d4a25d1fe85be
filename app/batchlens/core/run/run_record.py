"""A run's start and end, local or on a cluster: the first events, and summary.json from the facts
gathered as the run went (`RunRecord`)."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from batchlens import __version__
from batchlens.core.errors import BatchLensError
from batchlens.core.files import write_error
from batchlens.core.inputs.fast_preprocess import fast_decode_helps
from batchlens.core.inputs.images import Candidate, ScanStats
from batchlens.core.machine.memory import CpuProbe, MemorySample
from batchlens.core.models import LoadedModel
from batchlens.core.outputs.results import ResultsWriter, read_records
from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import Event, RunFinished, RunNote, RunStarted
from batchlens.core.run.run_speed import images_per_second

FAST_DECODE_PROBES = 20  # images whose headers say whether --fast-decode will help


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


@dataclass
class RunRecord:
    """What summary.json says of a run, filled in as the run goes. `candidates` are the images the
    scan found, `todo` those this run set out to process."""

    input_dir: Path
    candidates: list[Candidate]
    todo: list[Candidate]
    stats: ScanStats
    device: str = ""
    memory_kind: str = ""
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    counts: dict = field(default_factory=lambda: {"ok": 0, "error": 0})
    batch_size: int = 1
    batch_choice: object = None  # --batch-size auto: the sizer (its `to_json()`), else None
    batch_note: str | None = None  # why the run went at batch 1 when more was asked for
    channels_last: bool = False
    prefetch: int | None = None  # None: the one asked for
    threads: dict | None = None
    seconds: float = 0.0
    paused_seconds: float = 0.0
    peak: int = 0
    peak_source: str | None = None
    extra: dict = field(default_factory=dict)  # what one kind of run adds (a cluster's workers...)


def run_summary(
    cfg: RunConfig,
    model: LoadedModel,
    record: RunRecord,
    *,
    output_dir: Path,
    cancelled: bool,
    stopped: str | None,
    files: list[str],
) -> dict:
    """summary.json: the same keys for a local run and a cluster run (which adds its own `extra`)."""
    r = record
    processed = r.counts["ok"] + r.counts["error"]
    # run_speed's one definition: images processed / seconds spent running (pauses left out)
    rate = images_per_second(processed, r.seconds - r.paused_seconds)
    return {
        "batchlens_version": __version__,
        "model": model.info.id,
        "task": model.info.task,
        "device": r.device,
        "memory_kind": r.memory_kind,
        "input": str(Path(r.input_dir).resolve()),
        "output": str(Path(output_dir).resolve()),
        "recursive": cfg.recursive,
        "batch_size": r.batch_size,
        "batch_size_auto": r.batch_choice.to_json() if r.batch_choice else None,
        "batch_note": r.batch_note,
        "prefetch": cfg.prefetch if r.prefetch is None else r.prefetch,
        "precision": cfg.precision,
        "channels_last": r.channels_last,
        "fast_decode": cfg.fast_decode,
        "preprocessing": model.preprocessing.to_json() if model.preprocessing else None,
        "gpu_decode": cfg.gpu_decode,
        "empty_cache": cfg.empty_cache,
        "counts": {
            "ok": r.counts["ok"],
            "error": r.counts["error"],
            "skipped": r.stats.skipped,
            "already_done": len(r.candidates) - len(r.todo),
            "not_processed": len(r.todo) - processed,
        },
        "cancelled": cancelled,
        "seconds": round(r.seconds, 3),
        "paused_seconds": round(r.paused_seconds, 3),
        "images_per_second": round(rate, 3) if rate else None,
        "peak_memory_bytes": r.peak,
        "peak_memory_source": r.peak_source,
        # (the kernel's ru_maxrss: the whole process's life, model loading and earlier runs included)
        "peak_rss_process_lifetime_bytes": CpuProbe.lifetime_peak_rss() if r.memory_kind == "cpu" else None,
        "threads": r.threads,
        "started_at": r.started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": files,
        "stopped": stopped,
        **r.extra,
    }


def start_events(
    model: LoadedModel, record: RunRecord, output_dir: Path, fast_decode: bool = False
) -> Iterator[Event]:
    """The start of a run, local or on a cluster: RunStarted, then a note per folder the scan skipped,
    and one when --fast-decode was asked for but has nothing to do."""
    todo, stats = record.todo, record.stats
    yield RunStarted(
        model.info.id,
        model.info.task,
        record.device,
        record.memory_kind,
        len(todo),
        len(record.candidates) - len(todo),
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
    record: RunRecord,
    *,
    cancelled: bool,
    stopped: str | None,
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
            cfg, model, record, output_dir=output_dir, cancelled=cancelled, stopped=stopped, files=files
        )
        writer.write_summary(summary)  # (checks the folder first)
    except OSError as exc:
        writer.check()  # the folder gone or replaced: that sentence rather than the write's
        raise BatchLensError(write_error(exc, output_dir)) from None
    if stopped:
        raise BatchLensError(stopped)
    return RunFinished(summary, cancelled=cancelled)
