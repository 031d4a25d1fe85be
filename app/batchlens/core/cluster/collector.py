"""The driver's bookkeeping for a cluster run, whatever backend ran the workers: rows in (the plain
dicts of core/cluster/worker.py, in whatever order they finish), and out the same events, the same
predictions.jsonl in scan order, the --max-failures stop and the same summary.json as a local run."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator

from PIL import Image

from batchlens.core.inputs.images import Candidate
from batchlens.core.machine.memory import MemorySample
from batchlens.core.models import LoadedModel
from batchlens.core.run.batch_item import record_line
from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import Event, ImageResult, RunFinished, RunNote
from batchlens.core.run.run_record import RunRecord, finish_run


class ResultCollector:
    """Turns worker rows into events and lines; `finish` writes the summary."""

    def __init__(self, config: RunConfig, writer, candidates: list[Candidate], todo: list[Candidate]):
        self.config = config
        self.writer = writer
        self.candidates = candidates
        self.todo = todo
        self.position = {c.rel: i for i, c in enumerate(todo)}
        self.pending: dict[int, dict] = {}  # lines that finished ahead of an earlier image
        self.next_line = 0
        self.counts = {"ok": 0, "error": 0}
        self.peak = 0  # the largest any worker reported
        self.hosts: set[str] = set()
        self.stopped: str | None = None  # the sentence, once --max-failures stopped the run

    def add(self, row: dict) -> Iterator[Event]:
        """The notes a worker sent with this row, then the image's event."""
        event = row_event(row, sum(self.counts.values()) + 1, len(self.todo))
        for level, message in json.loads(row["notes"]):  # out-of-memory recovery on a worker
            yield RunNote(level, f"{row['worker']}: {message}", event.memory)
        self.pending[self.position[event.image]] = record_line(
            event.image, event.status, event.error, event.seconds, event.fields
        )
        while self.next_line in self.pending:  # predictions.jsonl stays in scan order
            self.writer.write_line(self.pending.pop(self.next_line))
            self.next_line += 1
        self.writer.check()  # the output folder and predictions.jsonl still the run's (core/files.py)
        self.counts[event.status] += 1
        self.peak = max(self.peak, event.memory.peak)
        self.hosts.add(str(row["worker"]).split(" (")[0])
        yield event
        cfg = self.config
        if cfg.max_failures and self.counts["error"] >= cfg.max_failures:
            self.stopped = (
                f"Stopped after {self.counts['error']} failed image(s), the limit set by --max-failures "
                f"{cfg.max_failures}. The last error: {event.error}. The results so far are in "
                f"{self.writer.path}; fix the cause and run again with --resume."
            )

    def close(self) -> None:
        """However the run ended: keep what finished (a cancelled run too), still in scan order."""
        for line in sorted(self.pending):
            self.writer.write_line(self.pending[line])
        self.pending.clear()
        self.writer.close(order=[c.rel for c in self.candidates] if self.config.resume else None)

    def finish(
        self, model: LoadedModel, record: RunRecord, *, cancelled: bool, cluster: dict, retries: dict
    ) -> RunFinished:
        """summary.json through the local run's `finish_run`, plus where it ran and what was retried."""
        record.counts = self.counts
        record.peak = self.peak
        record.peak_source = (
            "the highest any worker reported: its allocator's peak on a GPU, its RSS after each batch "
            "on the CPU"
        )
        record.prefetch = 0  # workers decode in their loop: no prefetch on a cluster
        record.extra.update(cluster={**cluster, "nodes": sorted(self.hosts)}, retries=retries)
        return finish_run(self.config, model, self.writer, record, cancelled=cancelled, stopped=self.stopped)


def row_event(row: dict, index: int, total: int) -> ImageResult:
    return ImageResult(
        index=index,
        total=total,
        image=str(row["image"]),
        status=str(row["status"]),
        seconds=float(row["seconds"]),
        error=str(row["error"]) or None,
        fields=json.loads(row["fields"]),
        memory=MemorySample(
            time.monotonic(), int(row["mem_allocated"]), int(row["mem_reserved"]), int(row["mem_peak"])
        ),
        input_preview=_image(row["input_preview"]),
        output_preview=_image(row["output_preview"]),
    )


def _image(data) -> Image.Image | None:
    if data is None or len(data) == 0:
        return None
    image = Image.open(io.BytesIO(bytes(data)), formats=["PNG"])  # the worker sends PNGs, only
    image.load()
    return image
