"""The same engine on a Ray cluster, through Ray Data.

image paths -> `map_batches(ImageWorker)`: a pool of Ray actors, each loading the model once (on the
GPU it holds via `num_gpus`, or on its CPU) and running every batch through `BatchPipeline.process`,
the very code path of a local run, so each image is freed exactly as it is locally. Workers write the
output files into the output folder (shared storage); their rows come back to the driver, which
writes predictions.jsonl in scan order and summary.json, and yields the same events as `Runner`.

A worker that dies is restarted by Ray and its batch retried; `RetryLedger` (a tiny actor) counts
the retries and remembers which images were in the worker's hands when it died, so an image that
kills the worker twice becomes an error line instead of a run that never ends.

Through Ray Client (ray://) the driver's part itself runs in an actor on the cluster (`RemoteDriver`)
and its events are pulled here in chunks.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import torch
from PIL import Image

from batchlens.core.autobatch import BatchChoice, choose_batch_size
from batchlens.core.config import RunConfig
from batchlens.core.devices import resolve_device
from batchlens.core.errors import BatchLensError
from batchlens.core.events import Event, ImageResult, RunNote
from batchlens.core.images import Candidate, ScanStats, scan_images
from batchlens.core.inference import PRECISIONS, check_precision, use_channels_last
from batchlens.core.memory import MemoryProbe, MemorySample, probe_for
from batchlens.core.models import LoadedModel, load_model
from batchlens.core.pipeline import BatchPipeline, Item
from batchlens.core.results import ResultsWriter
from batchlens.core.runner import Runner, check_folders, finish_run, start_events
from batchlens.core.tasks.base import thumbnail

log = logging.getLogger(__name__)

RAY_VERSION = "2.60.0"  # the version the `cluster` extra pins
INSTALL_HINT = f'pip install "batchlens[cluster]" (it adds ray[data,client]=={RAY_VERSION})'
DEATHS_BEFORE_GIVING_UP = 2  # an image in the worker's hands at this many worker deaths is not retried
MAX_BLOCKS = 2000  # input blocks; more means finer retries and progress, but more scheduling overhead


def ray_installed() -> bool:
    """Whether the cluster extra is here (the installers ship without it), without importing Ray."""
    return importlib.util.find_spec("ray") is not None


def require_ray():
    """Import ray (and Ray Data), or raise BatchLensError saying how to install it."""
    # Ray Data logs every execution to the console at INFO; our own progress says it better.
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise BatchLensError(
            f"Running on a cluster needs Ray, which is not installed here: {INSTALL_HINT}."
        ) from None
    return ray


@dataclass(frozen=True)
class ClusterConfig:
    """Where and how wide to run. `address`: "auto" (the running cluster: RAY_ADDRESS or one started
    on this machine with `ray start`, else a new local one), "local" (always a new local one), or a
    cluster address ("ray://HOST:PORT" for Ray Client, "HOST:PORT" from a cluster node)."""

    address: str = "auto"
    workers: int | None = None  # actors in the pool; None: one per GPU, or one per CPU without GPUs
    # Run the driver's part (scan, predictions.jsonl, summary.json) in an actor on the cluster and
    # stream its events here. None: only for Ray Client (ray://), whose process cannot drive Ray Data
    # and may not see the cluster's storage at all.
    driver_on_cluster: bool | None = None

    @property
    def remote_driver(self) -> bool:
        if self.driver_on_cluster is not None:
            return self.driver_on_cluster
        return self.address.strip().startswith("ray://")


# -- the worker side ------------------------------------------------------------------------------


class RetryLedger:
    """A Ray actor that counts batch attempts and worker restarts, and blames images for deaths."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}
        self.in_hand: dict[str, list[str]] = {}  # batch -> images being processed right now
        self.deaths: dict[str, int] = {}
        self.workers: set[str] = set()
        self.restarts = 0

    def begin(self, batch: str, images: list[str]) -> tuple[int, dict[str, int]]:
        """Start an attempt at `batch`; return its attempt number and the deaths of its images."""
        self.attempts[batch] = self.attempts.get(batch, 0) + 1
        for image in self.in_hand.pop(batch, []):  # the previous attempt never finished: it died
            self.deaths[image] = self.deaths.get(image, 0) + 1
        self.in_hand[batch] = list(images)
        return self.attempts[batch], {i: self.deaths[i] for i in images if i in self.deaths}

    def holding(self, batch: str, images: list[str]) -> None:
        self.in_hand[batch] = list(images)

    def end(self, batch: str) -> None:
        self.in_hand.pop(batch, None)

    def worker_started(self, actor_id: str) -> None:
        """Called from each worker's constructor, which Ray runs again when it restarts the actor."""
        if actor_id in self.workers:
            self.restarts += 1
        self.workers.add(actor_id)

    def report(self) -> dict:
        return {
            "batches_retried": sum(n - 1 for n in self.attempts.values()),
            "worker_restarts": self.restarts,
        }


