"""CPU decoding in worker processes (core/inputs/process_decode.py): the pixels are exactly those of the
thread decode, failures read the same, and a run with two decoding processes gives the same results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from batchlens.core.errors import BatchLensError
from batchlens.core.inputs.images import ImageError, load_image
from batchlens.core.inputs.process_decode import PROCESS_DECODE_MIN_CORES, ProcessDecoder, process_workers
from batchlens.core.run.bench_loops import make_synthetic_folder
from batchlens.core.run.config import RunConfig
from batchlens.core.run.runner import Runner
from tests.helpers import make_shapes_folder


def test_two_worker_processes_decode_exactly_the_pixels_of_the_thread_decode(tmp_path: Path):
    folder = make_synthetic_folder(tmp_path / "jpegs", 4, (160, 120))
    paths = sorted(folder.iterdir())
    grey = tmp_path / "grey.png"
    Image.fromarray(np.arange(64 * 48, dtype=np.uint32).reshape(48, 64).astype(np.uint8)).save(grey)
    turned = tmp_path / "turned.jpg"  # EXIF orientation 6: the decoder turns it upright
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(paths[0]).save(turned, exif=exif)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(paths[0].read_bytes()[:300])
    with ProcessDecoder(2) as decoder:
        decoder._warm.result(timeout=60)  # the workers are up: from now on they decode
        for path, mode in [(p, "RGB") for p in paths] + [(grey, "L"), (grey, "RGB"), (turned, "RGB")]:
            here, there = load_image(path, mode), decoder.load(path, mode)
            assert there.image.mode == here.image.mode and there.original_size == here.original_size
            assert np.array_equal(np.asarray(there.image), np.asarray(here.image)), path.name
        with pytest.raises(ImageError) as in_process:
            decoder.load(broken)
        with pytest.raises(ImageError) as in_thread:
            load_image(broken)
        assert str(in_process.value) == str(in_thread.value)
        assert decoder.decoded_in_workers == 8
    assert load_image(turned).original_size == (120, 160)  # the turn happened


def test_process_decode_is_only_chosen_on_cuda_with_many_cores():
    assert process_workers("auto", "cuda", 16, gpu_decode=False) == 14
    assert process_workers("auto", "cuda", PROCESS_DECODE_MIN_CORES - 1, gpu_decode=False) == 0
    assert process_workers("auto", "cuda", 16, gpu_decode=True) == 0  # the GPU decodes
    assert process_workers("auto", "cpu", 64, gpu_decode=False) == 0  # the forward needs the cores
    assert process_workers(2, "cpu", 2, gpu_decode=False) == 2  # asked for: as asked
    with pytest.raises(BatchLensError, match="0 or more"):
        process_workers(-1, "cuda", 16, gpu_decode=False)


def test_a_run_with_two_decoding_processes_gives_the_thread_decode_results(tmp_path: Path, monkeypatch):
    started = ProcessDecoder.__init__

    def started_and_warm(self, workers):  # so that every image of this short run decodes in a worker
        started(self, workers)
        self._warm.result(timeout=60)

    monkeypatch.setattr(ProcessDecoder, "__init__", started_and_warm)
    make_shapes_folder(tmp_path / "in", 6)
    (tmp_path / "in" / "broken.png").write_bytes(b"not an image")
    lines = {}
    for name, processes in (("threads", 0), ("processes", 2)):
        config = RunConfig("demo-shapes", tmp_path / "in", tmp_path / name, device="cpu", batch_size=3)
        config = RunConfig(**{**config.__dict__, "decode_processes": processes})
        for _ in Runner(config).events():
            pass
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["decode_processes"] == processes
        assert summary["decoded_in_processes"] == (7 if processes else 0)
        records = [json.loads(x) for x in (tmp_path / name / "predictions.jsonl").read_text().splitlines()]
        lines[name] = [(r["image"], r["status"], r["error"], r.get("top")) for r in records]
    assert lines["processes"] == lines["threads"] and len(lines["threads"]) == 7
