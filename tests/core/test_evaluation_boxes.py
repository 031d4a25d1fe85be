"""Detection mAP against pycocotools' COCOeval on the same files, and segmentation IoU against numbers
worked out here."""

from __future__ import annotations

import contextlib
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from batchlens.cli import main
from batchlens.core.errors import BatchLensError
from batchlens.core.outputs.evaluation import evaluate

NAMES = ["cat", "dog", "owl"]


def _random_box(rng: random.Random, w: int, h: int) -> list[float]:
    x, y = rng.uniform(0, w - 20), rng.uniform(0, h - 20)
    return [round(x, 2), round(y, 2), round(rng.uniform(5, w - x), 2), round(rng.uniform(5, h - y), 2)]


def _detection_files(tmp_path: Path, seed: int) -> tuple[Path, Path, list[dict]]:
    """A truth COCO file and a run whose boxes are the truth's, jittered, plus misses and noise."""
    rng = random.Random(seed)
    images, annotations, lines, results = [], [], [], []
    for i in range(1, 31):
        name = f"set{i % 3}/img_{i:03d}.jpg"
        images.append({"id": i * 7, "file_name": name, "width": 200, "height": 150})
        detections = []
        for _ in range(rng.randrange(0, 6)):
            cid = rng.randrange(1, 4)
            box = _random_box(rng, 200, 150)
            crowd = int(rng.random() < 0.08)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i * 7,
                    "category_id": cid,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": crowd,
                }
            )
            if rng.random() < 0.8:  # found, a little off
                jitter = [v + rng.uniform(-6, 6) for v in box]
                label = NAMES[cid - 1] if rng.random() < 0.9 else NAMES[cid % 3]
                detections.append((label, jitter))
        for _ in range(rng.randrange(0, 4) if i != 5 else 130):  # noise (image 5: past 100 boxes)
            detections.append((rng.choice([*NAMES, "zebra"]), _random_box(rng, 200, 150)))
        dets = []
        for label, (x, y, w, h) in detections:
            score = round(rng.random(), 4)
            dets.append({"label": label, "index": 0, "score": score, "box": [x, y, x + w, y + h]})
            if label in NAMES:
                results.append(
                    {
                        "image_id": i * 7,
                        "category_id": NAMES.index(label) + 1,
                        "bbox": [x, y, (x + w) - x, (y + h) - y],
                        "score": score,
                    }
                )
        if i in (9, 12):  # image 9 failed, image 12 has no line at all: no boxes for either
            results = [r for r in results if r["image_id"] != i * 7]
        if i == 9:
            lines.append({"image": name, "status": "error", "error": "broken", "seconds": 0.1})
        elif i != 12:
            lines.append(
                {
                    "image": name,
                    "status": "ok",
                    "error": None,
                    "seconds": 0.1,
                    "size": [200, 150],
                    "detections": dets,
                }
            )
    truth = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)],
    }
    run = tmp_path / "run"
    run.mkdir()
    (run / "predictions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run / "run.json").write_text(json.dumps({"task": "detection"}))
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    return run, tmp_path / "truth.json", results


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_map_equals_pycocotools_cocoeval_on_the_same_files(tmp_path, seed):
    coco = pytest.importorskip("pycocotools.coco")
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    run, truth, results = _detection_files(tmp_path, seed)
    report = evaluate(run, truth).report
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco.COCO(str(truth))
        dt = gt.loadRes(results)
        check = cocoeval.COCOeval(gt, dt, "bbox")
        check.evaluate()
        check.accumulate()
        check.summarize()
    assert report["map"] == pytest.approx(check.stats[0], abs=1e-6)
    assert report["map50"] == pytest.approx(check.stats[1], abs=1e-6)
    assert report["map75"] == pytest.approx(check.stats[2], abs=1e-6)
    assert report["images"] == 29 and report["failed"] == 1
    assert json.loads((run / "evaluation.json").read_text())["map"] == report["map"]


def test_segmentation_miou_and_pixel_accuracy(tmp_path, capsys):
    run, masks = tmp_path / "run", tmp_path / "truth"
    (run / "m").mkdir(parents=True)
    (masks / "m").mkdir(parents=True)
    truth = np.zeros((4, 4), np.uint8)
    truth[:2] = 1
    truth[3, 3] = 255  # not counted
    predicted = np.zeros((4, 4), np.uint8)
    predicted[:1] = 1
    predicted[3, :] = 2
    Image.fromarray(truth).save(masks / "m" / "a.png")
    Image.fromarray(predicted).save(run / "m" / "a.jpg.png")
    classes = [
        {"label": "sky", "index": 1, "fraction": 0.25},
        {"label": "background", "index": 0, "fraction": 0.5},
        {"label": "road", "index": 2, "fraction": 0.25},
    ]
    line = {
        "image": "m/a.jpg",
        "status": "ok",
        "error": None,
        "seconds": 0.1,
        "size": [4, 4],
        "classes": classes,
        "mask": "m/a.jpg.png",
    }
    (run / "predictions.jsonl").write_text(json.dumps(line) + "\n")
    assert main(["evaluate", str(run), "--truth", str(masks)]) == 0
    report = json.loads((run / "evaluation.json").read_text())
    # 15 counted pixels. background: truth 7, predicted 4+... worked out cell by cell:
    # truth 0 (rows 2-3, less [3,3]) = 7 px: predicted 0 on row 2 (4), 2 on row 3 (3).
    # truth 1 (rows 0-1) = 8 px: predicted 1 on row 0 (4), 0 on row 1 (4).
    iou_bg = 4 / (7 + 8 - 4)  # predicted 0: row 1 + row 2 = 8
    iou_sky = 4 / (8 + 4 - 4)
    iou_road = 0 / (0 + 3 - 0)
    assert report["classes"] == {
        "background": {"iou": round(iou_bg, 6)},
        "sky": {"iou": round(iou_sky, 6)},
        "road": {"iou": 0.0},
    }
    assert report["miou"] == round((iou_bg + iou_sky + iou_road) / 3, 6)
    assert report["pixel_accuracy"] == round(8 / 15, 6)
    assert "Mean IoU" in capsys.readouterr().out
    with pytest.raises(BatchLensError, match="holds no mask named like an image"):
        evaluate(run, tmp_path)
