"""Results are never mixed, lost or deleted, and one file never stops a run (issue 12, points 2, 6-12,
14). Each test builds its hostile folder itself and checks what a user would: the exit code, one
sentence without a traceback, predictions.jsonl as strict JSON with one line per image, the input
folder byte for byte, and nothing written outside the output folder.

Runs go through `batchlens.cli.main` in this process (fast); the lock is tested with two real
processes."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from batchlens.cli import main as cli_main
from batchlens.core.errors import BatchLensError
from batchlens.core.files import output_rel
from batchlens.core.outputs.manifest import model_sha256
from batchlens.core.outputs.runlock import RunLock
from tests.helpers import make_denoise_folder, make_shapes_folder


def tree(folder: Path) -> dict[bytes, str]:
    """Every file under `folder` (bytes names: some are not UTF-8) and its content hash."""
    state = {}
    for top, _, files in os.walk(os.fsencode(folder)):
        for name in files:
            path = os.path.join(top, name)
            with open(path, "rb") as f:
                state[os.path.relpath(path, os.fsencode(folder))] = hashlib.sha256(f.read()).hexdigest()
    return state


def strict_lines(out: Path) -> list[dict]:
    """predictions.jsonl as a strict reader sees it: UTF-8, whole lines, no NaN or infinity."""

    def refuse(name):
        raise AssertionError(f"{name} in predictions.jsonl")

    text = (out / "predictions.jsonl").read_bytes().decode("utf-8")
    assert text == "" or text.endswith("\n")
    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


def run(capsys, *args: str) -> tuple[int, str]:
    """`batchlens run ARGS` in this process: (exit code, stdout + stderr). Never a traceback."""
    code = cli_main(["run", "--device", "cpu", "--no-progress", *map(str, args)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.out + captured.err


def refusal(err: str) -> str:
    """The one `batchlens:` sentence of a refused run."""
    lines = [line for line in err.splitlines() if line.startswith("batchlens: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def shapes(tmp_path: Path) -> Path:
    folder = tmp_path / "shapes"
    make_shapes_folder(folder, 4, size=48)
    return folder


@pytest.fixture
def noisy(tmp_path: Path) -> Path:
    folder = tmp_path / "noisy"
    make_denoise_folder(folder, 3, size=32)
    return folder


def scripted(path: Path, module: torch.nn.Module, sidecar: dict) -> Path:
    torch.jit.save(torch.jit.script(module), str(path))
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    return path


class MeanLogits(torch.nn.Module):
    """Three "class scores" from an image's channel means: a tiny real classifier."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x.mean((2, 3)) * self.scale


class NanLogits(torch.nn.Module):
    def forward(self, x):
        return x.mean((2, 3)) * float("nan")


class FirstRowOnly(torch.nn.Module):
    def forward(self, x):
        return x.mean((2, 3))[:1]


class NanInSecondRow(torch.nn.Module):
    def forward(self, x):
        logits = x.mean((2, 3))
        if logits.shape[0] > 1:
            logits[1] = float("nan")
        return logits


class NoRows(torch.nn.Module):
    def forward(self, x):
        return x.mean((2, 3))[:0]


# -- 2: stale temporary files ------------------------------------------------------------------


def test_resume_cleans_only_its_own_temp_files_and_never_inside_the_input(tmp_path: Path, capsys):
    out = tmp_path / "results"
    photos = out / "in"  # the output folder is the parent of the input folder
    make_shapes_folder(photos, 3, size=48)
    (photos / ".draft.20240101.tmp").write_bytes(b"the user's draft")
    (photos / ".batchlens-4242-0123abcd.tmp").write_bytes(b"even our pattern: never in the input")
    before = tree(photos)
    assert run(capsys, "--model", "demo-shapes", "--input", photos, "--output", out)[0] == 0
    (out / ".notes.2024.tmp").write_bytes(b"the user's, in the output folder")
    (out / ".batchlens-99999-0123abcd.tmp").write_bytes(b"left by a killed run")

    assert run(capsys, "--model", "demo-shapes", "--input", photos, "--output", out, "--resume")[0] == 0

    assert tree(photos) == before
    assert (out / ".notes.2024.tmp").read_bytes() == b"the user's, in the output folder"
    assert not (out / ".batchlens-99999-0123abcd.tmp").exists()