def _png(image: Image.Image | None) -> bytes:
    if image is None:
        return b""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


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
    channels_last = use_channels_last(model.module, model.device, config.channels_last)
    pipeline = BatchPipeline.for_run(model, output_dir, config, channels_last)
    pipeline.recovery = pipeline.make_recovery(cpu_fallback=config.cpu_fallback)
    return pipeline, probe_for(model.device)


def tune_batch_size(config: RunConfig, device: str, loader, todo: list[Candidate]) -> BatchChoice:
    """`--batch-size auto` on a cluster: measured once, on a worker like the ones that will run."""
    pipeline, probe = worker_pipeline(config, device, loader)
    return choose_batch_size(pipeline, todo, probe)


class ImageWorker:
    """The callable class Ray Data runs as actors: the model is loaded once per actor."""

    def __init__(
        self, config: RunConfig, device: str, ledger, loader: Callable[..., LoadedModel] = load_model
    ):
        import ray

        self.pipeline, self.probe = worker_pipeline(config, device, loader)
        self.model = self.pipeline.model
        self.previews = config.previews
        self.ledger = ledger
        self.where = f"{socket.gethostname()} (pid {os.getpid()}, {self.model.device})"
        ray.get(ledger.worker_started.remote(ray.get_runtime_context().get_actor_id()))

    def __call__(self, batch: dict) -> dict:
        import ray

        candidates = [
            Candidate(str(rel), Path(str(path))) for rel, path in zip(batch["image"], batch["path"])
        ]
        key = candidates[0].rel
        attempt, deaths = ray.get(self.ledger.begin.remote(key, [c.rel for c in candidates]))
        rows = []
        if attempt == 1:
            rows = self._process(candidates)
        else:  # after a death, one image at a time, so the one that kills the worker is found
            for candidate in candidates:
                if deaths.get(candidate.rel, 0) >= DEATHS_BEFORE_GIVING_UP:
                    rows.append(self._died_row(candidate, deaths[candidate.rel]))
                    continue
                ray.get(self.ledger.holding.remote(key, [candidate.rel]))
                rows += self._process([candidate])
        ray.get(self.ledger.end.remote(key))
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
        return {name: [row[name] for row in rows] for name in rows[0]}

    def _process(self, candidates: list[Candidate]) -> list[dict]:
        try:
            return [self._row(item) for item in self.pipeline.process(candidates)]
        except Exception as exc:
            if len(candidates) > 1:  # find the image it fails on; the others still get results
                return [row for c in candidates for row in self._process([c])]
            message = f"{candidates[0].rel}: the worker failed on this image ({type(exc).__name__}: {exc})"
            return [self._error_row(candidates[0], message, 0.0)]

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

    def _died_row(self, candidate: Candidate, deaths: int) -> dict:
        message = (
            f"{candidate.rel}: the worker process died {deaths} times while processing this image "
            "(out of memory, or a crash in native code); it was not tried again"
        )
        return self._error_row(candidate, message, 0.0)

    @staticmethod
    def _error_row(candidate: Candidate, message: str, seconds: float) -> dict:
        return {
            "image": candidate.rel,
            "status": "error",
            "error": message,
            "seconds": seconds,
            "fields": "{}",
            "input_preview": b"",
            "output_preview": b"",
        }


# -- the driver side ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerPlan:
    workers: int
    device: str  # what each worker passes to resolve_device: "cpu" or "cuda"
    gpus_per_worker: float


