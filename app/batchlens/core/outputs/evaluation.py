"""Measuring a run against the truth: `batchlens evaluate RUN` and the window's Evaluation view.

Classification: the truth is an image's first folder under the input (an ImageFolder layout, the
default), a CSV of `image,label`, or the person's reviews. RUN/evaluation.json holds
`{task, images, failed, accuracy, top5_accuracy, classes: {label: {precision, recall, f1, support}},
confusion: {labels, matrix}}` (rows: the truth, columns: the model's top-1, over the images with an ok
line; the failed ones are counted apart) and RUN/confusion.png draws the matrix. The model's own word
is measured (predictions.jsonl); a review never changes its score, but can be the truth.
Detection (COCO JSON) and segmentation (a mask folder) are in evaluation_boxes.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from batchlens.core.errors import BatchLensError
from batchlens.core.files import atomic_write, atomic_write_text
from batchlens.core.outputs.run_facts import Evaluation, RunFacts, load_run, top_label

EVALUATION = "evaluation.json"
CONFUSION_PNG = "confusion.png"
TRUTH_FOLDERS = "folders"
TRUTH_REVIEWS = "reviews"


def truth_from_folders(facts: RunFacts) -> dict[str, str]:
    """Each image's first folder under the input; images at the top of the input have none."""
    truth = {}
    for image in facts.lines:
        folder, slash, _ = image.partition("/")
        if slash and folder:
            truth[image] = folder
    return truth


