"""The runner end to end, in-process: the output contract, events, cancel, resume, folders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from batchlens.core.errors import BatchLensError
from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import ImageResult, RunFinished, RunStarted
from batchlens.core.run.runner import Runner
from tests.helpers import make_shapes_folder


def run(config: RunConfig) -> list:
    return list(Runner(config).events())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_classification_run_writes_contract(shapes_folder: Path, tmp_path: Path):
    out = tmp_path / "out"
    events = run(RunConfig("demo-shapes", shapes_folder, out, device="cpu", previews=True))
    assert isinstance(events[0], RunStarted) and events[0].total == 12
    images = [e for e in events if isinstance(e, ImageResult)]
    assert [e.index for e in images] == list(range(1, 13))
    assert images[-1].input_preview is not None and max(images[-1].input_preview.size) <= 320

    lines = read_jsonl(out / "predictions.jsonl")
    assert [line["image"] for line in lines] == sorted(p.name for p in shapes_folder.iterdir())
    for line in lines:
        assert line["status"] == "ok" and line["error"] is None and line["seconds"] >= 0
        assert 1 <= len(line["top"]) <= 5
        scores = [t["score"] for t in line["top"]]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
        assert set(line["top"][0]) == {"label", "index", "score"}

    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["ok"] == 12 and summary["counts"]["error"] == 0
    assert summary["model"] == "demo-shapes" and summary["device"] == "cpu"
    assert summary["images_per_second"] > 0 and summary["peak_memory_bytes"] > 0
    csv_lines = (out / "predictions.csv").read_text().splitlines()
    assert csv_lines[0] == "image,label,score" and len(csv_lines) == 13
    assert isinstance(events[-1], RunFinished) and not events[-1].cancelled


def test_image_to_image_writes_pngs_mirroring_tree(tmp_path: Path, denoise_folder: Path):
    nested = denoise_folder / "sub" / "deeper"
    nested.mkdir(parents=True)
    (denoise_folder / "noisy_0000.png").rename(nested / "a.png")
    out = tmp_path / "out"
    run(RunConfig("demo-denoise", denoise_folder, out, device="cpu", recursive=True))
    lines = read_jsonl(out / "predictions.jsonl")
    assert len(lines) == 6
    nested_line = next(line for line in lines if line["image"] == "sub/deeper/a.png")
    assert nested_line["output"] == "sub/deeper/a.png"
    from PIL import Image

    with Image.open(out / "sub/deeper/a.png") as im:
        assert im.size == (120, 120) and im.mode == "L"


def test_bad_files_get_error_lines_and_run_goes_on(shapes_folder: Path, tmp_path: Path):
    good = (shapes_folder / "shape_0000.png").read_bytes()
    (shapes_folder / "broken.png").write_bytes(good[: len(good) // 2])
    (shapes_folder / "notes.jpg").write_text("this is a shopping list, not a photo\n")
    events = run(RunConfig("demo-shapes", shapes_folder, tmp_path / "out", device="cpu"))
    lines = {line["image"]: line for line in read_jsonl(tmp_path / "out" / "predictions.jsonl")}
    assert len(lines) == 14
    assert lines["broken.png"]["status"] == "error"
    assert "broken.png" in lines["broken.png"]["error"] and "truncated" in lines["broken.png"]["error"]
    assert lines["notes.jpg"]["status"] == "error"
    assert "text file, not an image" in lines["notes.jpg"]["error"]
    assert sum(line["status"] == "ok" for line in lines.values()) == 12
    assert events[-1].summary["counts"]["error"] == 2


def test_junk_is_skipped_and_counted(shapes_folder: Path, tmp_path: Path):
    (shapes_folder / ".DS_Store").write_bytes(b"\0\0")
    (shapes_folder / "._shape_0000.png").write_bytes(b"\0\5\26\7")
    (shapes_folder / "Thumbs.db").write_bytes(b"x")
    (shapes_folder / "readme.txt").write_text("hello")
    events = run(RunConfig("demo-shapes", shapes_folder, tmp_path / "out", device="cpu"))
    assert events[0].skipped == 4 and events[0].total == 12
    assert len(read_jsonl(tmp_path / "out" / "predictions.jsonl")) == 12


def test_cancel_between_images(shapes_folder: Path, tmp_path: Path):
    runner = Runner(RunConfig("demo-shapes", shapes_folder, tmp_path / "out", device="cpu"))
    seen = 0
    for event in runner.events():
        if isinstance(event, ImageResult):
            seen += 1
            if seen == 3:
                runner.cancel()
        last = event
    assert isinstance(last, RunFinished) and last.cancelled
    assert seen == 3
    assert len(read_jsonl(tmp_path / "out" / "predictions.jsonl")) == 3
    assert last.summary["counts"]["not_processed"] == 9


def test_batches_give_the_same_answers(shapes_folder: Path, tmp_path: Path):
    run(RunConfig("demo-shapes", shapes_folder, tmp_path / "b1", device="cpu"))
    run(RunConfig("demo-shapes", shapes_folder, tmp_path / "b5", device="cpu", batch_size=5))
    one = read_jsonl(tmp_path / "b1" / "predictions.jsonl")
    five = read_jsonl(tmp_path / "b5" / "predictions.jsonl")
    assert [line["image"] for line in one] == [line["image"] for line in five]
    for a, b in zip(one, five):
        assert a["top"][0]["label"] == b["top"][0]["label"]
        assert a["top"][0]["score"] == pytest.approx(b["top"][0]["score"], abs=1e-4)


def test_resume_skips_done_images_and_keeps_one_line_each(shapes_folder: Path, tmp_path: Path):
    out = tmp_path / "out"
    run(RunConfig("demo-shapes", shapes_folder, out, device="cpu"))
    full = read_jsonl(out / "predictions.jsonl")
    # Simulate a run killed after 5 images, mid-way through writing the 6th line.
    text = (out / "predictions.jsonl").read_text().splitlines(keepends=True)
    (out / "predictions.jsonl").write_text("".join(text[:5]) + text[5][:20])
    events = run(RunConfig("demo-shapes", shapes_folder, out, device="cpu", resume=True))
    assert events[0].already_done == 5 and events[0].total == 7
    resumed = read_jsonl(out / "predictions.jsonl")
    assert [line["image"] for line in resumed] == [line["image"] for line in full]
    assert [line["top"] for line in resumed] == [line["top"] for line in full]


def test_input_folder_is_never_written(shapes_folder: Path, tmp_path: Path):
    def fingerprint() -> dict:
        return {
            p.relative_to(shapes_folder).as_posix(): (
                hashlib.sha256(p.read_bytes()).hexdigest(),
                p.stat().st_mtime_ns,
            )
            for p in sorted(shapes_folder.rglob("*"))
            if p.is_file()
        }

    before = fingerprint()
    run(RunConfig("demo-shapes", shapes_folder, shapes_folder / "results", device="cpu", recursive=True))
    after = fingerprint()
    assert {k: v for k, v in after.items() if not k.startswith("results/")} == before
    # the output folder inside the input was not scanned as input on the way
    lines = read_jsonl(shapes_folder / "results" / "predictions.jsonl")
    assert len(lines) == 12 and not any(line["image"].startswith("results") for line in lines)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model": "no-such-model"}, "Unknown model 'no-such-model'"),
        ({"input_dir": Path("/nonexistent/folder")}, "does not exist"),
        ({"device": "quantum"}, "Unknown device"),
    ],
)
def test_run_level_errors_are_one_sentence(shapes_folder: Path, tmp_path: Path, kwargs, message):
    config = (
        dict(model="demo-shapes", input_dir=shapes_folder, output_dir=tmp_path / "o", device="cpu") | kwargs
    )
    with pytest.raises(BatchLensError, match=message):
        run(RunConfig(**config))


def test_output_equal_to_input_is_refused(shapes_folder: Path):
    with pytest.raises(BatchLensError, match="is the input folder"):
        run(RunConfig("demo-shapes", shapes_folder, shapes_folder, device="cpu"))


def test_memory_sample_taken_per_image(shapes_folder: Path, tmp_path: Path):
    images = [
        e
        for e in run(RunConfig("demo-shapes", shapes_folder, tmp_path / "o", device="cpu"))
        if isinstance(e, ImageResult)
    ]
    assert all(e.memory.allocated > 0 and e.memory.device_total > 0 for e in images)
    times = [e.memory.time for e in images]
    assert times == sorted(times)


def test_scan_is_sorted_recursive_and_case_insensitive(tmp_path: Path):
    from batchlens.core.inputs.images import ScanStats, scan_images

    make_shapes_folder(tmp_path / "b", 2)
    make_shapes_folder(tmp_path / "a" / "inner", 1)
    (tmp_path / "b" / "shape_0000.png").rename(tmp_path / "b" / "UPPER.PNG")
    (tmp_path / "z.JPG").write_bytes(b"")
    (tmp_path / "dir.jpg").mkdir()
    flat = [c.rel for c in scan_images(tmp_path)]
    assert flat == ["z.JPG"]
    stats = ScanStats()
    deep = [c.rel for c in scan_images(tmp_path, recursive=True, stats=stats)]
    assert deep == ["a/inner/shape_0000.png", "b/UPPER.PNG", "b/shape_0001.png", "z.JPG"]


def test_labels_that_do_not_match_the_model_are_an_error_not_a_wrong_name(
    shapes_folder: Path, tmp_path: Path
):
    from dataclasses import replace

    import torch

    from batchlens.core.models import load_model

    loaded = load_model("demo-shapes", torch.device("cpu"))
    loaded.adapter = replace(loaded.adapter, labels=["circle", "square", "triangle"])  # the model has 4
    events = list(
        Runner(RunConfig("demo-shapes", shapes_folder, tmp_path / "o", device="cpu"), model=loaded).events()
    )
    errors = [e.error for e in events if isinstance(e, ImageResult)]
    assert len(errors) == 12
    assert all("the model gives 4 scores but there are 3 labels" in (e or "") for e in errors)
