"""A cluster worker's side, whatever schedules it: load the model once, run batches through the very
code path of a local run (`BatchPipeline.process`), and hand back plain rows the driver turns into
events (core/cluster/collector.py). A backend subclasses `BatchWorker` to say how the RetryLedger is
reached and how batches arrive (core/cluster/ray_backend.py: a Ray Data callable class)."""

from __future__ import annotations

import io
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from batchlens.core.cluster.ledger import DEATHS_BEFORE_GIVING_UP
from batchlens.core.errors import BatchLensError
from batchlens.core.inputs.images import Candidate
from batchlens.core.machine.devices import resolve_device
from batchlens.core.machine.memory import MemoryProbe, probe_for
from batchlens.core.models import LoadedModel
from batchlens.core.run.autobatch import BatchChoice, choose_batch_size
from batchlens.core.run.batch_item import Item
from batchlens.core.run.config import RunConfig
from batchlens.core.run.inference import check_precision, use_channels_last
from batchlens.core.run.pipeline import BatchPipeline
from batchlens.core.run.runner import check_folders
from batchlens.core.tasks.base import thumbnail


def worker_pipeline(
    config: RunConfig, device: str, loader: Callable[..., LoadedModel]
) -> tuple[BatchPipeline, MemoryProbe]:
    """On a worker: load the model and set up the pipeline as `Runner` does for a local run."""
    # Every node must see the folders at the same paths; say so plainly where one does not.
    if not Path(config.input_dir).is_dir():
        raise BatchLensError(f"The input folder {config.input_dir} is not visible on {socket.gethostname()}.")
    input_dir, output_dir = check_folders(config.input_dir, config.output_dir)
    model = loader(config.model, resolve_device(device), config.model_options)
    check_precision(config.precision, model.device)
    batching = config.batch_size != 1  # the local runner's rule, so both lay out tensors alike
    channels_last = use_channels_last(model.module, model.device, config.channels_last, batching)
    pipeline = BatchPipeline.for_run(model, output_dir, config, channels_last)
    return pipeline, probe_for(model.device)


def tune_batch_size(config: RunConfig, device: str, loader, todo: list[Candidate]) -> BatchChoice:
    """`--batch-size auto` on a cluster: measured once, on a worker like the ones that will run."""
    pipeline, probe = worker_pipeline(config, device, loader)
    try:
        return choose_batch_size(pipeline, todo, probe)
    finally:
        pipeline.writers.close()  # no writer thread outlives the measurement


class BatchWorker:
    """The model, loaded once per worker, and the loop over one batch with its retry rules."""

    def __init__(self, config: RunConfig, device: str, loader: Callable[..., LoadedModel]):
        self.pipeline, self.probe = worker_pipeline(config, device, loader)
        self.model = self.pipeline.model
        self.previews = config.previews
        self.where = f"{socket.gethostname()} (pid {os.getpid()}, {self.model.device})"

    def ask_ledger(self, method: str, *args):
        """Call `method` on the run's RetryLedger and return its answer (the backend knows where it is)."""
        raise NotImplementedError

    def run_batch(self, candidates: list[Candidate]) -> list[dict]:
        """One row per image, in the batch's order; after a death, one image at a time."""
        key = candidates[0].rel
        attempt, deaths = self.ask_ledger("begin", key, [c.rel for c in candidates])
        rows = []
        if attempt == 1:
            rows = self._process(candidates)
        else:  # after a death, one image at a time, so the one that kills the worker is found
            for candidate in candidates:
                if deaths.get(candidate.rel, 0) >= DEATHS_BEFORE_GIVING_UP:
                    rows.append(died_row(candidate, deaths[candidate.rel]))
                    continue
                self.ask_ledger("holding", key, [candidate.rel])
                rows += self._process([candidate])
        self.ask_ledger("end", key)
        sample = self.probe.sample()  # after the batch's device tensors were dropped
        notes = [[note.level, note.message] for note in self.pipeline.recovery.take_notes()]
        for row in rows:
            row["notes"] = json.dumps(notes if row is rows[0] else [])
            row.update(
                worker=self.where,
                mem_allocated=sample.allocated,
                mem_reserved=sample.reserved,
                mem_peak=sample.peak,
            )
        return rows

    def _process(self, candidates: list[Candidate]) -> list[dict]:
        try:
            return [self._row(item) for item in self.pipeline.process(candidates)]
        except Exception as exc:
            if len(candidates) > 1:  # find the image it fails on; the others still get results
                return [row for c in candidates for row in self._process([c])]
            message = f"{candidates[0].rel}: the worker failed on this image ({type(exc).__name__}: {exc})"
            return [error_row(candidates[0], message)]

    def _row(self, item: Item) -> dict:
        input_preview = output_preview = b""
        if self.previews and item.decoded is not None:  # made here, like Runner._record, from CPU data
            input_preview = _png(thumbnail(item.decoded.image))
            if item.ok:
                output_preview = _png(self.model.adapter.preview(item.decoded.image, item.result))
        return {
            "image": item.candidate.rel,
            "status": "ok" if item.ok else "error",
            "error": item.error_message() or "",
            "seconds": item.seconds(),
            "fields": json.dumps(item.fields(), ensure_ascii=False),
            "input_preview": input_preview,
            "output_preview": output_preview,
        }


def died_row(candidate: Candidate, deaths: int) -> dict:
    message = (
        f"{candidate.rel}: the worker process died {deaths} times while processing this image "
        "(out of memory, or a crash in native code); it was not tried again"
    )
    return error_row(candidate, message)


def error_row(candidate: Candidate, message: str) -> dict:
    return {
        "image": candidate.rel,
        "status": "error",
        "error": message,
        "seconds": 0.0,
        "fields": "{}",
        "input_preview": b"",
        "output_preview": b"",
    }


def _png(image: Image.Image | None) -> bytes:
    if image is None:
        return b""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
