"""Reading an output folder back (core/outputs/results_index.py) and drawing its results again
(outputs/result_pictures.py): incremental reads with partial lines, every task's shape, missing inputs."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from batchlens.core.outputs.result_pictures import render, task_of
from batchlens.core.outputs.results_index import PredictionsReader, describe_folder, read_line, summarise


def _write(path: Path, lines: list[dict], mode: str = "w") -> None:
    with open(path, mode, encoding="utf-8") as f:
        f.write("".join(json.dumps(x) + "\n" for x in lines))


def test_reader_takes_whole_lines_only_and_starts_again_when_the_file_is_replaced(tmp_path):
    path = tmp_path / "predictions.jsonl"
    reader = PredictionsReader(path)
    assert reader.read_new() == ([], False)  # no file yet: a run that has not written a line
    _write(
        path, [{"image": "a.png", "status": "ok", "seconds": 0.1, "top": [{"label": "cat", "score": 0.9}]}]
    )
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"image": "b.png", "status": "er')  # the run is writing this one
    records, restarted = reader.read_new()
    assert [r.image for r in records] == ["a.png"] and not restarted
    assert (records[0].label, records[0].score) == ("cat", 0.9)
    with open(path, "a", encoding="utf-8") as f:
        f.write('ror", "error": "is empty (0 bytes)"}\nnot json\n')
    records, _ = reader.read_new()
    assert [(r.image, r.status, r.error) for r in records] == [("b.png", "error", "is empty (0 bytes)")]
    assert reader.bad_lines == 1
    assert read_line(path, records[0])["error"] == "is empty (0 bytes)"
    # A resume rewrites the file (a new file is renamed over it): everything is read again.
    replacement = tmp_path / "new.jsonl"
    _write(replacement, [{"image": "c.png", "status": "ok"}])
    replacement.replace(path)
    records, restarted = reader.read_new()
    assert restarted and [r.image for r in records] == ["c.png"]


def test_reader_takes_a_big_file_in_steps(tmp_path):
    path = tmp_path / "predictions.jsonl"
    _write(path, [{"image": f"{i}.png", "status": "ok", "seconds": i} for i in range(1000)])
    reader = PredictionsReader(path)
    seen = []
    while batch := reader.read_new(max_bytes=4096)[0]:
        seen.extend(batch)
    assert [r.image for r in seen] == [f"{i}.png" for i in range(1000)]
    assert all(read_line(path, r)["seconds"] == i for i, r in enumerate(seen))


def test_summarise_every_task_and_status():
    detection = summarise(
        {
            "status": "ok",
            "recovered": ["split the batch"],
            "detections": [
                {"label": "dog", "score": 0.9, "box": [0, 0, 1, 1]},
                {"label": "cat", "score": 0.7, "box": [0, 0, 1, 1]},
                {"label": "dog", "score": 0.6, "box": [0, 0, 1, 1]},
            ],
        }
    )
    assert detection.status == "recovered"
    assert (detection.label, detection.score, detection.labels) == ("dog", 0.9, {"dog": 0.9, "cat": 0.7})
    segmentation = summarise(
        {
            "status": "ok",
            "classes": [
                {"label": "background", "index": 0, "fraction": 0.8},
                {"label": "road", "index": 7, "fraction": 0.2},
            ],
        }
    )
    assert (segmentation.label, segmentation.score) == ("road", None)  # class 0 is the background
    assert set(segmentation.labels) == {"background", "road"}
    output = summarise({"status": "ok", "output": "a.png", "size": [4, 4]})
    assert (output.label, output.labels) == (None, {})
    failed = summarise({"image": "x.png", "status": "error", "error": "is empty", "top": "garbage"})
    assert (failed.status, failed.label, failed.score) == ("error", None, None)
    odd = summarise({"status": "ok", "top": [{"label": 3, "score": "high"}], "seconds": True})
    assert (odd.label, odd.score, odd.seconds) == ("3", None, None)  # a foreign file's types never crash


def test_describe_folder_finds_the_recorded_input_or_says_it_is_not_here(tmp_path):
    out, inputs = tmp_path / "out", tmp_path / "in"
    out.mkdir()
    inputs.mkdir()
    _write(out / "predictions.jsonl", [])
    folder = describe_folder(out)
    assert (folder.task, folder.input_dir, folder.finished) == (None, None, False)
    (out / "summary.json").write_text(json.dumps({"task": "detection", "model": "m", "input": str(inputs)}))
    folder = describe_folder(out)
    assert (folder.task, folder.model, folder.input_dir, folder.finished) == ("detection", "m", inputs, True)
    (out / "summary.json").write_text(json.dumps({"input": str(tmp_path / "elsewhere")}))
    folder = describe_folder(out)
    assert folder.input_dir is None and folder.recorded_input == tmp_path / "elsewhere"
    assert describe_folder(out, inputs).input_dir == inputs  # the user says where the images are now


def _colours(image: Image.Image) -> set:
    return {tuple(c) for c in np.asarray(image.convert("RGB")).reshape(-1, 3).tolist()}


def test_render_draws_each_task_as_a_run_does_with_or_without_the_input(tmp_path):
    out, inputs = tmp_path / "out", tmp_path / "in"
    out.mkdir()
    inputs.mkdir()
    Image.new("RGB", (400, 200), (255, 255, 255)).save(inputs / "photo.jpg")
    box = {"label": "dog", "index": 18, "score": 0.9, "box": [100.0, 50.0, 300.0, 150.0]}
    detection = {"status": "ok", "size": [400, 200], "detections": [box]}
    assert task_of(detection) == "detection"
    # The input is decoded at reduced scale; the box still lands where it belongs (scaled by the size
    # the run recorded): at 200 px wide, its left edge is at x = 50.
    pictures = render(detection, inputs / "photo.jpg", out, size=200)
    assert pictures.input.size == (200, 100) and pictures.result.size == (200, 100)
    drawn = np.asarray(pictures.result)
    assert (drawn[75, 49:52] != 255).any() and (drawn[75, 40] == 255).all()
    # Shown larger than the image: drawn on an enlarged copy, the box where it belongs at that scale.
    big = np.asarray(render(detection, inputs / "photo.jpg", out, size=1200).result)
    assert big.shape[:2] == (600, 1200)
    assert (big[300, 299:302] != 255).any() and (big[300, 280] == 255).all()
    # Without the input folder: the same box on a plain canvas of the recorded shape, and a note.
    pictures = render(detection, None, out, size=200)
    assert pictures.input is None and pictures.result.size == (200, 100)
    assert "not on this computer" in pictures.note and len(_colours(pictures.result)) > 1

    mask = np.zeros((200, 400), np.uint8)
    mask[:, 200:] = 7
    Image.fromarray(mask).save(out / "photo.jpg.png")
    segmentation = {"status": "ok", "mask": "photo.jpg.png", "classes": [{"label": "x", "index": 7}]}
    tinted = np.asarray(render(segmentation, inputs / "photo.jpg", out, size=100).result)
    assert (tinted[10, 10] == 255).all() and not (tinted[10, 90] == 255).all()  # only class 7 is tinted

    Image.new("L", (80, 40), 128).save(out / "denoised.png")
    output = {"status": "ok", "output": "denoised.png", "size": [80, 40]}
    pictures = render(output, None, out)
    assert pictures.result.size == (80, 40) and pictures.input is None
    missing = render({"status": "ok", "output": "gone.png"}, inputs / "photo.jpg", out)
    assert missing.result is None and "gone.png is missing" in missing.note
    # A hand-edited line cannot make the browser read files outside the output folder.
    outside = render({"status": "ok", "output": "../in/photo.jpg"}, None, out)
    assert outside.result is None
    # A named pipe in the output folder is not opened (it would wait for a writer for ever).
    os.mkfifo(out / "pipe.png")
    started = time.monotonic()
    assert render({"status": "ok", "output": "pipe.png"}, None, out).result is None
    assert time.monotonic() - started < 5

    failed = render({"status": "error", "error": "bad"}, inputs / "photo.jpg", out)
    assert failed.result is None and failed.input is not None
    broken = render({"status": "ok"}, inputs / "nothing.png", out)
    assert broken.input is None and "nothing.png" in broken.note


def test_the_reader_needs_neither_qt_nor_torch():
    import subprocess

    code = (
        "import sys, batchlens.core.outputs.results_index; "
        "print(any(m.split('.')[0] in ('PySide6', 'torch') for m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
