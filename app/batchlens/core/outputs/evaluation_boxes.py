"""Detection against a COCO JSON truth (mAP as pycocotools' COCOeval computes it for boxes), and
segmentation against a folder of masks (mean IoU, pixel accuracy, IoU per class).

Detection follows COCOeval step by step (bbox, every area, at most 100 boxes an image): boxes matched
greedily by score at the IoU thresholds 0.50:0.05:0.95, crowd boxes ignored, precision made monotone
and read at 101 recall points, averaged over the classes that have a true box. An image is matched by
its path under the input (the truth's `file_name`), a class by its name. tests/core/test_evaluation_boxes.py
checks the numbers against COCOeval itself on the same files.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np

from batchlens.core.errors import BatchLensError, ImageError
from batchlens.core.image_guard import open_image
from batchlens.core.outputs.run_facts import Evaluation, RunFacts

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
MAX_DETECTIONS = 100
AREA_ALL = (0.0, 1e10)


def _read_coco(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BatchLensError(f"Could not read the truth file {path}: {exc.strerror or exc}.") from None
    except ValueError:
        raise BatchLensError(f"{path} is not JSON; a detection truth is a COCO JSON file.") from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations")
    ):
        raise BatchLensError(f"{path} is not a COCO file: it needs `images` and `annotations` lists.")
    return data


def _iou(dt: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of xywh boxes, as pycocotools' bbIou: for a crowd truth, the overlap over the box's area."""
    if not len(dt) or not len(gt):
        return np.zeros((len(dt), len(gt)))
    dx1, dy1 = dt[:, 0:1], dt[:, 1:2]
    dx2, dy2 = dx1 + dt[:, 2:3], dy1 + dt[:, 3:4]
    gx1, gy1, gx2, gy2 = gt[:, 0], gt[:, 1], gt[:, 0] + gt[:, 2], gt[:, 1] + gt[:, 3]
    w = np.minimum(dx2, gx2) - np.maximum(dx1, gx1)
    h = np.minimum(dy2, gy2) - np.maximum(dy1, gy1)
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    d_area = dt[:, 2:3] * dt[:, 3:4]
    union = np.where(crowd[None, :], d_area, d_area + (gt[:, 2] * gt[:, 3])[None, :] - inter)
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _match(dts: list[dict], gts: list[dict]) -> dict | None:
    """COCOeval.evaluateImg for one image and class (every area, MAX_DETECTIONS)."""
    if not dts and not gts:
        return None
    ignore = np.array(
        [bool(g.get("iscrowd")) or not AREA_ALL[0] <= g["area"] <= AREA_ALL[1] for g in gts], bool
    )
    order = np.argsort(ignore, kind="mergesort")
    gts = [gts[i] for i in order]
    gt_ignore = ignore[order]
    crowd = np.array([bool(g.get("iscrowd")) for g in gts], bool)
    dts = [dts[i] for i in np.argsort([-d["score"] for d in dts], kind="mergesort")][:MAX_DETECTIONS]
    ious = _iou(
        np.array([d["bbox"] for d in dts], float).reshape(-1, 4),
        np.array([g["bbox"] for g in gts], float).reshape(-1, 4),
        crowd,
    )
    t_count = len(IOU_THRESHOLDS)
    gt_matched = np.zeros((t_count, len(gts)), bool)
    dt_matched = np.zeros((t_count, len(dts)), bool)
    dt_ignore = np.zeros((t_count, len(dts)), bool)
    for t, threshold in enumerate(IOU_THRESHOLDS):
        for d in range(len(dts)):
            best, m = min(threshold, 1 - 1e-10), -1
            for g in range(len(gts)):
                if gt_matched[t, g] and not crowd[g]:
                    continue
                if m > -1 and not gt_ignore[m] and gt_ignore[g]:
                    break
                if ious[d, g] < best:
                    continue
                best, m = ious[d, g], g
            if m == -1:
                continue
            dt_ignore[t, d] = gt_ignore[m]
            dt_matched[t, d] = True
            gt_matched[t, m] = True
    outside = np.array([not AREA_ALL[0] <= d["area"] <= AREA_ALL[1] for d in dts], bool)
    dt_ignore |= ~dt_matched & outside[None, :]
    return {
        "scores": [d["score"] for d in dts],
        "matched": dt_matched,
        "ignore": dt_ignore,
        "gt_ignore": gt_ignore,
    }


def _precision(results: list[dict]) -> np.ndarray | None:
    """COCOeval.accumulate for one class: precision at each IoU threshold and recall point (None:
    the class has no true box that counts)."""
    scores = np.concatenate([r["scores"] for r in results]) if results else np.zeros(0)
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate([r["matched"] for r in results], axis=1)[:, order]
    ignore = np.concatenate([r["ignore"] for r in results], axis=1)[:, order]
    positives = int(np.count_nonzero(np.concatenate([r["gt_ignore"] for r in results]) == 0))
    if positives == 0:
        return None
    tp = np.cumsum(matched & ~ignore, axis=1).astype(float)
    fp = np.cumsum(~matched & ~ignore, axis=1).astype(float)
    out = np.zeros((len(IOU_THRESHOLDS), len(RECALL_POINTS)))
    for t in range(len(IOU_THRESHOLDS)):
        recall = tp[t] / positives
        precision = (tp[t] / (fp[t] + tp[t] + np.spacing(1))).tolist()
        for i in range(len(precision) - 1, 0, -1):
            precision[i - 1] = max(precision[i - 1], precision[i])
        for r, index in enumerate(np.searchsorted(recall, RECALL_POINTS, side="left")):
            if index < len(precision):
                out[t, r] = precision[index]
    return out


