"""`batchlens sort`, `batchlens evaluate` and `batchlens export`: what comes after a run
(docs/after-the-run.md). The parser part imports no torch; each command imports its engine module."""

from __future__ import annotations

import argparse
import sys

from batchlens.cli.option_types import finite_float, path_arg, text_arg
from batchlens.core.terminal import printable

_min_score = finite_float(0, 1, "a score")


def add_after_run_commands(sub) -> None:
    """The three subcommands, added to the parser's subparsers."""
    sort = sub.add_parser(
        "sort",
        help="put a run's images into folders by label (copies by default; --undo reverses it)",
        description="Classification: DIR/LABEL/<path under the input>, a top-1 score below --min-score in "
        "DIR/unsure/, a failed image in DIR/failed/. Detection: DIR/LABEL/ for every label with a box at or "
        "above --min-score, DIR/empty/ for none. Reviewed labels override the model. Never overwrites.",
    )
    sort.add_argument("run", nargs="?", type=path_arg, metavar="RUN", help="the output folder of a run")
    sort.add_argument("--into", type=path_arg, metavar="DIR", help="the folder to sort into")
    sort.add_argument("--min-score", type=_min_score, default=0.0, metavar="S", help="(default 0)")
    mode = sort.add_mutually_exclusive_group()
    for name, words in (
        ("copy", "copy the images (the default; the input stays as it is)"),
        ("link", "make symbolic links to the images instead of copies"),
        ("move", "move the images out of the input folder"),
    ):
        mode.add_argument(f"--{name}", dest="mode", action="store_const", const=name, help=words)
    sort.add_argument(
        "--input", type=path_arg, metavar="DIR", help="where the input images are now, if moved"
    )
    sort.add_argument("--dry-run", action="store_true", help="only print the counts per folder")
    sort.add_argument("--undo", type=path_arg, metavar="DIR", help="reverse the sort done into DIR")
    sort.set_defaults(mode="copy")

    evaluate = sub.add_parser("evaluate", help="measure a run against the true labels (evaluation.json)")
    evaluate.add_argument("run", type=path_arg, metavar="RUN", help="the output folder of a run")
    evaluate.add_argument(
        "--truth",
        type=text_arg,
        default=None,
        metavar="folders|reviews|FILE.csv|COCO.json|MASK_DIR",
        help="folders (the default): each image's first folder under the input is its label; reviews: "
        "your reviewed labels; a CSV of image,label; a COCO JSON (detection); a folder of masks "
        "(segmentation)",
    )

    export = sub.add_parser("export", help="write a run's results as CSV, COCO JSON or YOLO")
    export.add_argument("run", type=path_arg, metavar="RUN", help="the output folder of a run")
    export.add_argument("--format", required=True, choices=("csv", "coco", "yolo"))
    export.add_argument(
        "--to", required=True, type=path_arg, metavar="PATH", help="a new file (csv, coco) or folder"
    )
    export.add_argument("--reviewed", action="store_true", help="COCO, YOLO: with the reviews applied")
    export.add_argument(
        "--min-score", type=_min_score, default=0.0, metavar="S", help="detection: leave out boxes below S"
    )


def sort_command(args: argparse.Namespace) -> int:
    from batchlens.core.outputs.sorting import do_sort, plan_sort, plan_text, undo_sort

    if args.undo is not None:
        if args.run is not None or args.into is not None:
            print("batchlens sort: --undo DIR takes no RUN and no --into.", file=sys.stderr)
            return 2
        done = undo_sort(args.undo)
        kept = f"; left {len(done.kept)} in place: " + ", ".join(done.kept[:3]) if done.kept else ""
        print(
            printable(
                f"Undone: removed {done.removed:,} copies or links, moved {done.moved_back:,} back{kept}."
            )
        )
        return 0
    if args.run is None or args.into is None:
        print("batchlens sort: give RUN --into DIR (or --undo DIR).", file=sys.stderr)
        return 2
    plan = plan_sort(args.run, args.into, args.min_score, args.mode, args.input)
    for line in plan_text(plan).splitlines():
        print(printable(line))
    if args.dry_run:
        return 0
    done = do_sort(plan)
    print(printable(f"Done: {sum(done.values()):,} placed; the log is {plan.into / 'sort-log.jsonl'}."))
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    from batchlens.core.outputs.evaluation import evaluate, headline

    result = evaluate(args.run, args.truth)
    report = result.report
    print(printable(headline(report)))
    if result.without_truth:
        print(f"{result.without_truth:,} image(s) have no true label and are not counted.")
    print(printable("Wrote " + ", ".join(str(p) for p in result.files) + "."))
    return 0


def export_command(args: argparse.Namespace) -> int:
    from batchlens.core.outputs.export import export

    files = export(args.run, args.format, args.to, args.reviewed, args.min_score)
    where = args.to if len(files) > 1 else files[0]
    print(printable(f"Wrote {len(files):,} file(s) to {where}."))
    return 0


def _one_sentence(command):
    """A file that cannot be read or written (a read-only folder, a full disk) is one sentence, exit 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except OSError as exc:
            path = exc.filename2 or exc.filename  # os.replace: the second is the file being written
            where = f"{path}: " if path else ""
            words = f"{where}{exc.strerror or exc}; check that the folder can be written and has room."
            print(printable(f"batchlens {args.command}: {words}"), file=sys.stderr)
            return 2

    return run


AFTER_RUN_COMMANDS = {
    "sort": _one_sentence(sort_command),
    "evaluate": _one_sentence(evaluate_command),
    "export": _one_sentence(export_command),
}
