"""Every command-line option has a type and a range (cli/args.py): whatever value a user types, the
command line either takes it (finite, within the bounds docs/cli.md lists) or refuses it with one
sentence and exit 2, never a traceback. Parse-level, so fast; two subprocess runs check the real thing."""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchlens.cli import main
from batchlens.cli.args import build_parser, check_args
from batchlens.core.errors import BatchLensError
from tests.helpers import assert_no_traceback

BASES = {
    "run": ["run", "--model", "demo-shapes", "--input", "in", "--output", "out"],
    "bench": ["bench", "--model", "demo-shapes", "--synthetic", "2"],
    "models": ["models"],
    "sort": ["sort", "run-folder", "--into", "sorted"],
    "evaluate": ["evaluate", "run-folder"],
    "export": ["export", "run-folder", "--format", "csv", "--to", "out.csv"],
    None: [],  # the window's options
}


def _subparsers(parser: argparse.ArgumentParser) -> dict:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def options_with_values() -> list[tuple[str | None, argparse.Action]]:
    """(command, option) for every option that takes a value, found in the parser itself, so a new
    option is tested (and held to having a type) without a change here."""
    parser = build_parser()
    found = []
    for command, sub in [(None, parser), *_subparsers(parser).items()]:
        for action in sub._actions:
            if action.option_strings and action.nargs != 0 and action.dest != "help":
                found.append((command, action))
    return found


OPTIONS = options_with_values()


def test_every_option_that_takes_a_value_has_a_type_or_choices():
    assert len(OPTIONS) > 35  # the walk found the options of every command
    untyped = [a.option_strings[0] for _, a in OPTIONS if a.type is None and a.choices is None]
    assert not untyped, f"options parsed as raw text: {untyped}"
    # the one positional, `batchlens models FILTER`, is typed too
    models = _subparsers(build_parser())["models"]
    assert all(a.type is not None for a in models._actions if not a.option_strings and a.dest != "help")


NASTY = st.sampled_from(
    [
        "inf", "-inf", "nan", "NaN", "1e300", "-1e300", "1e-300", "-1", "0", "-0", "0.0", "", " ", "1_000",
        "auto", "1,2", "1,2,3,4,5", "3x4", "0x4", "99999", "every:0", "every:3", "reserved:1.5",
        "reserved:0.5", "image", "9" * 5000, "a\0b", "\n", "١٢",
    ]
)  # fmt: skip
VALUES = st.one_of(
    NASTY,
    st.text(max_size=24),
    st.floats().map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.lists(st.floats(), min_size=1, max_size=5).map(lambda xs: ",".join(map(repr, xs))),
)


