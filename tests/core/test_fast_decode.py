"""--fast-decode: JPEGs decoded at a reduced scale when a classification model shrinks them anyway.

Real JPEG files, the real torchvision preset transforms, and a real resnet18 (seeded random weights:
no download) through the real runner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

from batchlens.cli import main as cli_main
from batchlens.core.inputs.images import decodes_reduced, load_image, scan_images
from batchlens.core.models.base import sidecar_transform
from batchlens.core.models.sidecar import Sidecar
from batchlens.core.run.bench import load_bench_model, make_synthetic_folder
from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import ImageResult, RunFinished
from batchlens.core.run.pipeline import BatchPipeline
from batchlens.core.run.runner import Runner
from batchlens.core.tasks import make_adapter
from batchlens.core.tasks.base import resize_target

PRESET = torchvision.models.ResNet18_Weights.DEFAULT.transforms()  # short side 256, crop 224


def short_side_256(size):
    return resize_target(PRESET, size)


def test_resize_target_reads_presets_and_sidecar_resizes():
    assert resize_target(PRESET, (1600, 1200)) == (342, 256)  # 1600 * 256 / 1200 = 341.3, rounded up
    assert resize_target(PRESET, (1200, 1600)) == (256, 342)
    assert resize_target(PRESET, (300, 200)) is None  # 200 < 256: the preset enlarges it
    fixed = sidecar_transform(Sidecar(task="classification", input_size=[64, 96]))  # (height, width)
    assert resize_target(fixed, (800, 600)) == (96, 64)
    assert resize_target(torchvision.transforms.v2.ToImage(), (800, 600)) is None


def test_large_jpeg_is_decoded_at_a_quarter_and_keeps_its_original_size(tmp_path: Path):
    path = make_synthetic_folder(tmp_path, 1, (1600, 1200)) / "img_00000.jpg"
    full = load_image(path)
    reduced = load_image(path, reduce_to=short_side_256)
    assert full.image.size == (1600, 1200) and full.original_size == (1600, 1200)
    # 1/4 scale is the smallest that still gives >= 342 x 256 pixels (1/8 would give 200 x 150).
    assert reduced.image.size == (400, 300) and reduced.original_size == (1600, 1200)
    # The same picture: the full decode shrunk to 400 x 300 is close to the reduced decode.
    shrunk = np.asarray(full.image.resize((400, 300), Image.Resampling.BOX), dtype=np.float32)
    assert np.abs(shrunk - np.asarray(reduced.image, dtype=np.float32)).mean() < 3.0


def test_exif_rotated_jpeg_is_reduced_upright(tmp_path: Path):
    """A portrait photo stored landscape with EXIF orientation 6: reduce_to sees the upright size."""
    stored = make_synthetic_folder(tmp_path / "src", 1, (1600, 1200)) / "img_00000.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "portrait.jpg"
    with Image.open(stored) as im:
        im.save(path, exif=exif, quality=90)
    asked = []
    decoded = load_image(path, reduce_to=lambda size: asked.append(size) or short_side_256(size))
    assert asked == [(1200, 1600)]
    assert decoded.original_size == (1200, 1600) and decoded.image.size == (300, 400)
    assert decodes_reduced(path, short_side_256)  # the header check agrees, upright size and all


def test_png_and_small_jpegs_are_decoded_in_full(tmp_path: Path):
    png = tmp_path / "big.png"
    Image.new("RGB", (1600, 1200), (10, 200, 30)).save(png)
    assert load_image(png, reduce_to=short_side_256).image.size == (1600, 1200)
    small = make_synthetic_folder(tmp_path / "small", 1, (300, 240)) / "img_00000.jpg"
    assert load_image(small, reduce_to=short_side_256).image.size == (300, 240)
    assert not decodes_reduced(png, short_side_256) and not decodes_reduced(small, short_side_256)


def test_only_classification_asks_for_reduced_decoding():
    for task in ("detection", "segmentation", "image_to_image"):
        adapter = make_adapter(task, transform=PRESET, labels=["a", "b"])
        assert adapter.decode_size((1600, 1200)) is None, task  # their outputs refer to pixels
    assert make_adapter("classification", transform=PRESET).decode_size((1600, 1200)) == (342, 256)


def test_fast_decode_run_gives_the_same_labels_from_fewer_pixels(tmp_path: Path):
    folder = make_synthetic_folder(tmp_path / "photos", 4, (1600, 1200))
    model, _ = load_bench_model("resnet18", torch.device("cpu"))
    candidates = list(scan_images(folder))
    fast = BatchPipeline(model, tmp_path / "scratch", None, fast_decode=True).prepare(candidates)
    full = BatchPipeline(model, tmp_path / "scratch", None).prepare(candidates)
    assert load_image(candidates[0].path, reduce_to=model.adapter.decode_size).image.size == (400, 300)
    assert fast.items[0].decoded.original_size == (1600, 1200)
    # What the model sees is nearly the same picture: the preprocessed tensors (normalised, std ~1)
    # differ by about 0.01 on average (here 0.0099-0.0100, correlation 0.9999).
    for a, b in zip(full.items, fast.items):
        assert a.tensor.shape == b.tensor.shape == (3, 224, 224)
        assert (a.tensor - b.tensor).abs().mean() < 0.02
        assert torch.corrcoef(torch.stack([a.tensor.flatten(), b.tensor.flatten()]))[0, 1] > 0.999

    def run(fast_decode: bool, out: str) -> tuple[dict, dict]:
        config = RunConfig("resnet18", folder, tmp_path / out, device="cpu", fast_decode=fast_decode)
        scores, summary = {}, {}
        for event in Runner(config, model=model).events():
            if isinstance(event, ImageResult):
                assert event.ok, event.error
                scores[event.image] = event.fields["top"][0]
            elif isinstance(event, RunFinished):
                summary = event.summary
        return scores, summary

    full_top, full_summary = run(False, "full")
    fast_top, fast_summary = run(True, "fast")
    assert full_summary["fast_decode"] is False and fast_summary["fast_decode"] is True
    assert fast_top.keys() == full_top.keys() and len(fast_top) == 4
    for image, best in full_top.items():  # (random weights: the scores are small and close together)
        assert fast_top[image]["index"] == best["index"], image
        assert abs(fast_top[image]["score"] - best["score"]) < 0.001, image


def test_cli_run_fast_decode_is_recorded_in_the_summary(tmp_path: Path):
    folder = make_synthetic_folder(tmp_path / "photos", 2, (256, 192))
    out = tmp_path / "out"
    code = cli_main(
        ["run", "--model", "demo-shapes", "--input", str(folder), "--output", str(out), "--fast-decode"]
        + ["--no-progress"]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert code == 0 and summary["fast_decode"] is True and summary["counts"]["ok"] == 2


def test_a_run_says_when_fast_decode_has_nothing_to_do(tmp_path: Path):
    from batchlens.core.resources import sample_folder
    from batchlens.core.run.events import RunNote

    def notes(model: str, folder: Path) -> list[str]:
        config = RunConfig(model, folder, tmp_path / f"out-{model}", device="cpu", fast_decode=True)
        events = list(Runner(config).events())
        assert isinstance(events[-1], RunFinished) and events[-1].summary["counts"]["error"] == 0
        return [e.message for e in events if isinstance(e, RunNote) and "--fast-decode" in e.message]

    photos = make_synthetic_folder(tmp_path / "photos", 2, (256, 192))
    assert notes("demo-shapes", photos) == []  # large JPEGs for a classifier: it helps, no note
    (note,) = notes("demo-denoise", sample_folder("demo-denoise"))  # image-to-image, PNG samples
    assert "nothing to do" in note and "as without it" in note


def test_a_prepared_batch_keeps_a_preview_sized_photo_or_none(tmp_path: Path):
    """Batches wait in the prefetcher: a full 1600x1200 photo per image in flight would cost 5.8 MB
    each. Past preprocessing only the preview's copy (the window's) is kept."""
    folder = make_synthetic_folder(tmp_path / "photos", 2, (1600, 1200))
    model, _ = load_bench_model("resnet18", torch.device("cpu"))
    candidates = list(scan_images(folder))
    pipeline = BatchPipeline(model, tmp_path / "scratch", None)
    with_previews = pipeline.prepare(candidates)
    assert [item.decoded.image.size for item in with_previews.items] == [(320, 240)] * 2
    pipeline.previews = False
    without = pipeline.prepare(candidates)
    assert [item.decoded.image for item in without.items] == [None, None]
    assert [item.decoded.original_size for item in without.items] == [(1600, 1200)] * 2
    assert torch.equal(with_previews.items[0].tensor, without.items[0].tensor)
