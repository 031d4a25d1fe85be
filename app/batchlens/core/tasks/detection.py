"""Detection (Faster R-CNN, RetinaNet, FCOS, SSD, Mask R-CNN, Keypoint R-CNN...): boxes in the original
image's pixels, a score threshold (`min_score`, default 0.5), and detections.coco.json at the end of
the run. Instance masks (Mask R-CNN) become one PNG per image whose pixel values say which detection
owns the pixel; keypoints (Keypoint R-CNN) go on each detection."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from batchlens.core.files import OutputFolder
from batchlens.core.image_guard import open_image
from batchlens.core.tasks.base import (
    PREVIEW_SIZE,
    ImageMeta,
    TaskAdapter,
    TaskResult,
    check_entries,
    is_number,
    label_image,
    thumbnail,
)
from batchlens.core.tasks.kinds import KINDS
from batchlens.core.tasks.palette import colour, tint

DEFAULT_MIN_SCORE = 0.5
MASK_THRESHOLD = 0.5  # Mask R-CNN's masks are per-pixel probabilities; torchvision's own cut-off
COCO_FILE = "detections.coco.json"
NOT_A_CLASS = {"__background__", "N/A"}  # torchvision's placeholders in its COCO category list


def coco_rle(mask: np.ndarray) -> dict:
    """A binary mask (H x W) as COCO's compressed RLE, the form pycocotools writes and reads: run
    lengths in column-major order starting with a run of zeros, each stored as the difference to the
    run two before it, 5 bits a character (a port of `rleToString` in cocoapi's maskApi.c)."""
    height, width = mask.shape
    flat = np.asarray(mask, dtype=bool).reshape(-1, order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs.insert(0, 0)  # counts always start with the zeros
    chars = []
    for i, run in enumerate(runs):
        x = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            chars.append(chr(c + 48))
    return {"size": [height, width], "counts": "".join(chars)}


@dataclass
class DetectionAdapter(TaskAdapter):
    keypoint_names: list[str] | None = None  # Keypoint R-CNN's, from torchvision's weights meta

    task = "detection"
    kind = KINDS[task]
    picture_field, picture_required = "mask", False  # instance masks, when the model gives them
    end_files = (COCO_FILE,)

    @property
    def min_score(self) -> float:
        value = self.options.get("min_score")
        return DEFAULT_MIN_SCORE if value is None else float(value)

    def postprocess(self, output: dict, meta: ImageMeta) -> TaskResult:
        """`output` is torchvision's per-image dict: boxes (x1, y1, x2, y2 in the model input's pixels),
        labels and scores; Mask R-CNN adds masks (N x 1 x H x W probabilities), Keypoint R-CNN adds
        keypoints (N x K x 3: x, y, visibility) and keypoints_scores (N x K)."""
        scores = output["scores"].float().reshape(-1)
        keep = scores >= self.min_score
        boxes = output["boxes"].float().reshape(-1, 4)[keep]
        labels = output["labels"].reshape(-1)[keep]
        scores = scores[keep]
        # Undo the preprocessing's resize: model-input pixels -> original pixels.
        width, height = meta.original_size
        sx, sy = width / meta.input_size[0], height / meta.input_size[1]
        boxes = boxes * torch.tensor([sx, sy] * 2, dtype=boxes.dtype)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        order = scores.argsort(descending=True, stable=True).tolist()
        detections = [
            {
                "label": self.label(int(labels[i])),
                "index": int(labels[i]),
                "score": round(float(scores[i]), 4),
                "box": [round(float(v), 2) for v in boxes[i]],
            }
            for i in order
        ]
        if "keypoints" in output:
            points = output["keypoints"].float().reshape(keep.numel(), -1, 3)[keep]
            # A point's score: keypoints_scores where the model gives them, else its visibility flag.
            given = output.get("keypoints_scores")
            point_scores = points[..., 2] if given is None else given.float().reshape(keep.numel(), -1)[keep]
            for det, i in zip(detections, order):
                det["keypoints"] = [
                    [round(x * sx, 2), round(y * sy, 2), round(s, 3)]
                    for (x, y, _), s in zip(points[i].tolist(), point_scores[i].tolist())
                ]
        image = None
        if "masks" in output:
            image = self._instance_image(output["masks"], keep, order, (width, height))
            for value, det in enumerate(detections, start=1):
                det["mask_value"] = value
        return TaskResult({"size": [width, height], "detections": detections}, image=image)

    @staticmethod
    def _instance_image(masks: torch.Tensor, keep: torch.Tensor, order: list[int], size) -> Image.Image:
        """One image at the original size whose pixel value is the 1-based position, in the JSONL's
        list, of the detection that owns the pixel (0: none). Where masks overlap, the better score wins."""
        masks = masks.reshape(keep.numel(), *masks.shape[-2:])[keep]
        owner = torch.zeros(masks.shape[-2:], dtype=torch.int32)
        for value in range(len(order), 0, -1):  # worst first, so the best is painted last
            owner[masks[order[value - 1]] >= MASK_THRESHOLD] = value
        return label_image(owner, size)

    def result_options(self) -> dict:
        return {"min_score": self.min_score}

    def check_fields(self, record: dict) -> str | None:
        fields = {"label": str, "index": int, "score": float, "box": list}
        reason = check_entries(record, "detections", fields)
        boxes = [] if reason else [d["box"] for d in record["detections"]]
        if any(len(box) != 4 or not all(map(is_number, box)) for box in boxes):
            reason = "a detection's 'box' is not four numbers"
        return reason

    def write(self, result: TaskResult, meta: ImageMeta, output_dir: Path) -> None:
        if result.image is not None:
            self.write_image(result, meta, output_dir, "mask")

    def preview(self, image: Image.Image, result: TaskResult, size: int = PREVIEW_SIZE) -> Image.Image | None:
        thumb = thumbnail(image, size)
        factor = thumb.width / result.fields.get("size", image.size)[0]  # boxes are in original pixels
        detections = result.fields["detections"]
        if result.image is not None:  # instance masks tinted in their class colours
            owner = np.asarray(result.image.resize(thumb.size, Image.Resampling.NEAREST)).astype(np.int64)
            table = np.array([(0, 0, 0)] + [colour(det["index"]) for det in detections], dtype=np.uint8)
            thumb = tint(thumb, table[owner], owner > 0)
        draw = ImageDraw.Draw(thumb)
        for det in reversed(detections):  # best drawn last, on top
            box = [v * factor for v in det["box"]]
            rgb = colour(det["index"])
            draw.rectangle(box, outline=rgb, width=2)
            for x, y, score in det.get("keypoints", []):
                if score > 0:
                    draw.ellipse([x * factor - 2, y * factor - 2, x * factor + 2, y * factor + 2], fill=rgb)
            text = f"{det['label']} {det['score']:.2f}"
            left, top = box[0], max(0, box[1] - 11)
            draw.rectangle(draw.textbbox((left, top), text), fill=rgb)
            draw.text((left, top), text, fill=(0, 0, 0) if sum(rgb) > 380 else (255, 255, 255))
        return thumb

    def finish(self, output_dir: Path | OutputFolder, records: list[dict]) -> list[Path]:
        folder = OutputFolder.at(output_dir)
        text = json.dumps(self.coco(records, folder.path), ensure_ascii=False) + "\n"
        return [folder.write_text(COCO_FILE, text)]

    def coco(self, records: list[dict], output_dir: Path | None = None) -> dict:
        """The run as a COCO detection file: images, annotations (bbox x, y, w, h, with score; with
        masks, `segmentation` as compressed RLE read back from the instance PNGs in `output_dir`; with
        keypoints, `keypoints` and `num_keypoints`) and categories (ids are the model's class indices)."""
        images, annotations, used = [], [], set()
        keypoint_count = 0
        for record in records:
            if record.get("status") != "ok" or "detections" not in record:
                continue
            image_id = len(images) + 1
            width, height = record["size"]
            images.append({"id": image_id, "file_name": record["image"], "width": width, "height": height})
            owner = None
            if record.get("mask") and output_dir is not None:
                with open(output_dir / record["mask"], "rb") as f, open_image(f) as mask_image:
                    owner = np.asarray(mask_image)
            for det in record["detections"]:
                x1, y1, x2, y2 = det["box"]
                w, h = round(x2 - x1, 2), round(y2 - y1, 2)
                used.add(det["index"])
                annotation = {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": det["index"],
                    "bbox": [x1, y1, w, h],
                    "area": round(w * h, 2),
                    "iscrowd": 0,
                    "score": det["score"],
                }
                if owner is not None and "mask_value" in det:
                    pixels = owner == det["mask_value"]
                    annotation["segmentation"] = coco_rle(pixels)
                    annotation["area"] = int(pixels.sum())
                if "keypoints" in det:
                    # COCO's visibility flag: 2 (visible) where the model scored the point, else 0.
                    points = [(x, y, 2 if s > 0 else 0) for x, y, s in det["keypoints"]]
                    annotation["keypoints"] = [v for point in points for v in point]
                    annotation["num_keypoints"] = sum(1 for *_, v in points if v)
                    keypoint_count = max(keypoint_count, len(points))
                annotations.append(annotation)
        names = {i: name for i, name in enumerate(self.labels or []) if name not in NOT_A_CLASS}
        names.update({i: self.label(i) for i in used if i not in names})
        categories = [{"id": i, "name": names[i], "supercategory": ""} for i in sorted(names)]
        if keypoint_count:
            point_names = self.keypoint_names or [str(k) for k in range(keypoint_count)]
            for category in categories:
                category["keypoints"] = list(point_names)
                category["skeleton"] = []
        info = {
            "description": "Detections by BatchLens",
            "date_created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        return {"info": info, "images": images, "annotations": annotations, "categories": categories}
