"""Mask R-CNN's instance masks and Keypoint R-CNN's keypoints: in the JSONL, as an instance-mask PNG at
the original size, in the preview, and in detections.coco.json, checked with pycocotools itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from batchlens.core.models.base import LoadedModel, ModelInfo, prepare
from batchlens.core.models.catalogue import catalogue_adapter, weights_for
from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import ImageResult
from batchlens.core.run.runner import Runner
from batchlens.core.tasks.detection import coco_rle
from batchlens.core.tasks.palette import colour
from tests.core.modelkit import make_photos, read_jsonl, run_cli, save_scripted
from tests.core.test_tasks_detection import BLOCK_SIDECAR, BLOCKS, assert_valid_coco, make_block_images


def test_coco_rle_is_what_pycocotools_writes():
    rng = np.random.default_rng(3)
    masks = [
        np.zeros((5, 7), bool),
        np.ones((5, 7), bool),
        rng.random((40, 33)) > 0.5,  # many short runs
        np.pad(np.ones((30, 50), bool), ((3, 100), (90, 7))),  # long runs (> 32: several characters)
        np.eye(70, dtype=bool),  # starts with a 1
    ]
    for mask in masks:
        expected = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        ours = coco_rle(mask)
        assert ours["size"] == list(expected["size"])
        assert ours["counts"] == expected["counts"].decode("ascii")
        assert (coco_mask.decode({"size": ours["size"], "counts": ours["counts"].encode()}) == mask).all()


class BlockSegmenter(torch.nn.Module):
    """An instance model whose output we control: the bright block of each image as a box, a mask
    (probability 0.9 on the block) and two keypoints (the block's top-left and bottom-right corners),
    in the model input's pixels, plus a decoy (score 0.3) whose mask covers the whole image."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        results: list[dict[str, torch.Tensor]] = []
        for image in images:
            bright = image.mean(0) > 0.5
            ys = torch.nonzero(bright.any(1)).flatten()
            xs = torch.nonzero(bright.any(0)).flatten()
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            box = torch.stack([x1, y1, x2, y2]).float()
            masks = torch.stack([bright.float() * 0.9, torch.full_like(bright, 0.8, dtype=torch.float32)])
            corners = torch.stack([torch.stack([x1, y1]), torch.stack([x2, y2])]).float()
            keypoints = torch.cat([corners, torch.ones(2, 1)], dim=1)
            results.append(
                {
                    "boxes": torch.stack([box, torch.tensor([0.0, 0.0, 100.0, 100.0])]),
                    "labels": torch.tensor([1, 2]),
                    "scores": torch.tensor([0.9, 0.3]),
                    "masks": masks.unsqueeze(1),
                    "keypoints": torch.stack([keypoints, keypoints]),
                    "keypoints_scores": torch.tensor([[4.0, -1.0], [1.0, 1.0]]),
                }
            )
        return results


@pytest.fixture
def instance_model(tmp_path: Path) -> Path:
    return save_scripted(BlockSegmenter(), tmp_path / "models" / "instances.pt", BLOCK_SIDECAR)


def test_instance_masks_and_keypoints_land_in_original_pixels(instance_model: Path, tmp_path: Path):
    make_block_images(tmp_path / "in")
    out = tmp_path / "out"
    assert run_cli("--model", instance_model, "--input", tmp_path / "in", "--output", out) == 0
    lines = {line["image"]: line for line in read_jsonl(out / "predictions.jsonl")}
    coco = assert_valid_coco(out / "detections.coco.json", tmp_path / "in")
    api = COCO(str(out / "detections.coco.json"))  # pycocotools loads the file as it is
    for name, (size, (x1, y1, x2, y2)) in BLOCKS.items():
        line = lines[name]
        (det,) = line["detections"]  # the 0.3 decoy is below --min-score 0.5
        assert det["label"] == "block" and det["mask_value"] == 1
        # The instance mask: one PNG at the original size, mirroring the input's name.
        assert line["mask"] == name
        with Image.open(out / line["mask"]) as png:
            assert png.size == size
            owner = np.asarray(png)
        expected = np.zeros(size[::-1], bool)
        expected[y1:y2, x1:x2] = True
        got = owner == 1
        iou = (got & expected).sum() / (got | expected).sum()
        assert iou > 0.95, iou  # the model saw 100x100: edges move by up to one model pixel
        assert set(np.unique(owner)) == {0, 1}
        # Keypoints in original pixels, with the model's keypoint scores.
        tolerance = max(size) / 100 + 0.01
        (kx1, ky1, s1), (kx2, ky2, s2) = det["keypoints"]
        np.testing.assert_allclose([kx1, ky1, kx2, ky2], [x1, y1, x2, y2], atol=tolerance)
        assert (s1, s2) == (4.0, -1.0)
        # COCO: the segmentation decodes (with pycocotools) to exactly the PNG's pixels.
        image_id = next(im["id"] for im in coco["images"] if im["file_name"] == name)
        (ann,) = api.loadAnns(api.getAnnIds(imgIds=[image_id]))
        assert (api.annToMask(ann) == got).all()
        assert ann["area"] == int(got.sum())
        assert ann["num_keypoints"] == 1 and ann["keypoints"][2::3] == [2, 0]  # the -1 point is not visible
    (block,) = [c for c in coco["categories"] if c["name"] == "block"]
    assert block["keypoints"] == ["0", "1"]  # a model file names no keypoints


def test_instance_preview_tints_the_mask(instance_model: Path, tmp_path: Path):
    make_block_images(tmp_path / "in")
    config = RunConfig(str(instance_model), tmp_path / "in", tmp_path / "out", device="cpu", previews=True)
    event = next(e for e in Runner(config).events() if isinstance(e, ImageResult) and e.image == "wide.png")
    preview = np.asarray(event.output_preview).astype(int)
    # The wide image (400x200, block 100..300 x 50..150) is shown at 320x160: the block's middle is
    # white blended half-way with the class colour, outside it the black background is untouched.
    middle = preview[60:100, 120:200].reshape(-1, 3)
    expected = np.round(np.array([255, 255, 255]) * 0.5 + np.array(colour(1)) * 0.5)
    assert (np.abs(middle - expected) <= 1).all()
    assert (preview[5:30, 5:60] == 0).all()


@pytest.mark.parametrize(
    ("arch", "points"), [("maskrcnn_resnet50_fpn", 0), ("keypointrcnn_resnet50_fpn", 17)]
)
def test_torchvision_instance_models_run_end_to_end(arch: str, points: int, tmp_path: Path):
    """The real torchvision architectures (seeded random weights, small input size so the test is
    quick) with the catalogue's preprocessing, labels and keypoint names."""
    torch.manual_seed(0)
    module = torchvision.models.get_model(
        arch,
        weights=None,
        weights_backbone=None,
        min_size=96,
        max_size=160,
        box_score_thresh=0.0,
        box_detections_per_img=8,  # (keypoint R-CNN reads each detection's heatmaps in a Python loop)
    )
    adapter = catalogue_adapter("detection", weights_for(arch), {"min_score": 0.0})
    model = LoadedModel(
        ModelInfo(arch, "detection", "torchvision", "random weights"),
        prepare(module, torch.device("cpu")),
        adapter,
        torch.device("cpu"),
        takes_list=True,
    )
    make_photos(tmp_path / "in", sizes=[(96, 64), (70, 90)])
    out = tmp_path / "out"
    events = list(Runner(RunConfig(arch, tmp_path / "in", out, device="cpu"), model=model).events())
    lines = read_jsonl(out / "predictions.jsonl")
    assert [line["status"] for line in lines] == ["ok", "ok"] and len(events) > 2
    api = COCO(str(out / "detections.coco.json"))
    for line in lines:
        assert line["detections"], "box_score_thresh 0 and min-score 0 keep the random model's boxes"
        with Image.open(tmp_path / "in" / line["image"]) as source:
            size = source.size
        if points:
            assert "mask" not in line
            assert all(len(d["keypoints"]) == points for d in line["detections"])
        else:
            with Image.open(out / line["mask"]) as png:
                assert png.size == size
                owner = np.asarray(png)
            values = [d["mask_value"] for d in line["detections"]]
            assert values == list(range(1, len(values) + 1))
            assert owner.max() <= len(line["detections"])
    if points:
        (person,) = [c for c in api.dataset["categories"] if c["name"] == "person"]
        assert person["keypoints"][:3] == ["nose", "left_eye", "right_eye"]
    else:
        for ann in api.loadAnns(api.getAnnIds()):
            image = api.loadImgs(ann["image_id"])[0]
            assert api.annToMask(ann).shape == (image["height"], image["width"])