def plan_workers(resources: dict, device: str, workers: int | None) -> WorkerPlan:
    """Size the actor pool to the cluster's resources (`ray.cluster_resources()`)."""
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 0))
    device = (device or "auto").strip().lower()
    if device == "auto":
        device = "cuda" if gpus else "cpu"
    elif device.startswith("cuda"):
        if not gpus:
            raise BatchLensError(f"Device {device!r} was requested but the Ray cluster has no GPUs.")
        device = "cuda"  # each worker uses the GPU Ray gives it
    elif device != "cpu":
        raise BatchLensError(f"On a cluster the device is auto, cpu or cuda, not {device!r}.")
    capacity = gpus if device == "cuda" else cpus
    if capacity < 1:
        raise BatchLensError("The Ray cluster has no CPU to run a worker on.")
    if workers is not None and workers < 1:
        raise BatchLensError("The number of workers must be at least 1.")
    if workers is not None and workers > capacity:
        unit = "GPU" if device == "cuda" else "CPU"
        raise BatchLensError(
            f"{workers} workers were asked for, but the Ray cluster has room for {capacity} "
            f"(one {unit} each)."
        )
    return WorkerPlan(workers or capacity, device, 1.0 if device == "cuda" else 0.0)


class ClusterRunner(Runner):
    """Runs one RunConfig on a Ray cluster. Same events, files and controls as `Runner`."""

    def __init__(
        self,
        config: RunConfig,
        cluster: ClusterConfig | None = None,
        loader: Callable[..., LoadedModel] = load_model,
    ):
        super().__init__(config)
        self.cluster = cluster or ClusterConfig()
        self.loader = loader  # what workers call to load the model (tests inject faults here)

    def events(self) -> Iterator[Event]:
        ray = require_ray()
        if self.cluster.remote_driver:
            yield from self._events_from_cluster(ray)
            return
        cfg = self.config
        if cfg.batch_size != "auto" and (not isinstance(cfg.batch_size, int) or cfg.batch_size < 1):
            raise BatchLensError("The batch size must be a whole number of at least 1, or auto.")
        if cfg.max_failures is not None and cfg.max_failures < 1:
            raise BatchLensError("--max-failures must be at least 1.")
        if cfg.precision not in PRECISIONS:  # whether the workers' device can run it, they check
            raise BatchLensError(f"Unknown precision {cfg.precision!r}: use {', '.join(PRECISIONS)}.")
        input_dir, output_dir = check_folders(cfg.input_dir, cfg.output_dir)
        # Workers run in other folders: every path they get is absolute.
        input_dir, output_dir = input_dir.resolve(), output_dir.resolve()
        if Path(cfg.model).expanduser().is_file():
            self.config = cfg = replace(cfg, model=str(Path(cfg.model).expanduser().resolve()))
        if cfg.model_options.get("weights"):
            weights = str(Path(cfg.model_options["weights"]).expanduser().resolve())
            self.config = cfg = replace(cfg, model_options={**cfg.model_options, "weights": weights})
        # Loaded once on the driver's CPU: a wrong id fails here, and its adapter writes the end files.
        model = self.loader(cfg.model, torch.device("cpu"), cfg.model_options)

        stats = ScanStats()
        candidates = list(scan_images(input_dir, cfg.recursive, stats, exclude=output_dir))
        started_ray = connect(ray, self.cluster.address)
        try:
            yield from self._run(ray, model, input_dir, output_dir, candidates, stats)
        finally:
            if started_ray:
                ray.shutdown()

    def _events_from_cluster(self, ray) -> Iterator[Event]:
        """The whole run in a RemoteDriver actor on the cluster; its events are pulled here in chunks.
        Pausing here stops the pulling, and so the run there at its next event."""
        cfg = self.config
        for name, folder in (("input", cfg.input_dir), ("output", cfg.output_dir)):
            if not Path(folder).is_absolute():
                raise BatchLensError(
                    f"With a ray:// address give the {name} folder as an absolute path, as the cluster's "
                    f"nodes see it (not {folder})."
                )
        started_ray = connect(ray, self.cluster.address)
        on_cluster = replace(self.cluster, driver_on_cluster=False)  # inside the actor Ray is up
        driver = None
        try:
            # Two threads: cancel() must get through while take() waits for the next event.
            actor = ray.remote(num_cpus=0, max_concurrency=2)(RemoteDriver)
            driver = actor.remote(cfg, on_cluster, self.loader)
            cancel_sent = False
            while True:
                self._wait_if_paused()
                if self._cancel.is_set() and not cancel_sent:
                    ray.get(driver.cancel.remote())
                    cancel_sent = True
                events = ray.get(driver.take.remote())
                if not events:
                    break
                yield from events
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, BatchLensError):
                raise BatchLensError(str(exc.cause)) from None
            raise BatchLensError(f"The cluster run failed: {_last_line(exc)}.") from None
        finally:
            if driver is not None:
                ray.kill(driver)
            if started_ray:
                ray.shutdown()

    def _run(self, ray, model, input_dir: Path, output_dir: Path, candidates: list[Candidate], stats):
        cfg = self.config
        plan = plan_workers(ray.cluster_resources(), cfg.device, self.cluster.workers)
        # The workers' choice, made by the same function on the driver's copy, which it then drops.
        channels_last = use_channels_last(model.module, torch.device(plan.device), cfg.channels_last)
        model.module = None
        writer = ResultsWriter(output_dir, cfg.resume)
        done = writer.done
        todo = [c for c in candidates if c.rel not in done]
        position = {c.rel: i for i, c in enumerate(todo)}
        where = f"Ray cluster, {plan.workers} worker(s) on {plan.device}"
        memory_kind = "cuda" if plan.device == "cuda" else "cpu"
        started_at = datetime.now(UTC)
        t0 = time.perf_counter()
        counts = {"ok": 0, "error": 0}
        peak = 0
        nodes: set[str] = set()
        ledger = ray.remote(num_cpus=0)(RetryLedger).remote()
        yield from start_events(
            model, where, memory_kind, candidates, todo, stats, output_dir, cfg.fast_decode
        )

        if cfg.prefetch:
            yield RunNote("info", "Prefetch is not used on a cluster: Ray Data feeds each worker.")
        batch_size, batch_choice = cfg.batch_size, None
        if batch_size == "auto" and todo:
            tune = ray.remote(num_cpus=1, num_gpus=plan.gpus_per_worker)(tune_batch_size)
            on_worker = replace(cfg, input_dir=input_dir, output_dir=output_dir)
            batch_choice = ray.get(tune.remote(on_worker, plan.device, self.loader, todo[:8]))
            batch_size = batch_choice.batch_size
            yield RunNote("info", batch_choice.message())
        batch_size = batch_size if isinstance(batch_size, int) else 1

        if cfg.memory_snapshot:
            yield RunNote("info", "--memory-snapshot is not taken on a cluster; run on one GPU for it.")
        stopped = None
        pending: dict[int, dict] = {}  # lines that finished ahead of an earlier image
        next_line = 0
        rows = iter(())
        if todo:  # the first result waits for the workers to start and load the model
            yield RunNote("info", f"Starting {plan.workers} worker(s); each loads {model.info.id} once.")
        try:
            if todo:
                dataset = self._dataset(ray, plan, input_dir, output_dir, todo, ledger, batch_size)
                rows = dataset.iter_rows()
            for index, row in enumerate(rows, start=1):
                self._wait_if_paused()
                if self._cancel.is_set():
                    break
                event = self._event(row, index, len(todo))
                for level, message in json.loads(row["notes"]):  # out-of-memory recovery on a worker
                    yield RunNote(level, f"{row['worker']}: {message}", event.memory)
                pending[position[event.image]] = self._line(event)
                while next_line in pending:  # predictions.jsonl stays in scan order
                    writer.write(pending.pop(next_line))
                    next_line += 1
                counts[event.status] += 1
                peak = max(peak, event.memory.peak)
                nodes.add(str(row["worker"]).split(" (")[0])
                yield event
                if cfg.max_failures and counts["error"] >= cfg.max_failures:
                    stopped = (
                        f"Stopped after {counts['error']} failed image(s), the limit set by --max-failures "
                        f"{cfg.max_failures}. The last error: {event.error}. The results so far are in "
                        f"{writer.path}; fix the cause and run again with --resume."
                    )
                    break
        except ray.exceptions.RayError as exc:
            raise BatchLensError(
                f"The cluster run failed: {_last_line(exc)}. Results written so far are kept "
                "(use --resume to go on)."
            ) from None
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()  # stops the Ray Data execution when the run ends early
            for line in sorted(pending):  # a cancelled run: keep what finished, still in scan order
                writer.write(pending[line])
            writer.close(order=[c.rel for c in candidates] if cfg.resume else None)

        retries = ray.get(ledger.report.remote())
        ray.kill(ledger)
        if retries["batches_retried"] or retries["worker_restarts"]:
            yield RunNote(
                "warning",
                f"Ray restarted {retries['worker_restarts']} worker(s) and retried "
                f"{retries['batches_retried']} batch(es) after workers died.",
            )
        yield finish_run(
            cfg,
            model,
            writer,
            cancelled=self._cancel.is_set(),
            stopped=stopped,
            device=where,
            memory_kind=memory_kind,
            input_dir=input_dir,
            batch_size=batch_size,
            batch_choice=batch_choice,
            channels_last=channels_last,
            counts=counts,
            candidates=candidates,
            todo=todo,
            stats=stats,
            seconds=time.perf_counter() - t0,
            peak=peak,  # the largest any worker reported
            started_at=started_at,
            prefetch=0,  # workers decode in their loop: no prefetch on a cluster
            cluster={
                "address": self.cluster.address,
                "workers": plan.workers,
                "worker_device": plan.device,
                "nodes": sorted(nodes),
            },
            retries=retries,
        )

    def _dataset(self, ray, plan: WorkerPlan, input_dir, output_dir, todo, ledger, batch_size: int):
        cfg = self.config
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the CLI and the window show their own progress
        context.print_on_execution_start = False
        # Blocks of whole batches, at most MAX_BLOCKS of them: a retry redoes one block.
        rows_per_block = batch_size * math.ceil(len(todo) / (batch_size * MAX_BLOCKS))
        dataset = ray.data.from_items(
            [{"image": c.rel, "path": str(c.path)} for c in todo],
            override_num_blocks=math.ceil(len(todo) / rows_per_block),
        )
        return dataset.map_batches(
            ImageWorker,
            fn_constructor_kwargs={
                "config": replace(cfg, input_dir=input_dir, output_dir=output_dir),
                "device": plan.device,
                "ledger": ledger,
                "loader": self.loader,
            },
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=plan.workers),
            num_cpus=1,
            num_gpus=plan.gpus_per_worker or None,
            # Ray Data's actor pool restarts a dead worker and retries its batches, without limit
            # (max_restarts=-1, max_task_retries=-1 are its defaults); RetryLedger is what stops an
            # image that kills every worker from looping.
        )

    @staticmethod
    def _event(row: dict, index: int, total: int) -> ImageResult:
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