def parse(argv: list[str]) -> tuple[argparse.Namespace | None, int | None, str]:
    """(args, exit code, stderr) as the command line's main() gets them before it runs anything."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            args = build_parser().parse_args(argv)
            check_args(args)
        except SystemExit as exc:
            return None, exc.code, err.getvalue()
        except BatchLensError as exc:  # main(): "batchlens: <sentence>", exit 2
            return None, 2, f"batchlens: {exc}\n"
    return args, None, err.getvalue()


CAN_BE_ZERO = {"--prefetch", "--min-score"}
CAN_BE_NEGATIVE = {"--mean"}


def _numbers(value) -> list:
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


@settings(max_examples=600, deadline=None, database=None)  # no .hypothesis/ in the checkout
@given(option=st.sampled_from(OPTIONS), value=VALUES)
def test_any_value_is_taken_within_bounds_or_refused_in_one_sentence(option, value):
    command, action = option
    flag = action.option_strings[-1]
    args, code, err = parse([*BASES[command], f"{flag}={value}"])
    assert "Traceback" not in err
    if args is None:
        assert code == 2, (flag, value, code, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("batchlens"), (flag, value, err)
        assert lines[0].endswith("."), lines[0]
        return
    taken = getattr(args, action.dest)
    for number in _numbers(taken):  # every number taken is finite, bounded, and positive where it must be
        assert math.isfinite(number) and abs(number) <= 10**10, (flag, value, taken)
        assert number > 0 or flag in CAN_BE_ZERO or flag in CAN_BE_NEGATIVE, (flag, value, taken)
        assert number >= 0 or flag in CAN_BE_NEGATIVE, (flag, value, taken)
    if isinstance(taken, Path):
        assert "\0" not in str(taken) and str(taken).strip()


@pytest.mark.parametrize(
    "option",
    [
        "--image-timeout=inf",
        "--image-timeout=nan",
        "--image-timeout=1e300",
        "--image-timeout=-1",
        "--image-timeout=0",
        "--max-pixels=-1",
        "--max-pixels=0",
        "--max-failures=0",
        "--prefetch=-1",
        "--batch-size=0",
        "--threads=0",
        "--min-score=nan",
        "--min-score=1.5",
        "--std=0,1,1",
        "--mean=inf",
        "--input-size=0",
        "--resize=100000",
        "--empty-cache=reserved:1",
        "--workers=0",
    ],
)
def test_values_the_issue_named_are_refused(option):
    args, code, err = parse([*BASES["run"], option])
    assert args is None and code == 2 and option.split("=")[0] in err, err


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--image-timeout=0.5", 0.5),
        ("--image-timeout=604800", 604800.0),
        ("--max-pixels=150000000", 150_000_000),
        ("--batch-size=auto", "auto"),
        ("--threads=auto", "auto"),
        ("--prefetch=0", 0),
        ("--resize=256", 256),
        ("--input-size=480,640", [480, 640]),
        ("--mean=0.485,0.456,0.406", [0.485, 0.456, 0.406]),
        ("--empty-cache=Every:4", "every:4"),
        ("--empty-cache=reserved:0.5", "reserved:0.5"),
    ],
)
def test_values_in_range_are_taken(option, value):
    args, code, err = parse([*BASES["run"], option])
    assert code is None and not err
    name, _ = option.split("=")
    assert getattr(args, name[2:].replace("-", "_")) == value


def test_options_that_exclude_each_other_are_refused_before_the_run():
    for extra, words in [
        (["--exact", "--batch-size", "4"], "--exact fixes batch_size"),
        (["--resume", "--overwrite"], "not both"),
        (["--workers", "2"], "--workers needs --cluster"),
    ]:
        args, code, err = parse([*BASES["run"], *extra])
        assert code == 2 and words in err, err


@pytest.mark.parametrize(
    ("model", "options", "words"),
    [
        ("demo-shapes", ["--mean", "0.5", "--std", "0.2"], "--mean and --std do not apply to demo-shapes"),
        ("demo-denoise", ["--resize", "64"], "--resize does not apply to demo-denoise"),
        ("resnet18", ["--crop", "224", "--interpolation", "bicubic"], "--crop and --interpolation do not"),
        ("resnet18", ["--arch", "resnet50"], "--arch does not apply to resnet18"),
    ],
)
def test_an_option_that_does_not_apply_to_the_model_is_refused_not_ignored(
    tmp_path: Path, capsys, model, options, words
):
    (tmp_path / "in").mkdir()
    argv = ["run", "--model", model, "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]
    assert main([*argv, *options]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()  # refused before any download or folder


def test_model_file_options_still_apply_to_model_files_and_torchvision_state_dicts(tmp_path: Path):
    from batchlens.core.models import refuse_options_that_do_not_apply

    model_file = tmp_path / "net.pt"
    model_file.write_bytes(b"not read here")
    refuse_options_that_do_not_apply(str(model_file), {"mean": [0.5], "std": [0.2], "arch": "resnet18"})
    refuse_options_that_do_not_apply("resnet18", {"weights": str(model_file), "resize": 256})
    with pytest.raises(BatchLensError, match="--arch does not apply"):
        refuse_options_that_do_not_apply("resnet18", {"weights": str(model_file), "arch": "resnet50"})


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "batchlens", *args], capture_output=True, text=True, timeout=120
    )


def test_the_real_command_line_refuses_inf_and_1e300_in_one_sentence(tmp_path: Path):
    base = ["run", "--model", "demo-shapes", "--input", str(tmp_path), "--output", str(tmp_path / "o")]
    for value in ("inf", "1e300"):
        result = _run(*base, "--image-timeout", value)
        assert_no_traceback(result)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "--image-timeout" in result.stderr
        assert "604800" in result.stderr
        assert not (tmp_path / "o").exists()


def test_every_bounded_option_is_in_the_ranges_table_of_the_cli_page():
    from batchlens.cli.args import path_arg, text_arg

    text = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text(encoding="utf-8")
    table = text.split("## Ranges", 1)[1].split("\n\n", 3)[2]
    bounded = {
        a.option_strings[-1] for _, a in OPTIONS if a.type not in (text_arg, path_arg) and not a.choices
    }
    assert len(bounded) > 15
    missing = sorted(flag for flag in bounded if f"`{flag}" not in table and f"{flag}`" not in table)
    assert not missing, f"docs/cli.md's Ranges table does not give: {missing}"
