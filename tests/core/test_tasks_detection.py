"""Detection: the engine equals a hand-written torchvision pipeline, boxes land in the original image's
pixels, the COCO file is valid, the preview shows the boxes, and nothing is kept per image."""

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
    save_scripted,
    save_state_dict,
)

ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    model = random_model(ARCH)
    return model, save_state_dict(model, tmp_path_factory.mktemp("det") / "detector.pth")


def test_engine_matches_reference_pipeline(detector, tmp_path: Path):
    model, weights_file = detector
    photos = make_photos(tmp_path / "in")
    out = tmp_path / "out"
    # Batch size 2 with images of different sizes: both go to the model as one list.
    code = run_cli("--model", ARCH, "--weights", weights_file, "--input", tmp_path / "in", "--output", out,
                   "--min-score", "0.3", "--batch-size", "2")  # fmt: skip
    assert code == 0

    # Reference: the weights' own transforms -> model(list of images) -> score threshold.
    weights = get_model_weights(ARCH).DEFAULT
    preprocess, categories = weights.transforms(), weights.meta["categories"]
    with torch.inference_mode():
        expected = model([preprocess(load_rgb(p)) for p in photos])
    lines = read_jsonl(out / "predictions.jsonl")
    assert [line["image"] for line in lines] == [p.name for p in photos]
    total = 0
    for line, ref, photo in zip(lines, expected, photos):
        keep = ref["scores"] >= 0.3
        dets = line["detections"]
        assert len(dets) == int(keep.sum())
        total += len(dets)
        with Image.open(photo) as image:
            assert line["size"] == list(image.size)
        np.testing.assert_allclose(
            [d["box"] for d in dets], ref["boxes"][keep].numpy().reshape(-1, 4), atol=0.01
        )
        np.testing.assert_allclose([d["score"] for d in dets], ref["scores"][keep].numpy(), atol=1e-4)
        assert [d["label"] for d in dets] == [categories[i] for i in ref["labels"][keep].tolist()]
    assert total > 0, "the reference must have produced boxes for this to prove anything"
    assert_valid_coco(out / "detections.coco.json", tmp_path / "in")


def assert_valid_coco(path: Path, input_dir: Path) -> dict:
    """The COCO detection format: images, annotations (bbox x, y, w, h inside the image), categories."""
    coco = json.loads(path.read_text())
    assert {"images", "annotations", "categories"} <= set(coco)
    images = {im["id"]: im for im in coco["images"]}
    assert len(images) == len(coco["images"]), "image ids are unique"
    for im in coco["images"]:
        assert set(im) >= {"id", "file_name", "width", "height"}
        with Image.open(input_dir / im["file_name"]) as source:
            assert (im["width"], im["height"]) == source.size
    category_ids = {c["id"] for c in coco["categories"]}
    assert all(isinstance(c["name"], str) for c in coco["categories"])
    ann_ids = [a["id"] for a in coco["annotations"]]
    assert len(set(ann_ids)) == len(ann_ids)
    for ann in coco["annotations"]:
        assert set(ann) >= {"id", "image_id", "category_id", "bbox", "area", "iscrowd", "score"}
        image = images[ann["image_id"]]
        assert ann["category_id"] in category_ids
        x, y, w, h = ann["bbox"]
        assert w >= 0 and h >= 0 and ann["area"] == pytest.approx(w * h, abs=0.05)
        assert 0 <= x and x + w <= image["width"] + 0.01
        assert 0 <= y and y + h <= image["height"] + 0.01
    return coco


