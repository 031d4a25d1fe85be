"""--gpu-decode, checked on the CPU: the same batched decode + tensor preprocessing code runs with
libjpeg-turbo here (nvJPEG on a GPU), against the ordinary Pillow path on the same files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from batchlens.core.inputs.gpu_decode import DeviceDecoder
from batchlens.core.inputs.images import load_image, scan_images
from batchlens.core.models import load_model
from batchlens.core.run.config import RunConfig
from batchlens.core.run.pipeline import BatchPipeline
from batchlens.core.run.runner import Runner
from batchlens.core.tasks.base import thumbnail

CPU = torch.device("cpu")


def photo(path: Path, size=(96, 64), seed=0, orientation: int | None = None, mode="RGB") -> Path:
    """A smooth photo-like JPEG (gradients and blobs), optionally with an EXIF orientation."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    planes = [
        np.sin(x / rng.uniform(5, 20) + rng.uniform(0, 6)) + np.cos(y / rng.uniform(5, 20)) for _ in range(3)
    ]
    rgb = ((np.stack(planes, -1) + 2) / 4 * 255).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(rgb).convert(mode)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    image.save(path, "JPEG", quality=92, exif=exif.tobytes())
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_device_decode_is_upright_and_equals_pillow(tmp_path: Path, orientation: int):
    path = photo(tmp_path / f"o{orientation}.jpg", orientation=orientation)
    decoder = DeviceDecoder(CPU)
    (pixels,) = decoder.decode([decoder.read(path)])
    with Image.open(path) as im:
        reference = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert pixels.dtype == torch.uint8 and pixels.permute(1, 2, 0).shape == reference.shape
    assert np.array_equal(pixels.permute(1, 2, 0).numpy(), reference)  # both are libjpeg-turbo


def test_files_the_device_path_does_not_take_go_to_pillow(tmp_path: Path):
    decoder = DeviceDecoder(CPU, max_pixels=100 * 100)
    Image.new("RGB", (20, 20), "red").save(tmp_path / "a.png")
    Image.new("CMYK", (20, 20)).save(tmp_path / "cmyk.jpg")
    photo(tmp_path / "big.jpg", size=(200, 100))  # over the pixel limit: Pillow refuses it in words
    (tmp_path / "fake.jpg").write_bytes(b"not a jpeg at all")
    for name in ("a.png", "cmyk.jpg", "big.jpg", "fake.jpg", "missing.jpg"):
        assert decoder.read(tmp_path / name) is None, name


def test_a_corrupt_jpeg_in_the_batch_fails_alone(tmp_path: Path):
    good = photo(tmp_path / "good.jpg")
    bad = tmp_path / "bad.jpg"
    data = good.read_bytes()
    scan = data.index(b"\xff\xda")
    start = scan + 2 + int.from_bytes(data[scan + 2 : scan + 4], "big")  # the entropy-coded data
    bad.write_bytes(data[:start] + bytes(len(data) - start))  # header intact, scan data zeroed
    decoder = DeviceDecoder(CPU)
    encoded = [decoder.read(good), decoder.read(bad), decoder.read(good)]
    out = decoder.decode(encoded)
    assert out[0] is not None and out[2] is not None and torch.equal(out[0], out[2])


def test_pipeline_with_gpu_decode_matches_the_pillow_path(tmp_path: Path):
    """resnet18's own preprocessing (torchvision preset) on device tensors against the Pillow path:
    what the model sees differs only by resize rounding, and the scores by as little."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        photo(folder / f"p{i}.jpg", size=(320, 240), seed=i, orientation=6 if i == 2 else None)
    Image.new("RGB", (64, 48), "blue").save(folder / "plain.png")  # not a JPEG: the Pillow path
    torch.manual_seed(0)
    model = _seeded_resnet(tmp_path)
    candidates = list(scan_images(folder))
    pillow = BatchPipeline(model, tmp_path / "o1", None).prepare(candidates)
    device = BatchPipeline(model, tmp_path / "o2", None, gpu_decode=True).prepare(candidates)
    assert [i.error for i in device.items] == [None] * 7
    for a, b in zip(pillow.items, device.items):
        assert a.decoded.original_size == b.decoded.original_size
        diff = (a.tensor - b.tensor).abs()
        assert diff.mean() < 0.02 and diff.max() < 0.35, (a.candidate.rel, diff.mean(), diff.max())
    assert torch.equal(pillow.items[-1].tensor, device.items[-1].tensor)  # the PNG took the same path
    assert device.items[0].decoded.image.size == thumbnail(load_image(candidates[0].path).image).size


def _seeded_resnet(tmp_path: Path):
    """resnet18 with seeded random weights and the preset of its ImageNet weights (no download)."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    path = tmp_path / "resnet18.pth"
    torch.save(resnet18().state_dict(), path)
    return load_model(str(path), CPU, {"arch": "resnet18"})


def test_run_with_gpu_decode_gives_the_same_labels(tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = random.Random(3)
    for i in range(8):
        photo(folder / f"p{i}.jpg", size=(rng.randrange(200, 400), rng.randrange(150, 300)), seed=i)
    model = _seeded_resnet(tmp_path)
    results = {}
    for flag in (False, True):
        out = tmp_path / f"out-{flag}"
        config = RunConfig("resnet18-file", folder, out, batch_size=4, gpu_decode=flag)
        for _ in Runner(config, model=model).events():
            pass
        lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        results[flag] = {r["image"]: r["top"][0] for r in lines}
        assert all(r["status"] == "ok" for r in lines)
    for image, top in results[False].items():
        other = results[True][image]
        assert abs(top["score"] - other["score"]) < 0.02
    assert json.loads((tmp_path / "out-True" / "summary.json").read_text())["gpu_decode"] is True


def test_device_preprocessing_runs_once_per_picture_size_and_equals_image_by_image(tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(5):
        photo(folder / f"p{i}.jpg", size=(320, 240), seed=i, orientation=6 if i == 4 else None)
    model = _seeded_resnet(tmp_path)
    candidates = list(scan_images(folder))
    batched = BatchPipeline(model, tmp_path / "o1", None, gpu_decode=True)
    single = BatchPipeline(model, tmp_path / "o2", None, gpu_decode=True)
    single.batched_preprocess = False
    a, b = batched.prepare(candidates), single.prepare(candidates)
    assert batched.batched_preprocess is True  # the preset gave the same on a stack of pictures
    for x, y in zip(a.items, b.items):
        assert torch.allclose(x.tensor, y.tensor, atol=1e-5), x.candidate.rel


def test_a_transform_that_misreads_a_stack_of_pictures_runs_image_by_image(tmp_path: Path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        photo(folder / f"p{i}.jpg", size=(96, 64), seed=i)
    model = _seeded_resnet(tmp_path)
    # Averages "the first dimension": the channels of one picture, but the pictures of a stack.
    model.adapter.preprocess = lambda picture: picture.float().mean(dim=0)
    pipeline = BatchPipeline(model, tmp_path / "o", None, gpu_decode=True)
    prepared = pipeline.prepare(list(scan_images(folder)))
    assert pipeline.batched_preprocess is False
    for item in prepared.items:  # each picture's own channel mean (libjpeg-turbo here: as Pillow's)
        pixels = torch.from_numpy(np.array(load_image(item.candidate.path).image)).float()
        assert torch.allclose(item.tensor, pixels.mean(dim=-1), atol=1e-4), item.candidate.rel
