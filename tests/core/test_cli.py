"""`batchlens` as a user runs it: a real subprocess, real files, exit codes and messages (the run-level
refusals in this process too, one of them also through a real process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import assert_no_traceback


def batchlens(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "batchlens", *args], capture_output=True, text=True, timeout=300
    )
    assert_no_traceback(result)
    return result


def test_models_lists_demos():
    result = batchlens("models")
    assert result.returncode == 0
    assert "demo-shapes" in result.stdout and "classification" in result.stdout
    assert "demo-denoise" in result.stdout and "image_to_image" in result.stdout


def test_run_end_to_end_with_a_corrupt_and_a_non_image_file(shapes_folder: Path, tmp_path: Path):
    good = (shapes_folder / "shape_0001.png").read_bytes()
    (shapes_folder / "cut.png").write_bytes(good[:200])
    (shapes_folder / "page.jpg").write_text("<!DOCTYPE html><html><body>saved web page</body></html>")
    out = tmp_path / "out"
    result = batchlens(
        "run",
        "--model",
        "demo-shapes",
        "--input",
        str(shapes_folder),
        "--output",
        str(out),
        "--device",
        "cpu",
    )
    assert result.returncode == 0, result.stderr
    assert "Finished: 12 image(s) ok, 2 failed" in result.stdout
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 14
    errors = {line["image"]: line["error"] for line in lines if line["status"] == "error"}
    assert set(errors) == {"cut.png", "page.jpg"}
    assert "cut.png" in errors["cut.png"] and "truncated" in errors["cut.png"]
    assert "HTML" in errors["page.jpg"]
    assert "error: page.jpg" in result.stderr  # reported as it happens, not only in the file
    assert json.loads((out / "summary.json").read_text())["counts"]["ok"] == 12


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "nope"], "Unknown model 'nope'"),
        (["--input", "/no/such/folder"], "does not exist"),
        (["--output", "/proc/version/out"], "Cannot write to the output folder"),
        pytest.param(
            ["--device", "cuda"],
            "no usable CUDA GPU",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA"),
        ),
    ],
)
def test_run_level_problems_exit_nonzero_with_one_sentence(
    shapes_folder: Path, tmp_path: Path, args, message, capsys
):
    """`main()` in this process (a subprocess each costs a torch import); the real process's way out
    is the next test's."""
    from batchlens.cli import main

    base = {
        "--model": "demo-shapes",
        "--input": str(shapes_folder),
        "--output": str(tmp_path / "o"),
        "--device": "cpu",
    }
    base.update(dict(zip(args[::2], args[1::2])))
    assert main(["run", *[x for kv in base.items() for x in kv]]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_run_level_problem_is_the_real_process_exit_code_2(shapes_folder: Path, tmp_path: Path):
    result = batchlens(
        "run", "--model", "nope", "--input", str(shapes_folder), "--output", str(tmp_path / "o")
    )
    assert result.returncode == 2
    assert "Unknown model 'nope'" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_run_takes_the_imported_objects_out_of_the_collectors_way(shapes_folder: Path, tmp_path: Path):
    # A full collection walks every tracked object (150-190 ms with torch imported, GIL held); after
    # `batchlens run` the import-time objects are frozen and the collector tracks only a few.
    script = (
        "import gc, sys; from batchlens.cli import main; "
        f"code = main(['run', '--model', 'demo-shapes', '--input', {str(shapes_folder)!r}, "
        f"'--output', {str(tmp_path / 'out')!r}, '--device', 'cpu']); "
        "print(code, gc.get_freeze_count(), len(gc.get_objects()))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    code, frozen, tracked = map(int, result.stdout.split()[-3:])
    assert code == 0
    assert frozen > 100_000  # torch and torchvision alone make ~340,000
    assert tracked < frozen / 10


def test_a_folder_without_images_is_one_sentence_that_says_where_it_looked(tmp_path: Path, capsys):
    """Once a run over an empty folder wrote an empty predictions.jsonl and exited 0."""
    from batchlens.cli import main
    from tests.helpers import make_shapes_folder

    folder = tmp_path / "photos"
    make_shapes_folder(folder / "2024", 2)
    make_shapes_folder(folder / "2025", 1)
    (folder / "notes.txt").write_text("not an image")
    base = ["run", "--model", "demo-shapes", "--input", str(folder), "--device", "cpu", "--no-progress"]
    result = batchlens(*base, "--output", str(tmp_path / "a"))
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"batchlens: There are no images in {folder} itself (1 other file skipped), but 2 of its "
        "subfolders hold images: add --recursive to include them.\n"
    )
    assert not (tmp_path / "a" / "predictions.jsonl").exists()
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    for extra, words in [
        ([], f"There are no images in {empty}; only its own files were looked at (--recursive also"),
        (["--recursive"], f"There are no images in {empty} or its subfolders."),
    ]:
        argv = [*base[:4], str(empty), *base[5:], "--output", str(tmp_path / "b"), *extra]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "b" / "predictions.jsonl").exists()
