"""The engine on a Ray cluster, through Ray Data.

image paths -> `map_batches(ImageWorker)`: a pool of Ray actors, each loading the model once (on the
GPU it holds via `num_gpus`, or on its CPU) and running every batch through `BatchPipeline.process`,
the very code path of a local run, so each image is freed exactly as it is locally. Workers write the
output files into the output folder (shared storage); their rows come back to the driver, whose
ResultCollector writes predictions.jsonl in scan order and summary.json, and yields the same events
as `Runner`.

A worker that dies is restarted by Ray and its batch retried; the RetryLedger (here a tiny actor)
counts the retries and remembers which images were in the worker's hands when it died, so an image
that kills the worker twice becomes an error line instead of a run that never ends.

Through Ray Client (ray://) the driver's part itself runs in an actor on the cluster (`RemoteDriver`)
and its events are pulled here in chunks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import fields, replace
from pathlib import Path

import torch

from batchlens.core.cluster.collector import ResultCollector
from batchlens.core.cluster.connect import Joined, connect, last_line, require_ray
from batchlens.core.cluster.ledger import RetryLedger
from batchlens.core.cluster.plan import ClusterConfig, WorkerPlan, plan_workers
from batchlens.core.cluster.worker import BatchWorker, tune_batch_size
from batchlens.core.errors import BatchLensError
from batchlens.core.inputs.images import Candidate, ScanStats, no_images_sentence, scan_images
from batchlens.core.models import LoadedModel, load_model
from batchlens.core.outputs.manifest import open_output
from batchlens.core.outputs.runlock import RunLock
from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import Event, RunNote
from batchlens.core.run.inference import PRECISIONS, use_channels_last
from batchlens.core.run.run_record import RunRecord, start_events
from batchlens.core.run.runner import Runner, check_folders

DEFAULT_PREFETCH = next(f.default for f in fields(RunConfig) if f.name == "prefetch")
MAX_BLOCKS = 2000  # input blocks; more means finer retries and progress, but more scheduling overhead


class ImageWorker(BatchWorker):
    """The callable class Ray Data runs as actors: the model is loaded once per actor."""

    def __init__(
        self, config: RunConfig, device: str, ledger, loader: Callable[..., LoadedModel] = load_model
    ):
        import ray

        super().__init__(config, device, loader)
        self.ledger = ledger
        self.ask_ledger("worker_started", ray.get_runtime_context().get_actor_id())

    def ask_ledger(self, method: str, *args):
        import ray

        return ray.get(getattr(self.ledger, method).remote(*args))

    def __call__(self, batch: dict) -> dict:
        candidates = [Candidate(str(rel), str(path)) for rel, path in zip(batch["image"], batch["path"])]
        rows = self.run_batch(candidates)
        return {name: [row[name] for row in rows] for name in rows[0]}


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
        if not candidates:  # as a local run: nothing to do is refused before joining a cluster
            raise BatchLensError(no_images_sentence(input_dir, cfg.recursive, stats, exclude=output_dir))
        joined = connect(ray, self.cluster.address)
        try:
            with RunLock(output_dir):  # one run at a time in a folder (core/outputs/runlock.py)
                yield from self._run(ray, joined, model, input_dir, output_dir, candidates, stats)
        finally:
            if joined.started_here:
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
        joined = connect(ray, self.cluster.address)
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
                taken = driver.take.remote()
                # Short waits, then one get of a ready result: through Ray Client a get that blocks
                # while the driver's actor loads the model and starts workers can break off under load.
                while not ray.wait([taken], timeout=1.0)[0]:
                    if self._cancel.is_set() and not cancel_sent:
                        ray.get(driver.cancel.remote())
                        cancel_sent = True
                events = ray.get(taken)
                if not events:
                    break
                yield from events
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, BatchLensError):
                raise BatchLensError(str(exc.cause)) from None
            raise BatchLensError(f"The cluster run failed: {last_line(exc)}.") from None
        except ImportError as exc:  # Ray Client unpickles the run's settings on the cluster
            raise BatchLensError(
                f"The Ray cluster at {self.cluster.address} cannot load BatchLens's code ({exc}): install "
                "the same BatchLens, with its cluster extra, where the cluster's nodes run."
            ) from None
        except (ConnectionError, ray.exceptions.RayError) as exc:  # the Ray Client connection broke
            raise BatchLensError(
                f"The connection to the Ray cluster at {self.cluster.address} broke off: {last_line(exc)}. "
                "What the run wrote is kept in the output folder (use --resume to go on)."
            ) from None
        finally:
            if driver is not None:
                ray.kill(driver)
            if joined.started_here:
                ray.shutdown()

    def _run(
        self,
        ray,
        joined: Joined,
        model,
        input_dir: Path,
        output_dir: Path,
        candidates: list[Candidate],
        stats: ScanStats,
    ):
        cfg = self.config
        plan = plan_workers(ray.cluster_resources(), cfg.device, self.cluster.workers)
        # The workers' choice, made by the same function on the driver's copy, which it then drops.
        channels_last = use_channels_last(
            model.module, torch.device(plan.device), cfg.channels_last, cfg.batch_size != 1
        )
        model.module = None
        writer = open_output(cfg, model, input_dir, output_dir)  # run.json; refuses to mix two runs
        done = writer.done
        todo = [c for c in candidates if c.rel not in done]
        record = RunRecord(
            input_dir,
            candidates,
            todo,
            stats,
            device=f"Ray cluster, {plan.workers} worker(s) on {plan.device}",
            memory_kind="cuda" if plan.device == "cuda" else "cpu",
            channels_last=channels_last,
        )
        t0 = time.perf_counter()
        collector = ResultCollector(cfg, writer, candidates, todo)
        rows = iter(())
        ledger = ray.remote(num_cpus=0)(RetryLedger).remote()
        try:  # from here on, however the run ends, the writer is closed with what finished
            yield from start_events(model, record, output_dir, cfg.fast_decode)
            yield RunNote("info", joined.sentence())
            batch_size = yield from self._settings(ray, plan, record, output_dir)
            if todo:  # the first result waits for the workers to start and load the model
                yield RunNote("info", f"Starting {plan.workers} worker(s); each loads {model.info.id} once.")
                dataset = self._dataset(ray, plan, input_dir, output_dir, todo, ledger, batch_size)
                rows = dataset.iter_rows()
            for row in rows:
                self._wait_if_paused()
                if self._cancel.is_set():
                    break
                yield from collector.add(row)
                if collector.stopped:
                    break
            retries = ray.get(ledger.report.remote())
        except ray.exceptions.RayError as exc:
            raise BatchLensError(
                f"The cluster run failed: {last_line(exc)}. Results written so far are kept "
                "(use --resume to go on)."
            ) from None
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()  # stops the Ray Data execution when the run ends early
            collector.close()
            ray.kill(ledger)

        yield from retries_note(retries)
        record.seconds = time.perf_counter() - t0
        yield collector.finish(
            model,
            record,
            cancelled=self._cancel.is_set(),
            cluster={
                **joined.to_json(),  # the cluster actually joined, not "auto"
                "workers": plan.workers,
                "worker_device": plan.device,
            },
            retries=retries,
        )

    def _settings(self, ray, plan: WorkerPlan, record: RunRecord, output_dir: Path):
        """The notes on settings a cluster run does without, and the batch size the workers use
        (--batch-size auto: tuned on one worker first, with its note), kept in the record."""
        cfg = self.config
        if cfg.prefetch and cfg.prefetch != DEFAULT_PREFETCH:  # asked for, not the default
            yield RunNote("info", "Prefetch is not used on a cluster: Ray Data feeds each worker.")
        batch_size = cfg.batch_size
        if batch_size == "auto" and record.todo:
            tune = ray.remote(num_cpus=1, num_gpus=plan.gpus_per_worker)(tune_batch_size)
            on_worker = replace(cfg, input_dir=record.input_dir, output_dir=output_dir)
            record.batch_choice = ray.get(tune.remote(on_worker, plan.device, self.loader, record.todo[:8]))
            batch_size = record.batch_choice.batch_size
            yield RunNote("info", record.batch_choice.message())
        record.batch_size = batch_size if isinstance(batch_size, int) else 1
        if cfg.memory_snapshot not in (False, None, "off"):
            yield RunNote("info", "--memory-snapshot is not taken on a cluster; run on one GPU for it.")
        return record.batch_size

    def _dataset(self, ray, plan: WorkerPlan, input_dir, output_dir, todo, ledger, batch_size: int):
        cfg = self.config
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the CLI and the window show their own progress
        context.print_on_execution_start = False
        # Blocks of whole batches, at most MAX_BLOCKS of them: a retry redoes one block.
        rows_per_block = batch_size * math.ceil(len(todo) / (batch_size * MAX_BLOCKS))
        blocks = math.ceil(len(todo) / rows_per_block)
        dataset = ray.data.from_items(
            [{"image": c.rel, "path": str(c.path)} for c in todo], override_num_blocks=blocks
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
            # No more actors than blocks: an idle one would only load the model (and Ray Data warns).
            compute=ray.data.ActorPoolStrategy(size=min(plan.workers, blocks)),
            num_cpus=1,
            num_gpus=plan.gpus_per_worker or None,
            # Ray Data's actor pool restarts a dead worker and retries its batches, without limit
            # (max_restarts=-1, max_task_retries=-1 are its defaults); RetryLedger is what stops an
            # image that kills every worker from looping.
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


def retries_note(retries: dict) -> Iterator[RunNote]:
    """The warning when workers died and their batches were run again."""
    if retries["batches_retried"] or retries["worker_restarts"]:
        yield RunNote(
            "warning",
            f"Ray restarted {retries['worker_restarts']} worker(s) and retried "
            f"{retries['batches_retried']} batch(es) after workers died.",
        )
