"""Hostile input folders (issue 12, points 4 and 15): a named pipe called *.jpg never hangs a run, on
any path that opens inputs; file names with escape sequences never reach the terminal raw, while the
JSON results keep them exactly."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from batchlens.core.inputs.gpu_decode import DeviceDecoder
from batchlens.core.inputs.images import ImageError, decodes_reduced, header_size, load_image, open_input
from batchlens.core.terminal import PrintableFormatter, printable
from tests.core.hostile import within
from tests.core.modelkit import make_photos, read_jsonl, run_cli
from tests.helpers import assert_no_traceback


@pytest.fixture
def pipe(tmp_path: Path):
    """A named pipe called *.jpg in an image folder; after the test, a reader left blocked on it (a
    hang) is released by opening it for writing once."""
    folder = tmp_path / "in"
    make_photos(folder)
    Image.new("RGB", (640, 480), (120, 30, 200)).save(folder / "photo_big.jpg", quality=90)
    fifo = folder / "0-pipe.jpg"
    os.mkfifo(fifo)
    yield fifo
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # nobody was waiting on it


def test_every_open_of_an_input_refuses_a_pipe_at_once(pipe: Path):
    with pytest.raises(ImageError, match="not a regular file"):
        within(10, open_input, pipe)
    with pytest.raises(ImageError, match="not a regular file"):
        within(10, load_image, pipe)
    assert within(10, header_size, pipe) is None
    assert within(10, decodes_reduced, pipe, lambda size: (64, 48)) is False
    assert within(10, DeviceDecoder(torch.device("cpu")).read, pipe) is None
    with open_input(pipe.parent / "photo_big.jpg") as f:  # a regular file opens as before
        assert f.read(2) == b"\xff\xd8"


def test_fast_decode_run_over_a_pipe_finishes(pipe: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    code = within(
        120, run_cli, "--model", "demo-shapes", "--fast-decode", "--input", pipe.parent, "--output", out
    )
    assert code == 0
    lines = {line["image"]: line for line in read_jsonl(out / "predictions.jsonl")}
    assert lines[pipe.name]["status"] == "error" and "not a regular file" in lines[pipe.name]["error"]
    assert all(line["status"] == "ok" for name, line in lines.items() if name != pipe.name)
    assert f"error: {pipe.name}: is not a regular file" in capsys.readouterr().err


ERASE = "\x1b[2K\r"


def test_escape_sequences_in_names_never_reach_the_terminal(tmp_path: Path):
    """The real command line, run on a folder whose name and files carry escape sequences, a one-byte
    CSI and a right-to-left override: stdout and stderr hold no raw control byte, the error line shows
    the name escaped, and predictions.jsonl records the names exactly."""
    folder = tmp_path / f"in{ERASE}dir"
    folder.mkdir()
    Image.new("RGB", (24, 24), (200, 40, 40)).save(folder / f"ok{ERASE}red.png")
    fake = f"bad{ERASE}Finished: 9 image(s) ok.png"
    (folder / fake).write_text("not an image")
    (folder / "bidi\u202egnp.exe\x9b.png").write_text("not an image either")
    done = subprocess.run(
        [sys.executable, "-m", "batchlens", "-v", "run", "--model", "demo-shapes", "--device", "cpu",
         "--input", str(folder), "--output", str(tmp_path / f"out{ERASE}"), "--no-progress"],
        capture_output=True, timeout=300,
    )  # fmt: skip
    assert_no_traceback(done)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    for stream in (done.stdout, done.stderr):
        text = stream.decode("utf-8")
        assert not any(c in text for c in "\x1b\r\x9b\u202e"), text
    err = done.stderr.decode()
    assert "error: bad\\x1b[2K\\rFinished: 9 image(s) ok.png: is a text file" in err
    assert "bidi\\u202egnp.exe\\x9b.png" in err
    assert "out\\x1b[2K\\r" in done.stdout.decode()
    names = {
        line["image"]: line["status"] for line in read_jsonl(tmp_path / f"out{ERASE}" / "predictions.jsonl")
    }
    assert names == {f"ok{ERASE}red.png": "ok", fake: "error", "bidi\u202egnp.exe\x9b.png": "error"}


def test_printable_escapes_what_a_terminal_acts_on():
    assert printable("a\x1b[2K\rb\n\tc\x7f\x9b") == "a\\x1b[2K\\rb\\n\\tc\\x7f\\x9b"
    assert printable("\u202eabc\u2066") == "\\u202eabc\\u2066"
    assert printable(os.fsdecode(b"caf\xe9.png")) == "caf\\xe9.png"  # a byte that is not UTF-8
    assert printable("café 猫.png") == "café 猫.png", "ordinary text is left alone"
    record = logging.LogRecord("batchlens", logging.WARNING, __file__, 1, "skipped %s", ("x\x1b[31m",), None)
    assert PrintableFormatter("%(message)s").format(record) == "skipped x\\x1b[31m"
    json_line = json.dumps({"image": f"a{ERASE}.png"})
    assert "\x1b" not in json_line and json.loads(json_line)["image"] == f"a{ERASE}.png"
