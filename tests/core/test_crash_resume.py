"""Crash safety: a real `batchlens run` killed with SIGKILL part-way, then resumed, ends exactly like an
uninterrupted run; a full disk (OSError ENOSPC injected where bytes hit the disk) stops the run with a
clear message and leaves only valid files; the input folder is never touched."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from batchlens import cli
from batchlens.core.errors import BatchLensError
from batchlens.core.outputs.results import ResultsWriter
from batchlens.core.run.config import RunConfig
from batchlens.core.run.runner import Runner
from tests.helpers import make_denoise_folder

N_IMAGES = 12


def snapshot(folder: Path) -> dict[str, tuple[str, int, int]]:
    """Every entry under `folder`: content hash, modification time (ns) and mode. Links not followed."""
    state = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        state[path.relative_to(folder).as_posix()] = (digest, st.st_mtime_ns, st.st_mode)
    return state


def records(out: Path) -> list[dict]:
    text = (out / "predictions.jsonl").read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def comparable(out: Path) -> tuple[list[dict], dict[str, str]]:
    """The run's results without timings and memory peaks, and every other file's hash (summary.json
    aside)."""
    measured = ("seconds", "peak_memory_bytes")
    rows = [{k: v for k, v in row.items() if k not in measured} for row in records(out)]
    files = {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in ("predictions.jsonl", "summary.json", "run.json")  # run.json: dates
    }
    return rows, files


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    make_denoise_folder(folder, N_IMAGES - 3, size=64)
    make_denoise_folder(folder / "sub folder", 3, seed=7, size=64)
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return folder


def batchlens_run(photos: Path, out: Path, *extra: str) -> subprocess.Popen:
    args = ["run", "--model", "demo-denoise", "--input", str(photos), "--output", str(out)]
    return subprocess.Popen(
        [sys.executable, "-m", "batchlens", *args, "--device", "cpu", "--recursive", "--no-progress", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_then_resume_equals_an_uninterrupted_run(photos: Path, tmp_path: Path):
    before = snapshot(photos)
    reference = tmp_path / "reference"
    list(Runner(RunConfig("demo-denoise", photos, reference, device="cpu", recursive=True)).events())

    out = tmp_path / "out"
    proc = batchlens_run(photos, out)
    jsonl = out / "predictions.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if jsonl.exists() and jsonl.read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done_when_killed = jsonl.read_bytes().count(b"\n")
    assert 3 <= done_when_killed < N_IMAGES, "the run was not killed part-way"
    assert not (out / "summary.json").exists()

    resumed = batchlens_run(photos, out, "--resume")
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert f"{done_when_killed} already done" in stdout

    rows = records(out)
    assert len(rows) == N_IMAGES and len({row["image"] for row in rows}) == N_IMAGES  # none lost, none twice
    assert all(row["status"] == "ok" for row in rows)
    assert comparable(out) == comparable(reference)  # same lines in the same order, same output bytes
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["already_done"] == done_when_killed
    assert summary["counts"]["ok"] == N_IMAGES - done_when_killed
    assert snapshot(photos) == before  # the input folder: same files, bytes, mtimes and modes


def test_resume_drops_a_partial_last_line_and_stale_temporary_files(photos: Path, tmp_path: Path):
    out = tmp_path / "out"
    cfg = RunConfig("demo-denoise", photos, out, device="cpu", recursive=True)
    list(Runner(cfg).events())
    reference = comparable(out)
    lines = (out / "predictions.jsonl").read_bytes().splitlines(keepends=True)
    # As a kill leaves it: the last image's line cut in half, its output half-written under a temp name.
    (out / "predictions.jsonl").write_bytes(b"".join(lines[:-1]) + lines[-1][:25])
    last = json.loads(lines[-1])
    written = out / last["output"]
    written.rename(written.with_name(".batchlens-12345-0123abcd.tmp"))  # results.TEMP_NAME

    events = list(Runner(RunConfig("demo-denoise", photos, out, "cpu", recursive=True, resume=True)).events())
    assert events[0].total == 1 and events[0].already_done == N_IMAGES - 1
    assert comparable(out) == reference
    assert not list(out.rglob("*.tmp"))


def _enospc_after(calls: int, partial: bool):
    """A write function that works `calls` times, then writes part of its data and raises ENOSPC."""
    state = {"n": 0}
    real = ResultsWriter._write_all

    def write_all(self, data: bytes) -> None:
        state["n"] += 1
        if state["n"] > calls:
            if partial:
                real(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(self, data)

    return write_all


def test_disk_full_while_writing_a_line_stops_cleanly_then_resume_finishes(
    photos: Path, tmp_path: Path, monkeypatch
):
    before = snapshot(photos)
    out = tmp_path / "out"
    monkeypatch.setattr(ResultsWriter, "_write_all", _enospc_after(5, partial=True))
    with pytest.raises(BatchLensError) as info:
        list(Runner(RunConfig("demo-denoise", photos, out, device="cpu", recursive=True)).events())
    assert str(info.value).startswith(f"The disk holding the output folder {out} is full")
    assert "Everything written so far is complete and valid" in str(info.value)
    assert "--resume" in str(info.value)
    rows = records(out)  # whole lines only: the half-written sixth line was cut off again
    assert len(rows) == 5 and all(row["status"] == "ok" for row in rows)
    for row in rows:
        with Image.open(out / row["output"]) as im:
            im.load()  # every output named in the file is complete
    assert not list(out.rglob("*.tmp"))

    monkeypatch.undo()  # space was freed
    list(Runner(RunConfig("demo-denoise", photos, out, "cpu", recursive=True, resume=True)).events())
    rows = records(out)
    assert len(rows) == N_IMAGES and len({row["image"] for row in rows}) == N_IMAGES
    assert snapshot(photos) == before


def test_disk_full_while_writing_an_output_image(photos: Path, tmp_path: Path, monkeypatch, capsys):
    out = tmp_path / "out"
    real_save = Image.Image.save
    saves = {"n": 0}

    def save(self, fp, *args, **kwargs):
        saves["n"] += 1
        if saves["n"] > 3:
            fp.write(b"\x89PNG\r\n\x1a\n half of it")  # what a full disk leaves behind
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    argv = ["run", "--model", "demo-denoise", "--input", str(photos), "--output", str(out)]
    code = cli.main([*argv, "--device", "cpu", "--recursive", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"batchlens: The disk holding the output folder {out} is full (no space left on device)" in err
    assert "Traceback" not in err
    rows = records(out)
    assert len(rows) == 3  # the images before the failure; the failing one is not claimed
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == sorted(
        row["output"] for row in rows
    )  # no partial output under its real name, no temporary file left
    assert not list(out.rglob("*.tmp"))


def test_output_folder_that_stops_being_writable(photos: Path, tmp_path: Path, monkeypatch):
    real = ResultsWriter._write_all
    calls = {"n": 0}

    def read_only(self, data):
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        real(self, data)

    monkeypatch.setattr(ResultsWriter, "_write_all", read_only)
    out = tmp_path / "out"
    with pytest.raises(
        BatchLensError, match="is no longer writable .Read-only file system., so the run stopped"
    ):
        list(Runner(RunConfig("demo-denoise", photos, out, device="cpu", recursive=True)).events())
    assert len(records(out)) == 2


def test_output_folder_that_cannot_be_created(photos: Path, tmp_path: Path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(BatchLensError, match="Cannot write to the output folder"):
        list(Runner(RunConfig("demo-denoise", photos, blocker / "out", device="cpu")).events())
