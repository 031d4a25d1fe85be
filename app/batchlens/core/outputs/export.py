"""Handing a run's results to a spreadsheet or another tool: `batchlens export RUN --format csv|coco|yolo
--to PATH` and the window's File › Export….

- CSV (UTF-8 with a byte-order mark, so a spreadsheet reads accents right): one row per image for
  classification (the model's label and score, `reviewed_label` beside them), one row per box for
  detection (`source` says whether the box is the model's or the person's), one row per image with each
  class's share of the pixels for segmentation. A cell that a spreadsheet would run as a formula
  (starting with = + - @) is written with a leading apostrophe.
- COCO JSON and YOLO (a folder: classes.txt, data.yaml and labels/<image>.txt, centre x, y, width,
  height as fractions of the image): detection boxes, the reviews applied with `reviewed=True`.

Never overwrites: an existing destination is refused with one sentence.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from pathlib import Path, PurePosixPath

from batchlens.core.errors import BatchLensError
from batchlens.core.files import atomic_write_text
from batchlens.core.outputs.run_facts import RunFacts, boxes_of, load_run, top_label

FORMATS = ("csv", "coco", "yolo")


def _cell(value) -> str | float | int:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def _rows_csv(rows: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return "\ufeff" + out.getvalue()


def kept_boxes(facts: RunFacts, image: str, reviewed: bool, min_score: float) -> list[dict]:
    """An image's boxes at or above `min_score` (the person's boxes are kept whatever their score)."""
    review = facts.reviews.get(image)
    if reviewed and review is not None and review.boxes is not None:
        return review.boxes
    return [b for b in boxes_of(facts, image, reviewed=False) if (b.get("score") or 0.0) >= min_score]


def box_counts(facts: RunFacts, min_score: float = 0.0, reviewed: bool = False) -> tuple[Counter, int]:
    """(boxes per label at or above `min_score`, images left with none): what a threshold keeps."""
    counts: Counter = Counter()
    empty = 0
    for image, line in facts.lines.items():
        if line.get("status") != "ok":
            continue
        boxes = kept_boxes(facts, image, reviewed, min_score)
        counts.update(str(b.get("label")) for b in boxes)
        empty += not boxes
    return counts, empty


def csv_rows(facts: RunFacts, min_score: float = 0.0) -> list[list]:
    task = facts.task
    if task == "classification":
        rows = [["image", "status", "label", "score", "reviewed_label", "reviewed_at", "error"]]
        for image, line in facts.lines.items():
            label, score = top_label(line)
            review = facts.reviews.get(image)
            reviewed = review.label if review is not None else None
            at = review.at if review is not None else None
            rows.append([image, line["status"], label, score, reviewed, at, line.get("error")])
        return rows
    if task == "detection":
        rows = [["image", "status", "source", "label", "score", "x1", "y1", "x2", "y2", "error"]]
        for image, line in facts.lines.items():
            if line["status"] != "ok":
                rows.append([image, line["status"], "", "", "", "", "", "", "", line.get("error")])
                continue
            sources = [("model", kept_boxes(facts, image, False, min_score))]
            review = facts.reviews.get(image)
            if review is not None and review.boxes is not None:
                sources.append(("review", review.boxes))
            for source, boxes in sources:
                for box in boxes:
                    rows.append([image, "ok", source, box.get("label"), box.get("score"), *box["box"], None])
        return rows
    if task == "segmentation":
        names = []
        for line in facts.lines.values():
            for entry in line.get("classes") or []:
                if isinstance(entry, dict) and entry.get("label") not in names:
                    names.append(entry.get("label"))
        rows = [
            ["image", "status", "largest_class", "reviewed_label", *[f"share:{n}" for n in names], "error"]
        ]
        for image, line in facts.lines.items():
            shares = {
                c.get("label"): c.get("fraction") for c in line.get("classes") or [] if isinstance(c, dict)
            }
            largest = next((c.get("label") for c in line.get("classes") or [] if c.get("index") != 0), None)
            review = facts.reviews.get(image)
            rows.append(
                [
                    image,
                    line["status"],
                    largest,
                    review.label if review is not None else None,
                    *[shares.get(n, 0.0 if line["status"] == "ok" else None) for n in names],
                    line.get("error"),
                ]
            )
        return rows
    raise BatchLensError(
        f"The run in {facts.path} is {facts.task or 'of no known task'}; it has no table to export."
    )


def _categories(facts: RunFacts, reviewed: bool) -> list[str]:
    """Every label with a box, in the model's index order first, then the reviewed-only ones."""
    indexed: dict[str, int] = {}
    for line in facts.lines.values():
        for det in line.get("detections") or []:
            if isinstance(det, dict) and isinstance(det.get("index"), int):
                indexed.setdefault(str(det.get("label")), det["index"])
    names = sorted(indexed, key=lambda n: (indexed[n], n))
    if reviewed:
        for review in facts.reviews.values():
            for box in review.boxes or []:
                if box["label"] not in names:
                    names.append(box["label"])
    return names