class BlockFinder(torch.nn.Module):
    """A detector whose output we control: the bounding box of the bright pixels of each image, in the
    model input's pixels (score 0.9), plus a decoy box scoring 0.3. It returns (losses, detections)
    like a scripted torchvision detector."""

    def forward(
        self, images: list[torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
        results: list[dict[str, torch.Tensor]] = []
        for image in images:
            bright = image.mean(0) > 0.5
            ys = torch.nonzero(bright.any(1)).flatten()
            xs = torch.nonzero(bright.any(0)).flatten()
            box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
            decoy = torch.tensor([0.0, 0.0, 10.0, 10.0])
            results.append(
                {
                    "boxes": torch.stack([box, decoy]),
                    "labels": torch.tensor([1, 2]),
                    "scores": torch.tensor([0.9, 0.3]),
                }
            )
        return {}, results


@pytest.fixture
def block_model(tmp_path: Path) -> Path:
    return save_scripted(BlockFinder(), tmp_path / "models" / "blocks.pt", BLOCK_SIDECAR)


BLOCK_SIDECAR = {
    "task": "detection",
    "input_size": [100, 100],
    "labels": ["__background__", "block", "decoy"],
}

# (image size, block) with the block as x1, y1, x2, y2 in the original image's pixels
BLOCKS = {"wide.png": ((400, 200), (100, 50, 300, 150)), "tall.png": ((120, 360), (30, 180, 90, 324))}


def make_block_images(folder: Path) -> None:
    folder.mkdir()
    for name, (size, block) in BLOCKS.items():
        image = Image.new("RGB", size)
        image.paste((255, 255, 255), block)
        image.save(folder / name)


def test_boxes_land_in_original_coordinates(block_model: Path, tmp_path: Path):
    make_block_images(tmp_path / "in")
    out = tmp_path / "out"
    assert run_cli("--model", block_model, "--input", tmp_path / "in", "--output", out) == 0
    lines = {line["image"]: line for line in read_jsonl(out / "predictions.jsonl")}
    for name, (size, block) in BLOCKS.items():
        dets = lines[name]["detections"]
        assert [d["label"] for d in dets] == ["block"], "min-score 0.5 drops the 0.3 decoy"
        # The model saw 100x100; one model pixel is (w/100, h/100) original pixels.
        tolerance = max(size) / 100 + 0.01
        np.testing.assert_allclose(dets[0]["box"], block, atol=tolerance)
    coco = assert_valid_coco(out / "detections.coco.json", tmp_path / "in")
    assert [c["name"] for c in coco["categories"]] == ["block", "decoy"]
    assert len(coco["annotations"]) == 2

    # A lower threshold keeps the decoy, scaled to the original pixels too.
    again = ["--model", block_model, "--input", tmp_path / "in", "--output", out, "--min-score", "0.2"]
    assert run_cli(*again, "--overwrite") == 0  # replaces the run above
    wide = next(line for line in read_jsonl(out / "predictions.jsonl") if line["image"] == "wide.png")
    assert [d["label"] for d in wide["detections"]] == ["block", "decoy"]
    assert wide["detections"][1]["box"] == [0.0, 0.0, 40.0, 20.0]


def test_preview_draws_the_boxes(block_model: Path, tmp_path: Path):
    make_block_images(tmp_path / "in")
    config = RunConfig(str(block_model), tmp_path / "in", tmp_path / "out", device="cpu", previews=True)
    results = [e for e in Runner(config).events() if isinstance(e, ImageResult)]
    event = next(e for e in results if e.image == "wide.png")
    preview = np.asarray(event.output_preview)
    assert preview.shape[:2] == np.asarray(event.input_preview).shape[:2]
    # The wide image is shown at 320x160 (factor 0.8): the box's left edge runs down x = 80.
    edge = preview[70:110, 80]
    assert (edge == colour(1)).all(axis=1).sum() >= 30, "the box is drawn in the class colour"
    assert not (np.asarray(event.input_preview)[70:110, 80] == colour(1)).all(axis=1).any()


def test_detection_keeps_nothing_per_image(detector, tmp_path: Path):
    _, weights_file = detector
    make_photos(tmp_path / "in", sizes=[(48, 36)] * 4)
    config = RunConfig(ARCH, tmp_path / "in", tmp_path / "out", device="cpu",
                       model_options={"weights": str(weights_file)})  # fmt: skip
    assert_flat_live_tensors(config)