def evaluate_detection(facts: RunFacts, truth_path: Path) -> Evaluation:
    truth = _read_coco(truth_path)
    names = {c["id"]: str(c["name"]) for c in truth.get("categories", []) if isinstance(c, dict)}
    by_name = {name: cid for cid, name in names.items()}
    images = {i["id"]: str(i["file_name"]).replace("\\", "/") for i in truth["images"] if isinstance(i, dict)}
    gts: dict[tuple, list[dict]] = {}
    for a in truth["annotations"]:
        if a.get("image_id") in images and a.get("category_id") in names and len(a.get("bbox") or []) == 4:
            area = a.get("area", a["bbox"][2] * a["bbox"][3])
            gts.setdefault((a["image_id"], a["category_id"]), []).append({**a, "area": area})
    dts: dict[tuple, list[dict]] = {}
    failed = seen = 0
    for image_id, name in images.items():
        line = facts.lines.get(name)
        if line is None:
            continue
        seen += 1
        if line.get("status") != "ok":
            failed += 1
            continue
        for det in line.get("detections") or []:
            cid = by_name.get(str(det.get("label")))
            if cid is None:
                continue  # a class the truth does not have: COCOeval does not count it either
            x1, y1, x2, y2 = det["box"]
            box = [x1, y1, x2 - x1, y2 - y1]
            dts.setdefault((image_id, cid), []).append(
                {"bbox": box, "score": float(det["score"]), "area": box[2] * box[3]}
            )
    if seen == 0:
        raise BatchLensError(
            f"None of the images in {truth_path} is among the results in {facts.path}; its `file_name`s "
            "must be "
            "paths under the input folder (like street/a.jpg)."
        )
    per_class, classes = [], {}
    for cid in sorted(names):
        results = [
            r for iid in sorted(images) if (r := _match(dts.get((iid, cid), []), gts.get((iid, cid), [])))
        ]
        precision = _precision(results) if results else None
        if precision is None:
            continue
        per_class.append(precision)
        classes[names[cid]] = {
            "ap": round(float(precision.mean()), 6),
            "ap50": round(float(precision[0].mean()), 6),
            "support": sum(1 for iid in images for g in gts.get((iid, cid), []) if not g.get("iscrowd")),
        }
    stack = np.stack(per_class) if per_class else None
    report = {
        "task": "detection",
        "images": seen,
        "failed": failed,
        "map": round(float(stack.mean()), 6) if stack is not None else None,
        "map50": round(float(stack[:, 0].mean()), 6) if stack is not None else None,
        "map75": round(float(stack[:, 5].mean()), 6) if stack is not None else None,
        "classes": classes,
    }
    return Evaluation(report, {}, len(facts.lines) - seen, len(images) - seen, [])


def _mask_path(mask_dir: Path, image: str) -> Path | None:
    """The truth mask of an image: <path>.png or the path with its extension replaced by .png."""
    rel = PurePosixPath(image)
    for candidate in (mask_dir / rel.with_suffix(".png"), mask_dir / f"{image}.png", mask_dir / rel):
        if candidate.is_file():
            return candidate
    return None


def _read_mask(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A class-index mask as an int64 array (resized to `size` by nearest neighbour), opened through the
    image guard (allowed formats, bounded size); a file that is no readable mask is one sentence."""
    from PIL import Image

    try:
        with open(path, "rb") as fh, open_image(fh, target="L") as im:
            mask = im if im.mode in ("L", "P") else im.convert("L")
            if size is not None and mask.size != size:
                mask = mask.resize(size, Image.Resampling.NEAREST)
            return np.asarray(mask, np.int64)
    except (OSError, ImageError) as exc:
        raise BatchLensError(f"The mask {path} cannot be read: {exc}.") from None


def evaluate_segmentation(facts: RunFacts, mask_dir: Path, ignore_index: int = 255) -> Evaluation:
    """Pixels over every image together: IoU per class = TP / (TP + FP + FN), the mean over the classes
    that appear in the truth or the prediction; the value 255 in a truth mask is not counted."""

    if not mask_dir.is_dir():
        raise BatchLensError(f"{mask_dir} is not a folder; a segmentation truth is a folder of mask PNGs.")
    size = 256
    confusion = np.zeros((size, size), np.int64)
    names: dict[int, str] = {}
    failed = seen = 0
    for image, line in facts.lines.items():
        truth_file = _mask_path(mask_dir, image)
        if truth_file is None:
            continue
        seen += 1
        if line.get("status") != "ok" or not isinstance(line.get("mask"), str):
            failed += 1
            continue
        for c in line.get("classes") or []:
            names.setdefault(int(c["index"]), str(c["label"]))
        truth = _read_mask(truth_file)
        predicted = _read_mask(facts.path / line["mask"], size=(truth.shape[1], truth.shape[0]))
        keep = truth != ignore_index
        confusion += np.bincount(truth[keep] * size + predicted[keep] % size, minlength=size * size).reshape(
            size, size
        )
    if seen == 0:
        raise BatchLensError(
            f"{mask_dir} holds no mask named like an image of {facts.path} (cats/a.jpg -> cats/a.png)."
        )
    hits = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - hits
    present = np.nonzero(union)[0]
    iou = {names.get(int(i), str(int(i))): round(float(hits[i] / union[i]), 6) for i in present}
    total = confusion.sum()
    report = {
        "task": "segmentation",
        "images": seen,
        "failed": failed,
        "miou": round(float(np.mean([hits[i] / union[i] for i in present])), 6) if len(present) else None,
        "pixel_accuracy": round(float(hits.sum() / total), 6) if total else None,
        "classes": {name: {"iou": value} for name, value in iou.items()},
    }
    return Evaluation(report, {}, len(facts.lines) - seen, 0, [])