def test_an_output_never_lands_inside_the_input_folder(tmp_path: Path, capsys):
    out = tmp_path / "results"
    photos = out / "in"  # inside the output folder, with a subfolder named like it
    make_denoise_folder(photos, 1, size=32)
    make_denoise_folder(photos / "in", 1, seed=5, size=32)  # its output would be photos/noisy_0000.png
    before = tree(photos)

    code, said = run(capsys, "--model", "demo-denoise", "--input", photos, "--output", out, "--recursive")

    assert code == 0
    assert tree(photos) == before
    lines = {line["image"]: line for line in strict_lines(out)}
    assert lines["noisy_0000.png"]["status"] == "ok"
    assert lines["in/noisy_0000.png"]["status"] == "error"
    assert "would land inside the input folder" in lines["in/noisy_0000.png"]["error"]


# -- 6: run.json and resume refusals -----------------------------------------------------------


def test_run_json_records_what_made_the_folder(shapes: Path, tmp_path: Path, capsys):
    model = scripted(tmp_path / "mean.pt", MeanLogits(), {"task": "classification", "input_size": [8, 8]})
    out = tmp_path / "out"
    assert run(capsys, "--model", model, "--input", shapes, "--output", out, "--precision", "fp32")[0] == 0
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert manifest["model_file"] == str(model.resolve())
    assert manifest["task"] == "classification"
    assert manifest["input"] == str(shapes.resolve())
    assert manifest["preprocessing"]["resize"] == [8, 8]
    assert manifest["options"]["precision"] == "fp32" and manifest["options"]["fast_decode"] is False
    assert manifest["versions"]["torch"] == torch.__version__
    assert manifest["created_at"]


@pytest.mark.parametrize("change", ["model", "model file", "preprocessing", "input folder", "options"])
def test_resume_into_another_run_is_refused_naming_both(change, shapes: Path, tmp_path: Path, capsys):
    model = scripted(tmp_path / "mean.pt", MeanLogits(), {"task": "classification", "input_size": [8, 8]})
    out = tmp_path / "out"
    assert run(capsys, "--model", model, "--input", shapes, "--output", out)[0] == 0
    before = tree(out)
    args = ["--model", model, "--input", shapes, "--output", out, "--resume"]
    if change == "model":
        args[1] = "demo-shapes"
    elif change == "model file":  # the same path, other weights
        scripted(model, MeanLogits(scale=2.0), {"task": "classification", "input_size": [8, 8]})
    elif change == "preprocessing":
        model.with_suffix(".json").write_text(json.dumps({"task": "classification", "input_size": [16, 16]}))
    elif change == "input folder":
        other = tmp_path / "other"
        make_shapes_folder(other, 2, size=48)
        args[3] = other
    else:
        args += ["--fast-decode"]

    code, err = run(capsys, *args)

    sentence = refusal(err)
    assert code == 2
    assert f"whose {change} differs" in sentence and "there" in sentence and "now" in sentence
    assert "--overwrite" in sentence
    assert tree(out) == before  # byte for byte, and no lock left behind


def test_resume_of_the_same_run_is_allowed(shapes: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert run(capsys, "--model", "demo-shapes", "--input", shapes, "--output", out)[0] == 0
    code, said = run(capsys, "--model", "demo-shapes", "--input", shapes, "--output", out, "--resume")
    assert code == 0
    assert "over 0 image(s), 4 already done" in said
    assert len(strict_lines(out)) == 4
    assert len(json.loads((out / "run.json").read_text())["resumed_at"]) == 1


def test_a_model_folder_is_hashed_by_its_files(tmp_path: Path):
    folder = tmp_path / "hf-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights one")
    first = model_sha256(folder)
    (folder / "model.safetensors").write_bytes(b"weights two")
    assert model_sha256(folder) not in (first, None)
    assert model_sha256(tmp_path) is None  # not a model folder: nothing to hash


# -- 7: a folder that holds a run -----------------------------------------------------------------


