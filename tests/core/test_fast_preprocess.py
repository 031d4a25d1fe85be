"""--fast-decode's tensor preprocessing: the model's resize and crop on the uint8 tensor (torch's SIMD
kernel), used only where it is the same preprocessing as the model's own.

Real JPEG files, torchvision's real presets and v2 transforms, resnet18 and efficientnet_b0 with
seeded random weights (no download), through the real pipeline and runner."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from batchlens.core.inputs.fast_preprocess import TOLERANCE_LEVELS, fast_preprocess_for
from batchlens.core.inputs.images import scan_images
from batchlens.core.run.bench import load_bench_model, make_synthetic_folder
from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import ImageResult, RunFinished
from batchlens.core.run.pipeline import BatchPipeline
from batchlens.core.run.runner import Runner
from batchlens.core.tasks import make_adapter

GREY_LEVEL = 1 / 255 / 0.225  # one grey level in ImageNet-normalised units (the smallest std)


@pytest.fixture(scope="module")
def resnet18():
    return load_bench_model("resnet18", torch.device("cpu"))[0]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """640x480: under twice the 256 px the preset shrinks to, so no reduced-scale decode: only the
    tensor resize differs."""
    return make_synthetic_folder(tmp_path_factory.mktemp("photos"), 4, (640, 480))


def test_resnet18_resizes_on_the_uint8_tensor_as_torchvision_v2_does(resnet18, photos, tmp_path):
    candidates = list(scan_images(photos))
    fast = BatchPipeline(resnet18, tmp_path, None, fast_decode=True)
    assert fast.fast_resize is True
    default = BatchPipeline(resnet18, tmp_path, None).prepare(candidates).items
    quick = fast.prepare(candidates).items
    for candidate, own, ours in zip(candidates, default, quick):
        # The reference: torchvision's v2 transforms on the uint8 tensor, written out by hand.
        pixels = v2.functional.pil_to_tensor(Image.open(candidate.path).convert("RGB"))
        pixels = v2.functional.resize(pixels, [256], v2.InterpolationMode.BILINEAR, antialias=True)
        pixels = v2.functional.center_crop(pixels, [224, 224])
        reference = v2.functional.normalize(
            pixels.float() / 255, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
        )
        assert torch.allclose(ours.tensor, reference, atol=1e-6)
        # Not the model's own preprocessing (Pillow's resize) bit for bit, but within a grey level or two
        difference = (own.tensor - ours.tensor).abs()
        assert 0 < difference.max() <= TOLERANCE_LEVELS * GREY_LEVEL
        assert difference.mean() < 0.1 * GREY_LEVEL


def test_a_fast_decode_run_resizes_on_the_tensor_and_keeps_the_labels(resnet18, photos, tmp_path):
    def run(fast_decode: bool) -> tuple[dict, dict]:
        out = tmp_path / f"out-{fast_decode}"
        config = RunConfig("resnet18", photos, out, device="cpu", fast_decode=fast_decode)
        events = list(Runner(config, model=resnet18).events())
        tops = {e.image: e.fields["top"][0] for e in events if isinstance(e, ImageResult)}
        assert isinstance(events[-1], RunFinished)
        return tops, events[-1].summary

    full, full_summary = run(False)
    fast, fast_summary = run(True)
    assert full_summary["fast_resize"] is False and fast_summary["fast_resize"] is True
    assert fast.keys() == full.keys() and len(fast) == 4
    for image, best in full.items():
        assert fast[image]["index"] == best["index"], image
        assert abs(fast[image]["score"] - best["score"]) < 0.001, image


def test_a_bicubic_model_keeps_its_own_preprocessing(photos, tmp_path):
    efficientnet = load_bench_model("efficientnet_b0", torch.device("cpu"))[0]
    pipeline = BatchPipeline(efficientnet, tmp_path, None, fast_decode=True)
    assert pipeline.fast_preprocess is None and "bicubic" in pipeline.fast_resize
    candidates = list(scan_images(photos))[:2]
    default = BatchPipeline(efficientnet, tmp_path, None).prepare(candidates).items
    for own, ours in zip(default, pipeline.prepare(candidates).items):
        assert torch.equal(own.tensor, ours.tensor)


def test_a_model_whose_preprocessing_is_not_what_it_says_keeps_its_own(resnet18):
    """The tensor path is built from the model's description; the check on a test picture against the
    model's real transform catches a description that is wrong (another crop, other statistics)."""

    def with_transform(transform):
        return replace(resnet18, adapter=make_adapter("classification", transform=transform))

    other_crop = resnet18.preprocessing.to_transform()
    other_crop.transforms[1] = v2.CenterCrop([200, 200])
    fast, why = fast_preprocess_for(with_transform(other_crop))
    assert fast is None and "another shape" in why
    other_mean = replace(resnet18.preprocessing, mean=(0.5, 0.5, 0.5)).to_transform()
    fast, why = fast_preprocess_for(with_transform(other_mean))
    assert fast is None and "grey levels" in why
    # and the model's real transform passes the same check
    assert fast_preprocess_for(with_transform(resnet18.preprocessing.to_transform()))[1] is True
