"""The commands: `batchlens run`, `batchlens models` and `batchlens bench` (heavy imports inside each,
so `batchlens --help` and the window's start stay quick)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from batchlens.cli.args import model_options, speed_settings
from batchlens.cli.stop import SignalStop, events_in_thread
from batchlens.core.errors import BatchLensError
from batchlens.core.terminal import printable


def _download_weights(model: str, options: dict, quiet: bool) -> None:
    """Fetch torchvision weights into the torch hub cache before the run, with a progress bar."""
    from tqdm import tqdm

    from batchlens.core.models import download_weights, needs_download

    if not needs_download(model, options):
        return
    with tqdm(
        unit="B", unit_scale=True, unit_divisor=1024, desc=f"Downloading {model}", disable=quiet
    ) as bar:

        def progress(done: int, total: int | None) -> None:
            if total and bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        download_weights(model, progress)


def run_command(args: argparse.Namespace) -> int:
    stop = SignalStop().install()  # first: Ctrl+C during the imports that follow is one sentence too
    try:
        return _run_with(args, stop)
    finally:
        stop.uninstall()


def check_before_torch(args: argparse.Namespace) -> None:
    """The mistakes found without PyTorch (a missing input folder, an unknown model), said at once
    rather than after the seconds torch takes to import. The runner checks them again."""
    from batchlens.core.models import check_model_id

    input_dir = Path(args.input).expanduser()
    if not input_dir.exists():
        raise BatchLensError(f"The input folder {input_dir} does not exist.")
    if not input_dir.is_dir():
        raise BatchLensError(f"The input {input_dir} is a file, not a folder.")
    check_model_id(args.model)


def _run_with(args: argparse.Namespace, stop: SignalStop) -> int:
    check_before_torch(args)
    from tqdm import tqdm

    from batchlens.core.formats import DEFAULT_MAX_PIXELS
    from batchlens.core.machine.memory import format_bytes
    from batchlens.core.models import refuse_options_that_do_not_apply
    from batchlens.core.run.config import RunConfig
    from batchlens.core.run.events import ImageResult, RunFinished, RunNote, RunStarted
    from batchlens.core.run.run_text import describe_start, describe_summary
    from batchlens.core.run.runner import Runner
    from batchlens.core.run.snapshot_recorder import snapshot_mode
    from batchlens.core.startup import freeze_imported_objects

    freeze_imported_objects()
    snapshot_mode(args.memory_snapshot)  # a wrong value is told in one sentence before the model loads
    config = RunConfig(
        model=args.model,
        model_options=model_options(args),
        input_dir=args.input,
        output_dir=args.output,
        device=args.device,
        recursive=args.recursive,
        resume=args.resume,
        overwrite=args.overwrite,
        image_timeout=args.image_timeout,
        max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
        max_failures=args.max_failures,
        cpu_fallback=args.cpu_fallback,
        memory_snapshot=args.memory_snapshot,
        precision=args.precision,
        fast_decode=args.fast_decode,
        **speed_settings(args),
        gpu_decode=args.gpu_decode,
        compile=args.compile,
        empty_cache=args.empty_cache,
    )
    refuse_options_that_do_not_apply(args.model, config.model_options)  # before any download
    _download_weights(args.model, config.model_options, args.no_progress)
    if args.cluster:
        from batchlens.core.cluster import ClusterConfig, ClusterRunner, require_ray

        require_ray()  # says how to install it when it is missing
        runner = ClusterRunner(config, ClusterConfig(args.cluster, args.workers))
    elif args.workers is not None:
        raise BatchLensError("--workers needs --cluster (workers are Ray actors).")
    else:
        runner = Runner(config)
    bar = None
    summary = None
    stop.runner = runner
    # A local run goes on a worker thread, so a signal is handled at once even during a long forward;
    # a cluster run stays here (Ray sets itself up from the main thread).
    events = runner.events() if args.cluster else events_in_thread(runner.events())
    try:
        for event in events:
            if isinstance(event, RunStarted):
                where = "RAM" if event.memory_kind == "cpu" else event.memory_kind.upper()
                tqdm.write(printable(f"{describe_start(event)}; memory shown is {where}."))
                bar = tqdm(total=event.total, unit="img", disable=args.no_progress, dynamic_ncols=True)
            elif isinstance(event, ImageResult):
                if not event.ok:
                    tqdm.write(printable(f"error: {event.error}"), file=sys.stderr)
                bar.set_postfix_str(f"mem {format_bytes(event.memory.allocated)}", refresh=False)
                bar.update(1)
            elif isinstance(event, RunNote):
                tqdm.write(printable(f"{event.level}: {event.message}"), file=sys.stderr)
            elif isinstance(event, RunFinished):
                summary = event.summary
    finally:
        if bar is not None:
            bar.close()
    print(printable(describe_summary(summary)))
    if stop.signum is not None:
        print(
            "Interrupted; every finished image is in predictions.jsonl (use --resume to go on).",
            file=sys.stderr,
        )
        return stop.exit_code
    return 0


def models_command(args: argparse.Namespace) -> int:
    from batchlens.core.machine.memory import format_bytes
    from batchlens.core.models import list_models

    models = [m for m in list_models(args.task) if args.filter.lower() in m.id.lower()]
    if not models:
        print("No model matches; `batchlens models` lists them all.")
        return 0
    width = max(len(m.id) for m in models)
    groups: dict[str, list] = {}
    for m in models:
        titles = {"built-in": "Built-in demos", "huggingface": "On this computer (Hugging Face cache)"}
        title = titles.get(m.source, f"torchvision {m.task}")
        groups.setdefault(title, []).append(m)
    for title, members in groups.items():
        print(f"{title}:")
        for m in members:
            size = format_bytes(m.size_bytes) if m.size_bytes else ""
            cached = (
                "  (downloaded)"
                if m.downloaded
                else (f"  ({m.download_note()})" if m.download_note() else "")
            )
            print(printable(f"  {m.id:<{width}}  {m.task:<15} {size:>9}  {m.description}{cached}"))
        print()
    print(
        "torchvision models download their weights once, into the torch hub cache. "
        "A model file or Hugging Face folder is used by its path: batchlens run --model PATH ...; "
        "a Hugging Face hub model by its name, --model hf:ORG/NAME (timm's own weights: "
        "hf:timm/NAME.TAG); a timm architecture with your checkpoint as --model timm:NAME --weights FILE "
        "(docs/models.md)."
    )
    return 0


def bench_command(args: argparse.Namespace) -> int:
    import json

    from batchlens.core.run.bench import BenchConfig, format_table, run_bench
    from batchlens.core.startup import freeze_imported_objects

    freeze_imported_objects()
    if args.synthetic is not None and args.synthetic < 1:
        raise BatchLensError("--synthetic needs at least 1 image.")
    config = BenchConfig(
        model=args.model,
        input_dir=args.input,
        synthetic=args.synthetic or 0,
        size=args.size,
        device=args.device,
        batch_size=args.batch_size,
        prefetch=args.prefetch,
        precision=args.precision,
        naive_limit_bytes=int(args.naive_limit * 2**20),
        repeat=args.repeat,
        sampler_check=args.sampler_check,
        threads=args.threads,
    )
    result = run_bench(
        config, log=lambda text: print(printable(f"bench: {text}"), file=sys.stderr, flush=True)
    )
    for line in format_table(result).splitlines():  # names in it are escaped, line by line
        print(printable(line))
    if args.json:
        from batchlens.core.files import atomic_write_text

        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
        print(printable(f"Wrote {args.json}"))
    return 0