def coco_document(facts: RunFacts, reviewed: bool = False, min_score: float = 0.0) -> dict:
    names = _categories(facts, reviewed)
    ids = {name: i + 1 for i, name in enumerate(names)}
    images, annotations = [], []
    for image, line in facts.lines.items():
        if line["status"] != "ok" or not isinstance(line.get("size"), list):
            continue
        width, height = line["size"]
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": image, "width": width, "height": height})
        for box in kept_boxes(facts, image, reviewed, min_score):
            x1, y1, x2, y2 = box["box"]
            w, h = round(x2 - x1, 2), round(y2 - y1, 2)
            annotation = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": ids[str(box["label"])],
                "bbox": [x1, y1, w, h],
                "area": round(w * h, 2),
                "iscrowd": 0,
            }
            if box.get("score") is not None:
                annotation["score"] = box["score"]
            annotations.append(annotation)
    categories = [{"id": ids[n], "name": n, "supercategory": ""} for n in names]
    return {
        "info": {"description": "Exported by BatchLens" + (" (with the reviews)" if reviewed else "")},
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def _refuse_existing(path: Path) -> None:
    if os.path.lexists(path):
        raise BatchLensError(f"{path} already exists and exporting never overwrites; choose a new name.")


def export(
    run_dir: Path | str, fmt: str, to: Path | str, reviewed: bool = False, min_score: float = 0.0
) -> list[Path]:
    """Write the export; returns the files written. Raises BatchLensError (one sentence) when it cannot.
    `min_score` (detection): the model's boxes below it are left out, without running the model again."""
    if fmt not in FORMATS:
        raise BatchLensError(f"{fmt!r} is not an export format; choose csv, coco or yolo.")
    facts = load_run(run_dir)
    to = Path(to).expanduser()
    _refuse_existing(to)
    if fmt == "csv":
        atomic_write_text(to, _rows_csv(csv_rows(facts, min_score)))
        return [to]
    if facts.task != "detection":
        raise BatchLensError(
            f"COCO and YOLO exports hold boxes, and the run in {facts.path} is "
            f"{facts.task or 'of no known task'}, not detection; export it as csv."
        )
    document = coco_document(facts, reviewed, min_score)
    if fmt == "coco":
        atomic_write_text(to, json.dumps(document, ensure_ascii=False) + "\n")
        return [to]
    return _write_yolo(document, to)


def _write_yolo(document: dict, to: Path) -> list[Path]:
    to.mkdir(parents=True)
    names = [c["name"] for c in document["categories"]]
    written = [to / "classes.txt", to / "data.yaml"]
    atomic_write_text(written[0], "".join(f"{n}\n" for n in names))
    yaml_names = "".join(f"  {i}: {json.dumps(n, ensure_ascii=False)}\n" for i, n in enumerate(names))
    atomic_write_text(written[1], f"path: .\nnames:\n{yaml_names}")
    per_image: dict[int, list[str]] = {image["id"]: [] for image in document["images"]}
    sizes = {image["id"]: (image["width"], image["height"]) for image in document["images"]}
    for a in document["annotations"]:
        width, height = sizes[a["image_id"]]
        x, y, w, h = a["bbox"]
        cx, cy = (x + w / 2) / width, (y + h / 2) / height
        per_image[a["image_id"]].append(
            f"{a['category_id'] - 1} {cx:.6f} {cy:.6f} {w / width:.6f} {h / height:.6f}\n"
        )
    for image in document["images"]:
        rel = PurePosixPath(image["file_name"]).with_suffix(".txt")
        path = to / "labels" / rel
        atomic_write_text(path, "".join(per_image[image["id"]]))
        written.append(path)
    return written


__all__ = ["FORMATS", "box_counts", "coco_document", "csv_rows", "export", "kept_boxes", "load_run"]