class RemoteDriver:
    """A Ray actor on the cluster that runs a ClusterRunner and hands out its events in chunks."""

    def __init__(self, config: RunConfig, cluster: ClusterConfig, loader: Callable[..., LoadedModel]):
        self.runner = ClusterRunner(config, cluster, loader)
        self.events = self.runner.events()

    def take(self, max_events: int = 256, max_seconds: float = 0.25) -> list[Event]:
        """The next events (at least one, unless the run is over: then none)."""
        chunk, start = [], time.monotonic()
        for event in self.events:  # leaving the loop early keeps the generator where it is
            chunk.append(event)
            if len(chunk) >= max_events or time.monotonic() - start > max_seconds:
                break
        return chunk

    def cancel(self) -> None:
        self.runner.cancel()


def _image(data) -> Image.Image | None:
    if data is None or len(data) == 0:
        return None
    image = Image.open(io.BytesIO(bytes(data)))
    image.load()
    return image


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1].rstrip(".") if lines else type(exc).__name__


RAY_CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")  # where `ray start` notes its address


def running_cluster() -> str | None:
    """What --cluster auto joins: RAY_ADDRESS, else the last `ray start` on this machine if it still
    answers (Ray itself would wait for minutes on a cluster that is gone), else None."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    try:
        remembered = RAY_CURRENT_CLUSTER.read_text().strip()
        host, port = remembered.rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=2).close()
    except (OSError, ValueError):
        return None
    return remembered


def connect(ray, address: str) -> bool:
    """Join (or start) the cluster for `address`. Returns True when this call started Ray here."""
    if ray.is_initialized():  # a caller (a test, a notebook) already connected
        return False
    address = (address or "auto").strip()
    if address == "auto":
        address = running_cluster() or "local"
    try:
        if address == "local":  # starts Ray on this machine: no dashboard wanted
            ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        hint = ""
        if address.startswith("ray://") and "timeout" in str(exc).lower():
            hint = (
                " If the cluster uses token authentication (Ray's default), set RAY_AUTH_MODE=token and "
                "give its token in RAY_AUTH_TOKEN."
            )
        raise BatchLensError(
            f"Cannot connect to the Ray cluster at {address}: {_last_line(exc)}.{hint}"
        ) from None
    return True
