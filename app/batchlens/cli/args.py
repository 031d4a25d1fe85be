"""The command line's arguments: `batchlens` (the window), `batchlens run`, `models` and `bench`.

Only argparse and the argument types here: the commands themselves are in cli/commands.py, so the
parser builds without importing torch.
"""

from __future__ import annotations

import argparse
import re
from typing import NoReturn

from batchlens import __version__
from batchlens.cli.after_run import add_after_run_commands
from batchlens.cli.option_types import (  # the bounded types (docs/cli.md, "Ranges")
    MAX_BATCH,
    MAX_COUNT,
    MAX_MIB,
    MAX_NORM,
    MAX_PIXELS,
    MAX_PREFETCH,
    MAX_REPEAT,
    MAX_SECONDS,
    MAX_SIDE,
    MAX_SYNTHETIC,
    MAX_TEXT,
    MAX_THREADS,
    MAX_WORKERS,
    _shown,
    _whole,
    finite_float,
    memory_snapshot_arg,
    path_arg,
    positive_int,
    text_arg,
    whole_number,
)
from batchlens.core.errors import BatchLensError
from batchlens.core.terminal import printable


def _add_run_options(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--model", required=required, type=text_arg, help="model id (see `batchlens models`)")
    parser.add_argument("--input", required=required, type=path_arg, help="folder of images to process")
    parser.add_argument(
        "--output",
        required=required,
        type=path_arg,
        help="folder for predictions.jsonl, summary.json and output images",
    )
    parser.add_argument(
        "--device", default="auto", type=text_arg, help="auto | cpu | cuda | cuda:N | mps | xpu"
    )


TASKS = ["classification", "detection", "segmentation", "image_to_image"]
# core.models.preprocessing.INTERPOLATIONS' names, written out so that `--help` needs no torch import
INTERPOLATION_NAMES = ["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]


def _image_size(text: str) -> list[int]:
    """ "224" -> [224, 224]; "480,640" or "480x640" -> [480, 640] (height, width)."""
    size = [_whole(p, 1, MAX_SIDE) for p in text.lower().replace("x", ",").split(",")]
    if len(size) == 1:
        size *= 2
    if len(size) != 2 or None in size:
        raise argparse.ArgumentTypeError(
            f"{_shown(text)} is not a size: give N or HEIGHT,WIDTH, each from 1 to {MAX_SIDE}"
        )
    return size


def _resize(text: str) -> int | list[int]:
    """ "256" -> 256 (the short side, keeping the shape); "480,640" -> [480, 640] (exactly)."""
    if "," not in text and "x" not in text.lower():
        size = _image_size(text)
        return size[0]
    return _image_size(text)


def _numbers(text: str, low: float, what: str) -> list[float]:
    """1 to 4 comma-separated finite numbers above `low` (or from -MAX_NORM) up to MAX_NORM."""
    try:
        values = [float(p) for p in text.split(",")]
    except ValueError:
        values = []
    if not 1 <= len(values) <= 4 or not all(low < v <= MAX_NORM for v in values):  # nan fails too
        raise argparse.ArgumentTypeError(
            f"{_shown(text)} is not a list of 1 to 4 {what} like 0.485,0.456,0.406"
        )
    return values


def _mean(text: str) -> list[float]:
    return _numbers(text, -MAX_NORM - 1e-9, f"numbers from -{MAX_NORM:g} to {MAX_NORM:g}")


def _std(text: str) -> list[float]:
    return _numbers(text, 0.0, f"numbers above 0 up to {MAX_NORM:g}")


_score = finite_float(0.0, 1.0, "a score")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """What the model is and how to load it (docs/models.md); they override a model file's sidecar."""
    group = parser.add_argument_group("model options")
    group.add_argument(
        "--weights",
        type=path_arg,
        metavar="FILE",
        help="a state_dict for the torchvision --model, or the checkpoint of --model timm:NAME (no download)",
    )
    group.add_argument(
        "--arch", type=text_arg, help="torchvision architecture of a state_dict model file (e.g. resnet18)"
    )
    group.add_argument("--task", choices=TASKS, help="what a model file does (when it has no sidecar)")
    group.add_argument(
        "--labels", type=path_arg, metavar="FILE", help="class names: text file (one per line) or JSON list"
    )
    group.add_argument(
        "--input-size", type=_image_size, metavar="H[,W]", help="stretch images to exactly this size"
    )
    group.add_argument(
        "--resize", type=_resize, metavar="N|H,W", help="resize the short side to N (or to exactly H,W)"
    )
    group.add_argument("--crop", type=_image_size, metavar="H[,W]", help="then cut out the centre H x W")
    group.add_argument(
        "--interpolation", choices=INTERPOLATION_NAMES, help="the resize's filter (default bilinear)"
    )
    group.add_argument("--mean", type=_mean, metavar="M,M,M", help="normalisation mean per channel")
    group.add_argument("--std", type=_std, metavar="S,S,S", help="normalisation std per channel")
    group.add_argument(
        "--min-score",
        type=_score,
        default=0.5,
        metavar="S",
        help="detection: keep boxes scoring at least S (default 0.5)",
    )
    group.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow a model file that needs full pickle (it can run code: only for files you trust)",
    )


def model_options(args: argparse.Namespace) -> dict:
    """RunConfig.model_options from the model options above."""
    from batchlens.core.models.request import MODEL_OPTIONS, model_request

    return model_request({key: getattr(args, key) for key in MODEL_OPTIONS})


class Parser(argparse.ArgumentParser):
    """argparse's parser, its refusals one sentence and exit 2 (argparse puts its usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, printable(f"{self.prog}: {message} (`{self.prog} --help` lists the options).") + "\n")


def check_args(args: argparse.Namespace) -> None:
    """What no single option's type can see: options that exclude or need each other. Raises
    BatchLensError (one sentence, exit 2). Torch-free, like the parser."""
    if args.command == "run":
        speed_settings(args)  # --exact with --batch-size, --prefetch or --threads
        if args.resume and args.overwrite:
            raise BatchLensError("Choose --resume or --overwrite, not both.")
        if args.workers is not None and not args.cluster:
            raise BatchLensError("--workers needs --cluster (workers are Ray actors).")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="batchlens",
        description="Run a PyTorch image model over a folder of images. "
        "With no command, opens the BatchLens window.",
    )
    parser.add_argument("--version", action="version", version=f"batchlens {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    _add_window_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run_command(sub)
    _add_models_command(sub)
    _add_bench_command(sub)
    add_after_run_commands(sub)  # sort, evaluate, export (cli/after_run.py)
    return parser


def _add_window_options(parser: argparse.ArgumentParser) -> None:
    # The window's options. Their dests differ from the `run` subcommand's (--model etc.) so neither
    # parser overwrites the other's values.
    window = parser.add_argument_group("window options (with no command)")
    window.add_argument(
        "--model", dest="window_model", type=text_arg, metavar="MODEL", help="preselect this model"
    )
    window.add_argument("--input", dest="window_input", type=path_arg, metavar="DIR", help="folder of images")
    window.add_argument("--output", dest="window_output", type=path_arg, metavar="DIR", help="results folder")
    window.add_argument(
        "--device", dest="window_device", type=text_arg, metavar="DEV", help="auto | cpu | cuda:N | mps"
    )
    window.add_argument("--start", dest="window_start", action="store_true", help="start the run at once")
    window.add_argument(
        "--results",
        type=path_arg,
        metavar="DIR",
        help="browse the results in an output folder (with --input DIR: where its input images are now)",
    )
    window.add_argument(
        "--self-test",
        dest="self_test",
        action="store_true",
        help="open the window, run the demo models on their samples into a temporary folder, "
        "exit 0 when everything worked (non-zero with a message otherwise)",
    )


def _add_run_command(sub) -> None:
    run = sub.add_parser("run", help="run a model over a folder, headless")
    _add_run_options(run, required=True)
    _add_model_options(run)
    run.add_argument(
        "--batch-size",
        type=batch_size_arg,
        default=None,
        help="images per forward pass, or auto (the default): measured on the run's own batches, "
        "starting at 1; results differ from batch 1 only by float rounding",
    )
    _add_speed_options(run)
    run.add_argument("--recursive", action="store_true", help="include images in subfolders")
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the run the output folder holds: skip the images it finished (same model, "
        "input folder and settings only; docs/outputs.md)",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run the output folder holds: its files are deleted first (only those it wrote)",
    )
    run.add_argument(
        "--image-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="mark an image whose forward takes longer as an error and go on (docs/troubleshooting.md)",
    )
    run.add_argument(
        "--max-pixels",
        type=positive_int(MAX_PIXELS),
        default=None,
        help="refuse images larger than this many pixels (default 150,000,000)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--max-failures",
        type=positive_int(MAX_COUNT),
        default=None,
        metavar="N",
        help="stop the run once N images have failed (a misconfigured run); default: never",
    )
    _add_memory_options(run)
    _add_cluster_options(run)


def _add_memory_options(parser: argparse.ArgumentParser) -> None:
    """`run`'s options on GPU memory: out-of-memory help, the cache, the allocator's snapshot."""
    parser.add_argument(
        "--cpu-fallback",
        action="store_true",
        help="when an image runs out of GPU memory even in tiles, run that image on the CPU",
    )
    parser.add_argument(
        "--empty-cache",
        type=cache_policy_arg,
        default="never",
        metavar="POLICY",
        help="when to hand cached GPU memory back to the driver: never (default, fastest), image (after "
        "every batch), every:N (every N images) or reserved:F (when reserved memory is over F of the GPU)",
    )
    parser.add_argument(  # (h9: its own block) oom alone, as the flag always meant; off by default
        "--memory-snapshot",
        nargs="?",
        const="oom",
        default="off",
        type=memory_snapshot_arg,
        metavar="always[:N]|oom|off",
        help="CUDA: record the allocator's history into memory-snapshot.pickle (open it in the window or at "
        "pytorch.org/memory_viz): oom (the flag alone) writes it at the first out-of-memory error, always "
        "after the first N images (default 50) or 120 s; off by default",
    )


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """`run`'s options for a Ray cluster (docs/clusters.md)."""
    parser.add_argument(
        "--cluster",
        metavar="auto|local|HOST:PORT|ray://HOST:PORT",
        type=text_arg,
        default=None,
        help='run on a Ray cluster (needs the cluster extra: pip install "batchlens[cluster]"): '
        "auto joins the running one (RAY_ADDRESS, or `ray start` here) or starts one here, local starts "
        "one here; a cluster with tokens: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (docs/clusters.md)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int(MAX_WORKERS),
        default=None,
        help="with --cluster: workers to start (default: one per GPU, or CPU)",
    )


def _add_models_command(sub) -> None:
    models = sub.add_parser("models", help="list the models you can use")
    models.add_argument(
        "filter", nargs="?", default="", type=_filter_arg, help="only models whose id contains this text"
    )
    models.add_argument("--task", choices=TASKS, help="only models of this task")


def _add_bench_command(sub) -> None:
    bench = sub.add_parser(
        "bench",
        help="time the engine against a plain PyTorch loop and the naive loop, on the same images",
    )
    bench.add_argument("--model", required=True, type=text_arg, help="model id (see `batchlens models`)")
    source = bench.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", type=path_arg, help="folder of images to benchmark on")
    source.add_argument(
        "--synthetic",
        type=positive_int(MAX_SYNTHETIC),
        metavar="N",
        help="generate N photo-like JPEGs instead",
    )
    bench.add_argument("--size", type=size_arg, default=(1600, 1200), help="WxH of --synthetic images")
    bench.add_argument(
        "--device", default="auto", type=text_arg, help="auto | cpu | cuda | cuda:N | mps | xpu"
    )
    bench.add_argument(
        "--batch-size",
        type=batch_size_arg,
        default=None,
        help="add a row of the engine at this fixed batch size (the defaults row measures its own)",
    )
    bench.add_argument(
        "--prefetch", type=whole_number(0, MAX_PREFETCH), default=2, help="prefetch depth of that row (2)"
    )
    bench.add_argument(
        "--precision",
        choices=("fp32", "fp16", "bf16"),
        default="fp32",
        help="fp16/bf16 adds a mixed-precision row",
    )
    bench.add_argument(
        "--naive-limit",
        type=finite_float(0, MAX_MIB, "a number of MiB", above_low=True),
        default=1024,
        metavar="MIB",
        help="stop the naive loop once memory has grown by this many MiB (default 1024)",
    )
    bench.add_argument(
        "--repeat",
        type=positive_int(MAX_REPEAT),
        default=1,
        help="rounds over every row (medians and ranges are reported)",
    )
    bench.add_argument(
        "--sampler-check",
        action="store_true",
        help="add a row without memory sampling to measure what the sampler costs",
    )
    bench.add_argument(
        "--threads",
        type=positive_int(MAX_THREADS),
        default=None,
        help="torch CPU threads for the loops (the engine picks its own)",
    )
    bench.add_argument("--json", type=path_arg, metavar="FILE", help="also write the results as JSON")


def batch_size_arg(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    value = _whole(text, 1, MAX_BATCH)
    if value is None:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a batch size from 1 to {MAX_BATCH} or auto")
    return value


def threads_arg(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    value = _whole(text, 1, MAX_THREADS)
    if value is None:
        raise argparse.ArgumentTypeError(
            f"{_shown(text)} is not a number of threads from 1 to {MAX_THREADS} or auto"
        )
    return value


#: core.run.cache_policy.CHOICES' forms, checked here without importing torch
_CACHE_POLICY = re.compile(r"(never|image|every:[0-9]{1,9}|reserved:(0?\.[0-9]*[1-9][0-9]*))")


def cache_policy_arg(text: str) -> str:
    policy = text.strip().lower()
    if not _CACHE_POLICY.fullmatch(policy) or policy.startswith("every:") and int(policy[6:]) < 1:
        raise argparse.ArgumentTypeError(
            f"Unknown cache policy {_shown(text)}: use never, image, every:N (N images, 1 or more) "
            "or reserved:F (a share of the device between 0 and 1, e.g. reserved:0.5)"
        )
    return policy


def _filter_arg(text: str) -> str:
    if len(text) > MAX_TEXT or "\0" in text:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a filter (too long)")
    return text


def speed_settings(args: argparse.Namespace) -> dict:
    """RunConfig's batch, prefetch and threads settings from the options given (RunConfig's defaults
    for the rest, so the window and the command line share one set of defaults)."""
    from batchlens.core.run.config import EXACT_SETTINGS

    given = {"batch_size": args.batch_size, "prefetch": args.prefetch, "threads": args.threads}
    given = {key: value for key, value in given.items() if value is not None}
    if args.exact:
        if given:
            raise BatchLensError(f"--exact fixes {', '.join(sorted(given))}: give one or the other.")
        return dict(EXACT_SETTINGS)
    return given


def size_arg(text: str) -> tuple[int, int]:
    sides = [_whole(part, 1, MAX_SIDE) for part in text.lower().split("x")]
    if len(sides) != 2 or None in sides:
        raise argparse.ArgumentTypeError(
            f"{_shown(text)} is not WIDTHxHEIGHT (e.g. 1600x1200), each from 1 to {MAX_SIDE}"
        )
    return sides[0], sides[1]


def _add_speed_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prefetch",
        type=whole_number(0, MAX_PREFETCH),
        default=None,
        metavar="N",
        help="decode and preprocess the next N batches on background threads (default: 2, or on a quiet "
        "CPU each batch on every core in step with the model; 0: in the loop)",
    )
    parser.add_argument(
        "--threads",
        type=threads_arg,
        default=None,
        metavar="N|auto",
        help="torch CPU threads; default auto: sized with the decoding threads from the free cores",
    )
    parser.add_argument(
        "--exact",
        action="store_true",
        help="exactly a plain PyTorch loop: batch 1, decoding in the loop, torch's own threads "
        "(the defaults batch and prefetch, which changes scores only by float rounding)",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16", "bf16", "auto"),
        default="fp32",
        help="fp16/bf16 run the model under autocast (mixed precision); auto: fp16 on CUDA only if the "
        "first batch's outputs stay within tolerance of fp32 (summary.json says); default fp32",
    )
    parser.add_argument(
        "--fast-decode",
        action="store_true",
        help="classification: decode JPEGs at 1/2, 1/4 or 1/8 scale when the model shrinks them anyway, "
        "and resize on the uint8 tensor with torch's SIMD kernel (much less work per image; scores can "
        "differ slightly from the model's own preprocessing)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model first (the first batch takes longer; summary.json says how long)",
    )
    parser.add_argument(
        "--gpu-decode",
        action="store_true",
        help="classification: decode JPEGs in batches on the GPU (nvJPEG) and preprocess them there; "
        "other files are decoded on the CPU as usual",
    )


_seconds = finite_float(0, MAX_SECONDS, "a number of seconds", above_low=True)
