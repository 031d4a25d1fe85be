"""Segmentation: the engine's masks equal a hand-written torchvision pipeline's, at the input's size and
mirroring the input tree; class fractions, the overlay preview, mask_classes.json; per-image freeing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import get_model_weights

from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import ImageResult
from batchlens.core.run.runner import Runner
from batchlens.core.tasks.palette import colour
from tests.core.modelkit import (
    assert_flat_live_tensors,
    load_rgb,
    make_photos,
    random_model,
    read_jsonl,
    run_cli,
    save_state_dict,
)

ARCH = "lraspp_mobilenet_v3_large"


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    model = random_model(ARCH)
    return model, save_state_dict(model, tmp_path_factory.mktemp("seg") / "lraspp.pth")


def test_engine_matches_reference_pipeline(segmenter, tmp_path: Path):
    model, weights_file = segmenter
    photos = make_photos(tmp_path / "in" / "sub", sizes=[(60, 52), (50, 58)])  # ~600x520 for the model
    out = tmp_path / "out"
    args = ("--model", ARCH, "--weights", weights_file, "--input", tmp_path / "in", "--output", out)
    assert run_cli(*args, "--recursive") == 0

    # Reference: the weights' transforms -> model -> argmax over classes -> nearest resize to the original.
    weights = get_model_weights(ARCH).DEFAULT
    preprocess, categories = weights.transforms(), weights.meta["categories"]
    lines = read_jsonl(out / "predictions.jsonl")
    assert [line["image"] for line in lines] == [f"sub/{p.name}" for p in photos]
    for line, photo in zip(lines, photos):
        image = load_rgb(photo)
        with torch.inference_mode():
            logits = model(preprocess(image).unsqueeze(0))["out"][0]
        small = Image.fromarray(logits.argmax(0).numpy().astype(np.uint8))
        expected = np.asarray(small.resize(image.size, Image.Resampling.NEAREST))

        assert line["mask"] == f"sub/{photo.name}", "the mask mirrors the input tree"
        with Image.open(out / line["mask"]) as mask_file:
            assert mask_file.size == image.size and mask_file.mode == "L"
            mask = np.asarray(mask_file)
        np.testing.assert_array_equal(mask, expected)
        assert len(np.unique(mask)) >= 2, "a one-class mask would prove little"

        counts = np.bincount(mask.reshape(-1))
        fractions = {c["label"]: c["fraction"] for c in line["classes"]}
        assert fractions == {
            categories[i]: pytest.approx(n / mask.size, abs=1e-5) for i, n in enumerate(counts) if n
        }
        assert [c["fraction"] for c in line["classes"]] == sorted(fractions.values(), reverse=True)
        assert line["size"] == list(image.size)

    legend = json.loads((out / "mask_classes.json").read_text())["classes"]
    assert [c["label"] for c in legend] == categories
    assert legend[0]["colour"] == [0, 0, 0] and legend[1]["colour"] == list(colour(1))


def test_overlay_preview_tints_classes(tmp_path: Path):
    """A model file whose mask we know: class 1 in the left half, 0 (background) on the right."""

    class LeftHalf(torch.nn.Module):
        def forward(self, x):
            logits = torch.zeros(x.shape[0], 2, x.shape[2], x.shape[3])
            logits[:, 1, :, : x.shape[3] // 2] = 1.0
            return {"out": logits}

    model_file = tmp_path / "halves.pt"
    torch.jit.save(torch.jit.script(LeftHalf()), str(model_file))
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (200, 100), (200, 200, 200)).save(folder / "grey.png")
    config = RunConfig(
        str(model_file),
        folder,
        tmp_path / "out",
        device="cpu",
        previews=True,
        model_options={"task": "segmentation", "input_size": [50, 50]},
    )
    event = next(e for e in Runner(config).events() if isinstance(e, ImageResult))
    assert event.ok, event.error
    assert event.fields["classes"] == [  # equal fractions: in class order
        {"label": "0", "index": 0, "fraction": 0.5},
        {"label": "1", "index": 1, "fraction": 0.5},
    ]
    with Image.open(tmp_path / "out" / "grey.png") as mask:
        assert mask.size == (200, 100)
        assert np.asarray(mask)[:, :100].min() == 1 and np.asarray(mask)[:, 100:].max() == 0
    preview = np.asarray(event.output_preview).astype(int)
    tint = (np.array([200, 200, 200]) + np.array(colour(1))) / 2
    assert np.abs(preview[50, 20] - tint).max() <= 1, "class 1 is blended with its colour"
    assert (preview[50, 180] == 200).all(), "background is left as it was"


def test_segmentation_keeps_nothing_per_image(segmenter, tmp_path: Path):
    _, weights_file = segmenter
    make_photos(tmp_path / "in", sizes=[(48, 36)] * 4)
    # A small input size keeps this quick; the engine path is the same.
    options = {"weights": str(weights_file), "input_size": [64, 64]}
    assert_flat_live_tensors(
        RunConfig(ARCH, tmp_path / "in", tmp_path / "out", device="cpu", model_options=options)
    )