def test_a_plain_run_into_a_folder_with_a_run_is_refused(noisy: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert run(capsys, "--model", "demo-denoise", "--input", noisy, "--output", out)[0] == 0
    before = tree(out)

    code, err = run(capsys, "--model", "demo-shapes", "--input", noisy, "--output", out)

    assert code == 2
    sentence = refusal(err)
    assert sentence.startswith(f"batchlens: {out} already holds a run of demo-denoise (3 image(s), ")
    assert sentence.endswith("use --resume to continue it, --overwrite to replace it, or another folder.")
    assert tree(out) == before


@pytest.mark.parametrize("old_batchlens", [False, True], ids=["with run.json", "without run.json"])
def test_overwrite_replaces_the_old_run_whole_and_nothing_else(old_batchlens, noisy, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(capsys, "--model", "demo-denoise", "--input", noisy, "--output", out)[0] == 0
    denoised = [line["output"] for line in strict_lines(out)]
    assert len(denoised) == 3 and all((out / name).is_file() for name in denoised)
    if old_batchlens:
        (out / "run.json").unlink()  # as an older BatchLens left it
    # The user's own files in the output folder, one named like an output but no line's output.
    (out / "my notes.txt").write_text("mine")
    (out / "sub").mkdir()
    (out / "sub" / "noisy_0000.png").write_bytes(b"mine too")
    (out / "unlisted.png").write_bytes(b"not in any line")
    # A forged line pointing at the input folder: it proves nothing, so nothing of it is deleted.
    forged = {"image": "noisy_0001.png", "status": "ok", "error": None, "seconds": 0.1}
    with open(out / "predictions.jsonl", "a") as f:
        f.write(json.dumps({**forged, "output": f"../{noisy.name}/noisy_0001.png"}) + "\n")
    inputs = tree(noisy)
    before = tree(out)

    code, err = run(capsys, "--model", "demo-shapes", "--input", noisy, "--output", out, "--overwrite")

    if old_batchlens:  # no run.json: not a BatchLens run BatchLens can prove it wrote (issue 24)
        assert code == 2
        assert refusal(err) == (
            f"batchlens: {out} holds no run.json, so it is not a BatchLens run and --overwrite deletes "
            "nothing in it: choose another output folder, or an empty one."
        )
        assert tree(out) == before and tree(noisy) == inputs
        return
    assert code == 0
    assert not any((out / name).exists() for name in denoised)  # no stale output of the old run
    assert (out / "my notes.txt").read_text() == "mine"
    assert (out / "sub" / "noisy_0000.png").read_bytes() == b"mine too"
    assert (out / "unlisted.png").read_bytes() == b"not in any line"
    assert tree(noisy) == inputs
    lines = strict_lines(out)
    assert len(lines) == 3 and all("top" in line for line in lines)
    assert json.loads((out / "run.json").read_text())["model"] == "demo-shapes"


# -- 8: one run at a time --------------------------------------------------------------------------


def test_a_second_process_on_the_same_folder_is_refused_and_a_dead_holder_is_taken_over(
    shapes: Path, tmp_path: Path
):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(  # a real run's lock, held by another live process
        [
            sys.executable,
            "-c",
            "import sys, time; from batchlens.core.outputs.runlock import RunLock; "
            f"lock = RunLock({str(out)!r}); lock.acquire(); print('held', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        command = [sys.executable, "-m", "batchlens", "run", "--model", "demo-shapes", "--input", str(shapes)]
        command += ["--output", str(out), "--device", "cpu", "--no-progress", "--resume"]
        second = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert "Traceback" not in second.stderr
        assert f"is in use by another BatchLens run (process {holder.pid} on " in second.stderr
        assert not (out / "predictions.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    # The holder died without releasing its lock (killed): the lock is stale and taken over.
    assert (out / ".batchlens.lock").exists()
    third = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stderr
    assert len(strict_lines(out)) == 4
    assert not (out / ".batchlens.lock").exists()


def write_lock(folder: Path, **holder) -> Path:
    lock = folder / ".batchlens.lock"
    lock.write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "started": time.time(), **holder}))
    return lock


def test_stale_and_foreign_locks(tmp_path: Path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    lock = write_lock(tmp_path, pid=int(gone.stdout))  # this host, the process is gone: stale
    with RunLock(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()  # released

    write_lock(tmp_path, pid=os.getpid(), started=time.time() - 10**6)  # the PID reused since: stale
    with RunLock(tmp_path):
        pass

    write_lock(tmp_path, pid=os.getpid(), host="another-host", started_at="2026-01-01T00:00:00+00:00")
    busy = r"in use by another BatchLens run \(process \d+ on another-host,"
    with pytest.raises(BatchLensError, match=busy):
        RunLock(tmp_path).acquire()  # its process cannot be checked from here: honoured

    lock.write_text("{half a lock")  # unreadable and old: a writer that died while writing it
    os.utime(lock, (time.time() - 60, time.time() - 60))
    with RunLock(tmp_path):
        pass


# -- 9: resume reads predictions.jsonl defensively ------------------------------------------------


def test_resume_sets_aside_lines_that_break_the_contract(shapes: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert run(capsys, "--model", "demo-shapes", "--input", shapes, "--output", out)[0] == 0
    good = (out / "predictions.jsonl").read_bytes().splitlines(keepends=True)
    ok0 = json.loads(good[0])
    hostile = [
        b"42\n",
        b"null\n",
        b"[1, 2]\n",
        b'{"image": "shape_0001.png"}\n',
        b'{"image": "caf\xe9.png", "status": "ok"}\n',  # not UTF-8
        json.dumps({**ok0, "image": "shape_0002.png", "top": "cat"}).encode() + b"\n",  # forged top
        json.dumps({**ok0, "image": "shape_0003.png", "top": [{"label": 1}]}).encode() + b"\n",
    ]
    (out / "predictions.jsonl").write_bytes(good[0] + good[0] + b"".join(hostile))  # 0 twice

    code, err = run(capsys, "--model", "demo-shapes", "--input", shapes, "--output", out, "--resume")

    assert code == 0
    assert "8 line(s) of predictions.jsonl broke the output contract" in err
    lines = strict_lines(out)
    assert [line["image"] for line in lines] == [f"shape_{i:04d}.png" for i in range(4)]  # one each
    assert all(line["status"] == "ok" and isinstance(line["top"], list) for line in lines)
    rejected = [json.loads(line) for line in (out / "predictions.rejected.jsonl").read_text().splitlines()]
    assert [base64.b64decode(r["bytes_b64"]) for r in rejected] == [good[0], *hostile]  # kept whole
    assert {r["reason"] for r in rejected} >= {"not UTF-8 text", "a second ok line for the same image"}
    csv = (out / "predictions.csv").read_text().splitlines()
    assert len(csv) == 5  # a header and one row per image


# -- 10, 11, 12: names -------------------------------------------------------------------------------


def test_output_names_never_collide(tmp_path: Path, capsys):
    photos = tmp_path / "in"
    make_denoise_folder(photos, 3, size=32)
    sources = sorted(photos.iterdir())
    sources[0].rename(photos / "a.jpg")  # PNG bytes: Pillow reads the content, not the name
    sources[1].rename(photos / "a.jpg.png")
    sources[2].rename(photos / "a.png")
    out = tmp_path / "out"
    assert run(capsys, "--model", "demo-denoise", "--input", photos, "--output", out)[0] == 0
    outputs = {line["image"]: line["output"] for line in strict_lines(out)}
    assert outputs == {"a.jpg": "a.jpg.png", "a.jpg.png": "a.jpg.png.png", "a.png": "a.png"}
    hashes = {hashlib.sha256((out / name).read_bytes()).hexdigest() for name in outputs.values()}
    assert len(hashes) == 3  # three images, three different outputs: none overwrote another


def test_a_name_that_is_not_utf8_is_recorded_losslessly_and_resumed(noisy: Path, tmp_path: Path, capsys):
    raw = os.fsencode(noisy) + b"/caf\xe9.png"
    try:
        os.rename(noisy / "noisy_0000.png", raw)
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    before = tree(noisy)
    out = tmp_path / "out"
    assert run(capsys, "--model", "demo-denoise", "--input", noisy, "--output", out)[0] == 0
    line = next(line for line in strict_lines(out) if "image_bytes_b64" in line)
    assert line["status"] == "ok"
    assert line["image"] == "caf\\xe9.png"  # the documented escaped form
    assert base64.b64decode(line["image_bytes_b64"]) == b"caf\xe9.png"
    assert os.path.isfile(os.fsencode(out) + b"/" + base64.b64decode(line["output_bytes_b64"]))

    code, said = run(capsys, "--model", "demo-denoise", "--input", noisy, "--output", out, "--resume")

    assert code == 0
    assert "over 0 image(s), 3 already done" in said
    assert len(strict_lines(out)) == 3
    assert tree(noisy) == before


def test_long_names_get_an_output_or_an_error_line_and_the_run_goes_on(noisy: Path, tmp_path: Path, capsys):
    long_png = "p" * 246 + ".png"  # 250 bytes: its temporary name used to pass the limit
    long_jpg = "j" * 250 + ".jpg"  # 254 bytes: + ".png" would pass it: a shortened name
    os.rename(noisy / "noisy_0000.png", noisy / long_png)
    os.rename(noisy / "noisy_0001.png", noisy / long_jpg)
    # A path that fits under the input folder but not under the longer output folder (PATH_MAX).
    deep = noisy / "/".join(["d" * 200] * 19)
    deep.mkdir(parents=True)
    (noisy / "noisy_0002.png").rename(deep / "deep.png")
    out = tmp_path / ("o" * 250)
    written = out / deep.relative_to(noisy) / "deep.png"
    assert len(os.fsencode(deep / "deep.png")) < 4096 < len(os.fsencode(written))

    code, err = run(capsys, "--model", "demo-denoise", "--input", noisy, "--output", out, "--recursive")

    assert code == 0
    lines = {line["image"]: line for line in strict_lines(out)}
    assert lines[long_png]["status"] == "ok" and lines[long_png]["output"] == long_png
    assert lines[long_jpg]["status"] == "ok" and lines[long_jpg]["output"] == output_rel(long_jpg)
    assert "~" in lines[long_jpg]["output"] and "shortened" in lines[long_jpg]["output_note"]
    deep_line = lines[f"{deep.relative_to(noisy).as_posix()}/deep.png"]
    assert deep_line["status"] == "error" and "its output file cannot be written" in deep_line["error"]
    assert f"error: {deep_line['error']}" in err

    again = ["--model", "demo-denoise", "--input", noisy, "--output", out, "--recursive", "--resume"]
    code, _ = run(capsys, *again)
    assert code == 0
    assert len(strict_lines(out)) == 3


# -- 14: NaN and missing rows ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "batch", "expected"),
    [
        (NanLogits(), "1", "the model produced NaN or infinity for it"),
        (NoRows(), "1", "it returned 0 result(s) for 1 image(s)"),
        (FirstRowOnly(), "4", None),  # rows missing from a batch: image by image, then all right
    ],
    ids=["nan", "no rows", "fewer rows"],
)
def test_a_model_giving_nan_or_too_few_rows_gives_lines_that_say_so(
    module, batch, expected, shapes, tmp_path, capsys
):
    model = scripted(tmp_path / "m.pt", module, {"task": "classification", "input_size": [8, 8]})
    out = tmp_path / "out"
    code, err = run(capsys, "--model", model, "--input", shapes, "--output", out, "--batch-size", batch)
    assert code == 0
    lines = strict_lines(out)
    assert len(lines) == 4
    if expected is None:
        assert all(line["status"] == "ok" for line in lines)
        assert "it returned 1 result(s) for 4 image(s)" in err
    else:
        assert all(line["status"] == "error" and expected in line["error"] for line in lines)
        assert "None" not in err


def test_nan_in_one_row_of_a_batch_fails_that_image_alone(shapes, tmp_path, capsys):
    """Classification reads a batch's scores at once: the image whose row is NaN gets the error line,
    the other images of the same batch keep their results."""
    model = scripted(tmp_path / "m.pt", NanInSecondRow(), {"task": "classification", "input_size": [8, 8]})
    out = tmp_path / "out"
    code, _ = run(capsys, "--model", model, "--input", shapes, "--output", out, "--batch-size", "4")
    assert code == 0
    lines = strict_lines(out)
    assert [line["status"] for line in lines] == ["ok", "error", "ok", "ok"]
    assert "the model produced NaN or infinity for it" in lines[1]["error"]