def truth_from_csv(path: Path) -> dict[str, str]:
    """`image,label` rows (a header row naming them is allowed); raises BatchLensError on a bad file."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise BatchLensError(f"{path} is not UTF-8 text; save the CSV as UTF-8 and try again.") from None
    except OSError as exc:
        raise BatchLensError(f"Could not read the truth file {path}: {exc.strerror or exc}.") from None
    truth: dict[str, str] = {}
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not any(cell.strip() for cell in row):
            continue
        if number == 1 and [c.strip().lower() for c in row[:2]] == ["image", "label"]:
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise BatchLensError(
                f"Line {number} of {path} is not `image,label`; each line names an image and its true label."
            )
        image = row[0].strip().replace("\\", "/")
        truth[image[2:] if image.startswith("./") else image] = row[1].strip()
    if not truth:
        raise BatchLensError(f"{path} names no image; give one `image,label` line per image.")
    return truth


def metrics(pairs: list[tuple[str, str]], labels: list[str] | None = None) -> tuple[dict, list, list]:
    """(classes, labels, matrix) for (truth, predicted) pairs: per-class precision, recall, f1 and
    support (a class never predicted has precision 0, one never true recall 0), rows the truth."""
    if labels is None:
        labels = sorted({t for t, _ in pairs} | {p for _, p in pairs})
    where = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for truth, predicted in pairs:
        matrix[where[truth]][where[predicted]] += 1
    classes = {}
    for i, label in enumerate(labels):
        hits = matrix[i][i]
        predicted = sum(row[i] for row in matrix)
        support = sum(matrix[i])
        precision = hits / predicted if predicted else 0.0
        recall = hits / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        classes[label] = {
            "precision": round(precision, 6),
            "recall": round(recall, 6),
            "f1": round(f1, 6),
            "support": support,
        }
    return classes, labels, matrix


def evaluate_classification(facts: RunFacts, truth: dict[str, str]) -> Evaluation:
    pairs: list[tuple[str, str]] = []
    cells: dict[tuple[str, str], list[str]] = {}
    failed = top5 = without = 0
    for image, line in facts.lines.items():
        true = truth.get(image)
        if true is None:
            without += 1
            continue
        if line.get("status") != "ok":
            failed += 1
            continue
        predicted = top_label(line)[0] or "?"
        pairs.append((true, predicted))
        cells.setdefault((true, predicted), []).append(image)
        top = line.get("top") if isinstance(line.get("top"), list) else []
        top5 += any(isinstance(t, dict) and str(t.get("label")) == true for t in top[:5])
    classes, labels, matrix = metrics(pairs)
    scored = len(pairs)
    report = {
        "task": "classification",
        "images": scored + failed,
        "failed": failed,
        "accuracy": round(sum(t == p for t, p in pairs) / scored, 6) if scored else None,
        "top5_accuracy": round(top5 / scored, 6) if scored else None,
        "classes": classes,
        "confusion": {"labels": labels, "matrix": matrix},
    }
    truth_only = sum(1 for image in truth if image not in facts.lines)
    return Evaluation(report, cells, without, truth_only, [])


def classification_truth(facts: RunFacts, truth: str | Path | None) -> dict[str, str]:
    if truth in (None, TRUTH_FOLDERS):
        found = truth_from_folders(facts)
        if not found:
            raise BatchLensError(
                f"The images of {facts.path} are not in class folders (each image's first folder is its "
                "true label), so there is no truth to measure against; give a CSV of image,label lines "
                "(--truth FILE.csv)."
            )
        return found
    if truth == TRUTH_REVIEWS:
        found = {image: r.label for image, r in facts.reviews.items() if r.label and image in facts.lines}
        if not found:
            raise BatchLensError(
                f"Nobody has reviewed an image of {facts.path} yet, so the reviews give no truth."
            )
        return found
    path = Path(truth).expanduser()
    if path.suffix.lower() != ".csv":
        raise BatchLensError(
            f"{path} is not a .csv file; a classification truth is a CSV of `image,label` lines."
        )
    return truth_from_csv(path)


def evaluate(run_dir: Path | str, truth: str | Path | None = None, write: bool = True) -> Evaluation:
    """Measure the run in `run_dir` against `truth` and (with `write`) write evaluation.json and
    confusion.png into it. Raises BatchLensError with one sentence when it cannot."""
    facts = load_run(run_dir)
    if facts.task == "classification":
        result = evaluate_classification(facts, classification_truth(facts, truth))
        if result.report["images"] == 0:
            raise BatchLensError(
                f"None of the images the truth names is among the results in {facts.path}; "
                "check that the truth's image names are paths under the input folder (like cats/a.jpg)."
            )
    elif facts.task in ("detection", "segmentation"):
        from batchlens.core.outputs.evaluation_boxes import evaluate_detection, evaluate_segmentation

        if truth in (None, TRUTH_FOLDERS, TRUTH_REVIEWS):
            kind = "a COCO JSON file" if facts.task == "detection" else "a folder of masks"
            raise BatchLensError(f"A {facts.task} run is measured against {kind}; give it with --truth.")
        if facts.task == "detection":
            result = evaluate_detection(facts, Path(truth).expanduser())
        else:
            result = evaluate_segmentation(facts, Path(truth).expanduser())
    else:
        raise BatchLensError(
            f"The run in {facts.path} is {facts.task or 'of no known task'}; only classification, detection "
            "and segmentation runs can be measured against a truth."
        )
    if write:
        path = facts.path / EVALUATION
        atomic_write_text(path, json.dumps(result.report, indent=1, ensure_ascii=False) + "\n")
        result.files.append(path)
        if "confusion" in result.report:
            picture = facts.path / CONFUSION_PNG
            image = confusion_picture(
                result.report["confusion"]["labels"], result.report["confusion"]["matrix"]
            )
            atomic_write(picture, lambda tmp: image.save(tmp, format="PNG"))
            result.files.append(picture)
    return result


def confusion_picture(labels: list[str], matrix: list[list[int]], cell: int = 0):
    """The matrix as a PIL image: rows the truth, columns the prediction, each cell shaded by the share
    of its row (so a class with few images reads as clearly as a big one), the count written in it."""
    from PIL import Image, ImageDraw, ImageFont

    n = max(len(labels), 1)
    cell = cell or max(28, min(64, 900 // n))
    font = ImageFont.load_default(size=max(10, cell // 3))
    small = ImageFont.load_default(size=14)
    shown = [label if len(label) <= 24 else label[:23] + "…" for label in labels]
    name_width = int(max((small.getlength(s) for s in shown), default=40)) + 12
    left, top = name_width + 24, name_width + 24
    width, height = left + n * cell + 10, top + n * cell + 10
    picture = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(picture)
    draw.text((left, 4), "predicted label", fill="black", font=small)
    column = Image.new("RGB", (height, 20), "white")  # the rotated "true" caption
    ImageDraw.Draw(column).text((height - top - 80, 2), "true label", fill="black", font=small)
    picture.paste(column.rotate(90, expand=True).crop((0, 0, 20, height)), (2, 0))
    for i, label in enumerate(shown):
        y = top + i * cell + cell // 2
        draw.text((left - 6, y), label, fill="black", font=small, anchor="rm")
        tag = Image.new("RGB", (name_width, 18), "white")
        ImageDraw.Draw(tag).text((name_width - 4, 9), label, fill="black", font=small, anchor="rm")
        rotated = tag.rotate(90, expand=True)
        picture.paste(rotated, (left + i * cell + (cell - 18) // 2, top - name_width - 4))
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        for j, count in enumerate(row):
            share = count / total
            if i == j:
                colour = (int(255 - 200 * share), int(255 - 80 * share), int(255 - 200 * share))  # green
            else:
                colour = (255, int(255 - 190 * share), int(255 - 190 * share))  # red
            box = (left + j * cell, top + i * cell, left + (j + 1) * cell - 1, top + (i + 1) * cell - 1)
            draw.rectangle(box, fill=colour, outline=(200, 200, 200))
            if count:
                centre = (box[0] + cell // 2, box[1] + cell // 2)
                draw.text(centre, str(count), fill="black", font=font, anchor="mm")
    return picture


def headline(report: dict) -> str:
    """The headline numbers in one or two lines."""
    if report["task"] == "classification":
        accuracy = "n/a" if report["accuracy"] is None else f"{report['accuracy'] * 100:.1f} %"
        top5 = "" if report["top5_accuracy"] is None else f", top-5 {report['top5_accuracy'] * 100:.1f} %"
        return (
            f"Accuracy {accuracy}{top5} over {report['images'] - report['failed']:,} image(s) "
            f"({report['failed']:,} failed, counted apart)."
        )
    if report["task"] == "detection":
        if report["map"] is None:
            return (
                f"No class of the truth has a true box, so there is no mAP ({report['images']:,} image(s))."
            )
        return (
            f"mAP {report['map']:.3f}, mAP@50 {report['map50']:.3f}, mAP@75 {report['map75']:.3f} "
            f"over {report['images']:,} image(s)."
        )
    if report["miou"] is None:
        return f"The masks hold no pixel to count ({report['images']:,} image(s))."
    return (
        f"Mean IoU {report['miou']:.3f}, pixel accuracy {report['pixel_accuracy'] * 100:.1f} % "
        f"over {report['images']:,} image(s)."
    )
