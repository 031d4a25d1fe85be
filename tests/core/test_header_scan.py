"""The outsized-image check reads headers on a thread: the first result does not wait for them."""

from __future__ import annotations

import threading
from pathlib import Path

from PIL import Image

from batchlens.core.inputs import header_scan
from batchlens.core.inputs.header_scan import HeaderScan
from batchlens.core.inputs.images import header_size, scan_images
from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import ImageResult, RunFinished, RunNote
from batchlens.core.run.runner import Runner
from tests.core.test_oom import NearlyFullRamProbe
from tests.helpers import make_shapes_folder


def test_header_sizes_match_pillow_for_jpeg_and_png(tmp_path: Path):
    Image.new("RGB", (333, 222)).save(tmp_path / "a.jpg")
    Image.new("RGB", (111, 99)).save(tmp_path / "b.png")
    (tmp_path / "c.jpg").write_bytes(b"not an image")
    assert [header_size(tmp_path / n) for n in ("a.jpg", "b.png", "c.jpg")] == [(333, 222), (111, 99), None]


def test_the_first_result_comes_before_the_headers_are_read(tmp_path: Path, monkeypatch):
    """Header reading held up until the first image's result exists: the run goes on meanwhile, and
    the outsized-image note still comes (before the run's end) once the headers are read. (The
    reading starts after the first batch anyway; the hold makes the test independent of that.)"""
    folder = tmp_path / "shapes"
    make_shapes_folder(folder, 3)
    Image.new("RGB", (900, 700), (20, 20, 200)).save(folder / "huge.png")
    first_result = threading.Event()
    real = header_scan.header_size
    monkeypatch.setattr(header_scan, "header_size", lambda path: first_result.wait(30) and real(path))
    config = RunConfig("demo-shapes", folder, tmp_path / "out", device="cpu", batch_size=1)
    events = []
    for event in Runner(config, probe=NearlyFullRamProbe(16 << 20)).events():
        events.append(event)
        if isinstance(event, ImageResult):
            first_result.set()
    notes = [i for i, e in enumerate(events) if isinstance(e, RunNote) and "largest image" in e.message]
    first = next(i for i, e in enumerate(events) if isinstance(e, ImageResult))
    assert len(notes) == 1 and first < notes[0] < len(events) - 1
    assert isinstance(events[-1], RunFinished) and events[-1].summary["counts"]["ok"] == 4
    assert not [t for t in threading.enumerate() if t.name == "batchlens-headers"]


def test_a_scan_reads_only_once_started_and_stops_when_closed(tmp_path: Path):
    make_shapes_folder(tmp_path, 50)
    idle = HeaderScan(list(scan_images(tmp_path)))
    idle.close()  # a run that ended before its first result: nothing was read, nothing waits
    assert idle.take() is None and idle.sizes == []
    scan = HeaderScan(list(scan_images(tmp_path)))
    scan.start()
    scan.wait()
    assert len(scan.take()) == 50 and scan.take() is None  # given once
    scan.close()
