"""Command line: `batchlens` (the window), `batchlens run`, `batchlens models`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from batchlens import __version__
from batchlens.core.errors import BatchLensError


def _add_run_options(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--model", required=required, help="model id (see `batchlens models`)")
    parser.add_argument("--input", required=required, type=Path, help="folder of images to process")
    parser.add_argument(
        "--output",
        required=required,
        type=Path,
        help="folder for predictions.jsonl, summary.json and output images",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps | xpu")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchlens",
        description="Run a PyTorch image model over a folder of images. "
        "With no command, opens the BatchLens window.",
    )
    parser.add_argument("--version", action="version", version=f"batchlens {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    # The window's options. Their dests differ from the `run` subcommand's (--model etc.) so neither
    # parser overwrites the other's values.
    window = parser.add_argument_group("window options (with no command)")
    window.add_argument("--model", dest="window_model", metavar="MODEL", help="preselect this model")
    window.add_argument("--input", dest="window_input", type=Path, metavar="DIR", help="folder of images")
    window.add_argument("--output", dest="window_output", type=Path, metavar="DIR", help="results folder")
    window.add_argument("--device", dest="window_device", metavar="DEV", help="auto | cpu | cuda:N | mps")
    window.add_argument("--start", dest="window_start", action="store_true", help="start the run at once")
    window.add_argument(
        "--self-test",
        dest="self_test",
        action="store_true",
        help="open the window, run the demo models on their samples into a temporary folder, "
        "exit 0 when everything worked (non-zero with a message otherwise)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run a model over a folder, headless")
    _add_run_options(run, required=True)
    run.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    run.add_argument("--recursive", action="store_true", help="include images in subfolders")
    run.add_argument(
        "--resume",
        action="store_true",
        help="skip images a previous run into the same output folder finished",
    )
    run.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="refuse images larger than this many pixels (default 150,000,000)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--max-failures",
        type=int,
        default=None,
        metavar="N",
        help="stop the run once N images have failed (a misconfigured run); default: never",
    )
    run.add_argument(
        "--cpu-fallback",
        action="store_true",
        help="when an image runs out of GPU memory even in tiles, run that image on the CPU",
    )
    run.add_argument(
        "--memory-snapshot",
        action="store_true",
        help="CUDA: save memory-snapshot.pickle at the first out-of-memory error (pytorch.org/memory_viz)",
    )
    run.add_argument(
        "--cluster",
        metavar="auto|local|ray://HOST:PORT",
        default=None,
        help='run on a Ray cluster (needs the cluster extra: pip install "batchlens[cluster]"): '
        "auto joins the running one or starts one here, local starts one here",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=None,
        help="with --cluster: workers to start (default: one per GPU, or CPU)",
    )

    sub.add_parser("models", help="list the models you can use")
    return parser


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from batchlens.core.events import ImageResult, RunFinished, RunNote, RunStarted
    from batchlens.core.images import DEFAULT_MAX_PIXELS
    from batchlens.core.memory import format_bytes
    from batchlens.core.runner import RunConfig, Runner

    config = RunConfig(
        model=args.model,
        input_dir=args.input,
        output_dir=args.output,
        device=args.device,
        batch_size=args.batch_size,
        recursive=args.recursive,
        resume=args.resume,
        max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
        max_failures=args.max_failures,
        cpu_fallback=args.cpu_fallback,
        memory_snapshot=args.memory_snapshot,
    )
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
    try:
        for event in runner.events():
            if isinstance(event, RunStarted):
                where = "RAM" if event.memory_kind == "cpu" else event.memory_kind.upper()
                tqdm.write(
                    f"Running {event.model} ({event.task}) on {event.device} over "
                    f"{event.total} image(s)"
                    + (f", {event.already_done} already done" if event.already_done else "")
                    + f"; memory shown is {where}."
                )
                bar = tqdm(total=event.total, unit="img", disable=args.no_progress, dynamic_ncols=True)
            elif isinstance(event, ImageResult):
                if not event.ok:
                    tqdm.write(f"error: {event.error}", file=sys.stderr)
                bar.set_postfix_str(f"mem {format_bytes(event.memory.allocated)}", refresh=False)
                bar.update(1)
            elif isinstance(event, RunNote):
                tqdm.write(f"{event.level}: {event.message}", file=sys.stderr)
            elif isinstance(event, RunFinished):
                summary = event.summary
    except KeyboardInterrupt:
        runner.cancel()
        print(
            "Interrupted; every finished image is in predictions.jsonl (use --resume to go on).",
            file=sys.stderr,
        )
        return 130
    finally:
        if bar is not None:
            bar.close()
    print(describe_summary(summary))
    return 0


def describe_summary(summary: dict) -> str:
    from batchlens.core.memory import format_bytes

    counts = summary["counts"]
    rate = summary["images_per_second"]
    text = (
        f"{'Cancelled' if summary['cancelled'] else 'Finished'}: {counts['ok']} image(s) ok, "
        f"{counts['error']} failed, {counts['skipped']} skipped (not images or system files)"
        + (f", {counts['already_done']} already done earlier" if counts["already_done"] else "")
        + f", in {summary['seconds']:.1f} s"
        + (f" ({rate:.1f} images/s)" if rate else "")
        + f" with {summary['model']} on {summary['device']}; peak "
        + ("RAM" if summary["memory_kind"] == "cpu" else "memory")
        + f" {format_bytes(summary['peak_memory_bytes'])}. Results are in "
        f"{Path(summary['output']) / 'predictions.jsonl'}"
        + (" (failed images have an error line there)." if counts["error"] else ".")
    )
    return text


def _models(args: argparse.Namespace) -> int:
    from batchlens.core.memory import format_bytes
    from batchlens.core.models import list_models

    models = list_models()
    width = max(len(m.id) for m in models)
    print(f"{'MODEL':<{width}}  {'TASK':<15} {'SOURCE':<12} {'SIZE':>9}  DESCRIPTION")
    for m in models:
        size = format_bytes(m.size_bytes) if m.size_bytes else ""
        print(f"{m.id:<{width}}  {m.task:<15} {m.source:<12} {size:>9}  {m.description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    commands = {"run": _run, "models": _models}
    try:
        if args.command is None:
            from batchlens.ui.app import run_window

            return run_window(args)
        return commands[args.command](args)
    except BatchLensError as exc:
        print(f"batchlens: {exc}", file=sys.stderr)
        return 2


def main_gui() -> int:
    return main([])
