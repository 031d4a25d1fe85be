"""The engine race of issue #25: BatchNorm folding traces the model with torch.fx, which replaces
nn.Module.__call__ for the whole process while it traces; a decoding thread that runs the model's
preprocessing (torchvision transforms are nn.Modules) in that moment failed a good image with
"could not be prepared for the model (NameError: module is not installed as a submodule)".
The engine now traces only once the prefetcher has settled (core/inputs/prefetch.py `settle`)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.transforms import v2

from batchlens.core.inputs.prefetch import Prefetcher
from batchlens.core.run import model_speedups
from batchlens.core.run.config import RunConfig
from batchlens.core.run.pipeline import BatchPipeline
from batchlens.core.run.runner import Runner
from tests.helpers import make_shapes_folder


class WaitsWhileTraced(nn.Module):
    """A conv + BatchNorm whose forward (run by the tracer) waits until told, so another thread's
    call lands inside the trace every time."""

    def __init__(self, inside: threading.Event, go_on: threading.Event):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
        self.inside, self.go_on = inside, go_on

    def forward(self, x):
        self.inside.set()
        self.go_on.wait(5)
        return self.bn(self.conv(x))


def test_fx_tracing_reroutes_every_threads_module_calls():
    """The cause, shown deterministically: a transform called on another thread while fx traces."""
    inside, go_on = threading.Event(), threading.Event()
    model = WaitsWhileTraced(inside, go_on).eval()
    transform = v2.Compose([v2.ToDtype(torch.float32, scale=True)])
    seen: list[BaseException] = []

    def decode():
        inside.wait(5)
        try:
            transform(torch.zeros(3, 4, 4, dtype=torch.uint8))
        except Exception as exc:  # noqa: BLE001 - what the decoding thread met
            seen.append(exc)
        go_on.set()

    thread = threading.Thread(target=decode)
    thread.start()
    model_speedups._fold(model)  # the trace itself, without the engine's guard
    thread.join(5)
    assert seen and isinstance(seen[0], NameError) and "not installed as a submodule" in str(seen[0])
    transform(torch.zeros(3, 4, 4, dtype=torch.uint8))  # after the trace: the patch is undone


def test_settle_returns_only_when_no_image_is_being_prepared():
    running, most, done = [0], [0], []
    lock = threading.Lock()

    def decode(item):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.03)
        with lock:
            running[0] -= 1
        done.append(item)
        return item

    batches = [[i * 3 + k for k in range(3)] for i in range(6)]
    with Prefetcher(lambda batch, each: each(decode, batch), batches, depth=2, workers=2) as ahead:
        assert next(ahead) == [0, 1, 2]
        assert next(ahead) == [3, 4, 5]  # the prefetcher now prepares two batches ahead
        assert running[0] > 0 or len(done) < 12  # (work is in flight: the settle has work to wait for)
        ahead.settle()
        assert running[0] == 0 and sorted(done) == list(range(12))  # both batches ahead, whole
        assert [b for b in ahead] == batches[2:]  # nothing was lost
    assert most[0] == 2


def test_settle_waits_for_the_images_still_running_after_a_batch_failed():
    started, release = threading.Event(), threading.Event()
    finished = []

    def decode(item):
        if item == "bad":
            started.wait(5)
            raise ValueError("bad image")
        started.set()
        release.wait(0.2)
        finished.append(item)

    with Prefetcher(lambda batch, each: each(decode, batch), [["bad", "slow"]], workers=2) as ahead:
        with pytest.raises(ValueError):
            next(ahead)
        ahead.settle()
        assert finished == ["slow"]


def test_a_run_folds_batch_norms_only_while_no_image_is_prepared(tmp_path: Path, monkeypatch):
    """The real engine: the first batch's images are broken, so the fold waits for the second batch,
    when batches are prepared ahead. The third batch's first image holds its decoding thread until
    the fold starts (or half a second): without the settle, the trace starts while it is prepared."""
    folder = tmp_path / "in"
    make_shapes_folder(folder, 10)
    good = (folder / "shape_0000.png").read_bytes()
    for name in ("a_broken.png", "b_broken.png"):
        (folder / name).write_bytes(good[: len(good) // 2])
    in_flight, at_fold, folding = [0], [], threading.Event()
    lock = threading.Lock()
    decode_on_cpu, fold = BatchPipeline._decode_on_cpu, model_speedups._fold

    def held_decode(self, item):
        with lock:
            in_flight[0] += 1
        try:
            if item.candidate.rel == "shape_0002.png":
                folding.wait(0.5)
            decode_on_cpu(self, item)
        finally:
            with lock:
                in_flight[0] -= 1

    def watched_fold(module):
        at_fold.append(in_flight[0])
        folding.set()
        return fold(module)

    monkeypatch.setattr(BatchPipeline, "_decode_on_cpu", held_decode)
    monkeypatch.setattr(model_speedups, "_fold", watched_fold)
    cfg = RunConfig(
        "demo-shapes", folder, tmp_path / "out", device="cpu", batch_size=2, prefetch=2, threads=2
    )
    events = list(Runner(cfg).events())
    lines = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert at_fold == [0]
    assert [line["image"] for line in lines if line["status"] == "error"] == ["a_broken.png", "b_broken.png"]
    assert events[-1].summary["folded_batch_norm"] is True


@pytest.mark.slow
def test_the_bad_files_run_200_times_without_a_false_failure(tmp_path: Path):
    """The issue's loop: tests/core/test_engine.py::test_bad_files_get_error_lines_and_run_goes_on
    failed about 1 run in 5 before the fix."""
    folder = tmp_path / "in"
    make_shapes_folder(folder, 12)
    good = (folder / "shape_0000.png").read_bytes()
    (folder / "broken.png").write_bytes(good[: len(good) // 2])
    (folder / "notes.jpg").write_text("this is a shopping list, not a photo\n")
    failures = []
    for n in range(200):
        out = tmp_path / f"out{n}"
        list(Runner(RunConfig("demo-shapes", folder, out, device="cpu")).events())
        lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        wrong = [line for line in lines if line["status"] == "error" and line["image"].startswith("shape_")]
        failures += [(n, line["image"], line["error"]) for line in wrong]
    assert failures == []
