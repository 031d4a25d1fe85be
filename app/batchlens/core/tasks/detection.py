"""Detection (Faster R-CNN, RetinaNet, FCOS, SSD...): boxes in the original image's pixels, a score
threshold (`min_score`, default 0.5), and detections.coco.json at the end of the run."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from batchlens.core.results import atomic_write_text
from batchlens.core.tasks.base import ImageMeta, TaskAdapter, TaskResult, thumbnail
from batchlens.core.tasks.palette import colour

DEFAULT_MIN_SCORE = 0.5
COCO_FILE = "detections.coco.json"
NOT_A_CLASS = {"__background__", "N/A"}  # torchvision's placeholders in its COCO category list


class DetectionAdapter(TaskAdapter):
    task = "detection"

    @property
    def min_score(self) -> float:
        value = self.options.get("min_score")
        return DEFAULT_MIN_SCORE if value is None else float(value)

    def postprocess(self, output: dict, meta: ImageMeta) -> TaskResult:
        """`output` is torchvision's per-image dict: boxes (x1, y1, x2, y2 in the model input's pixels),
        labels and scores."""
        scores = output["scores"].float().reshape(-1)
        keep = scores >= self.min_score
        boxes = output["boxes"].float().reshape(-1, 4)[keep]
        labels = output["labels"].reshape(-1)[keep]
        scores = scores[keep]
        # Undo the preprocessing's resize: model-input pixels -> original pixels.
        width, height = meta.original_size
        scale = torch.tensor([width / meta.input_size[0], height / meta.input_size[1]] * 2, dtype=boxes.dtype)
        boxes = boxes * scale
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        order = scores.argsort(descending=True, stable=True)
        detections = [
            {
                "label": self.label(int(labels[i])),
                "index": int(labels[i]),
                "score": round(float(scores[i]), 4),
                "box": [round(float(v), 2) for v in boxes[i]],
            }
            for i in order.tolist()
        ]
        return TaskResult({"size": [width, height], "detections": detections})

    def preview(self, image: Image.Image, result: TaskResult) -> Image.Image | None:
        thumb = thumbnail(image)
        factor = thumb.width / image.width
        draw = ImageDraw.Draw(thumb)
        for det in reversed(result.fields["detections"]):  # best drawn last, on top
            box = [v * factor for v in det["box"]]
            rgb = colour(det["index"])
            draw.rectangle(box, outline=rgb, width=2)
            text = f"{det['label']} {det['score']:.2f}"
            left, top = box[0], max(0, box[1] - 11)
            draw.rectangle(draw.textbbox((left, top), text), fill=rgb)
            draw.text((left, top), text, fill=(0, 0, 0) if sum(rgb) > 380 else (255, 255, 255))
        return thumb

    def finish(self, output_dir: Path, records: list[dict]) -> list[Path]:
        path = output_dir / COCO_FILE
        atomic_write_text(path, json.dumps(self.coco(records), ensure_ascii=False) + "\n")
        return [path]

    def coco(self, records: list[dict]) -> dict:
        """The run as a COCO detection file: images, annotations (bbox x, y, w, h, with score) and
        categories (category ids are the model's class indices)."""
        images, annotations, used = [], [], set()
        for record in records:
            if record.get("status") != "ok" or "detections" not in record:
                continue
            image_id = len(images) + 1
            width, height = record["size"]
            images.append({"id": image_id, "file_name": record["image"], "width": width, "height": height})
            for det in record["detections"]:
                x1, y1, x2, y2 = det["box"]
                w, h = round(x2 - x1, 2), round(y2 - y1, 2)
                used.add(det["index"])
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": det["index"],
                        "bbox": [x1, y1, w, h],
                        "area": round(w * h, 2),
                        "iscrowd": 0,
                        "score": det["score"],
                    }
                )
        names = {i: name for i, name in enumerate(self.labels or []) if name not in NOT_A_CLASS}
        names.update({i: self.label(i) for i in used if i not in names})
        categories = [{"id": i, "name": names[i], "supercategory": ""} for i in sorted(names)]
        info = {
            "description": "Detections by BatchLens",
            "date_created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        return {"info": info, "images": images, "annotations": annotations, "categories": categories}
