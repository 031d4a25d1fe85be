"""The writer threads that write a batch's output files side by side (core/outputs/output_writers.py), and the
per-image fast paths of predictions.jsonl (core/outputs/results.py, core/outputs/records.py)."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from batchlens.core.errors import BatchLensError
from batchlens.core.outputs.output_writers import OutputWriters
from batchlens.core.outputs.records import json_ready, non_finite
from batchlens.core.outputs.results import dumps_line
from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import ImageResult, RunFinished
from batchlens.core.run.runner import Runner
from tests.helpers import make_denoise_folder

N = 8  # images: two batches of 4


@pytest.fixture
def noisy(tmp_path: Path) -> Path:
    folder = tmp_path / "noisy"
    make_denoise_folder(folder, N, size=64)
    return folder


def lines_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]


def denoise(noisy: Path, out: Path, **settings) -> Runner:
    return Runner(RunConfig("demo-denoise", noisy, out, device="cpu", batch_size=4, prefetch=0, **settings))


def test_each_runs_the_items_at_once_and_keeps_their_order():
    writers = OutputWriters(4)
    together = threading.Barrier(4, timeout=10)  # only passes when 4 calls run at the same time
    names = set()

    def write(i: int) -> int:
        names.add(threading.current_thread().name)
        together.wait()
        time.sleep(0.01 * (4 - i))  # the first item finishes last
        return i * 10

    try:
        assert writers.each(write, [0, 1, 2, 3]) == [0, 10, 20, 30]
        assert len(names) == 4 and all(name.startswith("batchlens-write") for name in names)
    finally:
        writers.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("batchlens-write")]


def test_one_item_or_one_thread_is_written_in_the_callers_thread():
    here = threading.current_thread().name
    assert OutputWriters(4).each(lambda _: threading.current_thread().name, ["a"]) == [here]
    assert OutputWriters(1).each(lambda _: threading.current_thread().name, ["a", "b"]) == [here, here]


def test_a_failing_item_is_its_outcome_and_the_others_are_all_written():
    writers = OutputWriters(3)
    done = []

    def write(i: int) -> None:
        if i == 1:
            raise OSError(errno.ENAMETOOLONG, "File name too long")
        time.sleep(0.05)  # still writing when item 1 has failed: each() waits for it all the same
        done.append(i)

    try:
        outcomes = writers.each(write, [0, 1, 2])
    finally:
        writers.close()
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], OSError) and outcomes[1].errno == errno.ENAMETOOLONG
    assert sorted(done) == [0, 2]


def test_parallel_writes_give_the_same_bytes_and_lines_as_one_writer(
    noisy: Path, tmp_path: Path, monkeypatch
):
    monkeypatch.setattr("batchlens.core.outputs.output_writers.writer_count", lambda: 1)
    list(denoise(noisy, tmp_path / "one").events())
    monkeypatch.setattr("batchlens.core.outputs.output_writers.writer_count", lambda: 4)
    runner = denoise(noisy, tmp_path / "four")
    threads = set()
    real_save = Image.Image.save

    def save(self, fp, *args, **kwargs):
        threads.add(threading.current_thread().name)
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    list(runner.events())
    assert any(name.startswith("batchlens-write") for name in threads)  # the pool did the writing
    one, four = lines_of(tmp_path / "one"), lines_of(tmp_path / "four")
    assert [line["image"] for line in four] == sorted(p.name for p in noisy.iterdir())  # scan order
    for a, b in zip(one, four):
        for measured in ("seconds", "peak_memory_bytes"):  # measurements, not answers
            a.pop(measured), b.pop(measured)
        assert a == b
        assert (tmp_path / "one" / a["output"]).read_bytes() == (tmp_path / "four" / b["output"]).read_bytes()
    assert not list((tmp_path / "four").rglob("*.tmp"))


def test_one_image_whose_name_cannot_be_written_is_an_error_line_the_batch_goes_on(
    noisy: Path, tmp_path: Path, monkeypatch
):
    from batchlens.core.tasks.image_to_image import ImageToImageAdapter

    real_write = ImageToImageAdapter.write

    def write(self, result, meta, output_dir):
        if meta.rel == "noisy_0002.png":  # a name this file system refuses
            raise OSError(errno.EILSEQ, os.strerror(errno.EILSEQ))
        return real_write(self, result, meta, output_dir)

    monkeypatch.setattr(ImageToImageAdapter, "write", write)
    out = tmp_path / "out"
    list(denoise(noisy, out).events())
    lines = lines_of(out)
    assert [line["image"] for line in lines] == [f"noisy_{i:04d}.png" for i in range(N)]
    bad = lines.pop(2)
    assert bad["status"] == "error" and "its output file cannot be written" in bad["error"]
    assert all(line["status"] == "ok" and (out / line["output"]).is_file() for line in lines)
    assert not (out / "noisy_0002.png").exists() and not list(out.rglob("*.tmp"))


def test_disk_full_in_a_parallel_batch_stops_with_only_whole_files_and_their_lines(
    noisy: Path, tmp_path: Path, monkeypatch
):
    real_save = Image.Image.save
    saves = {"n": 0}
    lock = threading.Lock()

    def save(self, fp, *args, **kwargs):
        with lock:
            saves["n"] += 1
            n = saves["n"]
        if n == 6:  # the second batch's second image: its siblings are being written meanwhile
            fp.write(b"\x89PNG\r\n\x1a\n half of it")  # the temporary file, opened by the guarded layer
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    out = tmp_path / "out"
    with pytest.raises(BatchLensError, match="is full"):
        list(denoise(noisy, out).events())
    lines = lines_of(out)
    assert [line["image"] for line in lines] == [f"noisy_{i:04d}.png" for i in range(4)]  # batch 1 only
    for line in lines:
        with Image.open(out / line["output"]) as image:
            image.load()  # whole
    assert not list(out.rglob("*.tmp"))  # the failed file's temporary name is gone


def test_cancel_while_a_batch_is_being_written_leaves_whole_files_and_lines(
    noisy: Path, tmp_path: Path, monkeypatch
):
    out = tmp_path / "out"
    runner = denoise(noisy, out)
    real_save = Image.Image.save

    def save(self, fp, *args, **kwargs):
        runner.cancel()  # pressed while the first batch's files are being written
        time.sleep(0.02)
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    events = list(runner.events())
    finished = events[-1]
    assert isinstance(finished, RunFinished) and finished.cancelled
    done = [e for e in events if isinstance(e, ImageResult)]
    lines = lines_of(out)
    # The batch being written is finished whole (its lines after its files), then the run stops.
    assert (
        [line["image"] for line in lines]
        == [e.image for e in done]
        == [f"noisy_{i:04d}.png" for i in range(4)]
    )
    assert sorted(p.name for p in out.glob("*.png")) == [line["output"] for line in lines]
    assert not list(out.rglob("*.tmp"))
    assert not [t for t in threading.enumerate() if t.name.startswith("batchlens-write")]

    monkeypatch.undo()
    list(Runner(RunConfig("demo-denoise", noisy, out, device="cpu", batch_size=4, resume=True)).events())
    assert [line["image"] for line in lines_of(out)] == [f"noisy_{i:04d}.png" for i in range(N)]


@pytest.mark.parametrize(
    "record",
    [
        {
            "image": "a.png",
            "status": "ok",
            "error": None,
            "seconds": 0.1,
            "top": [{"label": "é", "score": 0.5}],
        },
        {"image": os.fsdecode(b"caf\xe9.png"), "status": "error", "error": os.fsdecode(b"caf\xe9.png: x")},
        {"image": "b.png", "output": os.fsdecode(b"d\xff/b.png"), "size": (3, 4), "note": "\u2028\x00"},
        {"image": "\ud800lone.png", "status": "ok"},  # a surrogate json_ready leaves alone
    ],
)
def test_a_line_is_the_same_text_as_through_json_ready(record):
    assert dumps_line(record) == json.dumps(json_ready(record), ensure_ascii=False, allow_nan=False) + "\n"


def test_non_finite_still_names_the_place():
    assert non_finite({"top": [{"score": 1.0}, {"score": float("nan")}]}) == "top[1].score"
    assert non_finite({"a": (1.0, float("-inf"))}) == "a[1]"
    assert non_finite(float("inf")) == "value"
    assert non_finite({"top": [{"label": "x", "score": 0.5}], "size": [3, 4]}) is None


def test_a_task_without_output_files_writes_in_the_loop(tmp_path: Path, monkeypatch):
    """Classification writes no file per image: its (empty) writes stay in the run's thread, where
    handing them to threads would only cost time."""
    from batchlens.core.tasks.classification import ClassificationAdapter
    from tests.helpers import make_shapes_folder

    make_shapes_folder(tmp_path / "shapes", 8)
    threads = set()
    real_write = ClassificationAdapter.write

    def write(self, result, meta, output_dir):
        threads.add(threading.current_thread().name)
        return real_write(self, result, meta, output_dir)

    monkeypatch.setattr(ClassificationAdapter, "write", write)
    config = RunConfig(
        "demo-shapes", tmp_path / "shapes", tmp_path / "out", device="cpu", batch_size=4, prefetch=0
    )
    list(Runner(config).events())
    assert threads == {threading.current_thread().name}
