"""After the run, through the real engine: a demo-shapes run over class folders made here, then reviews
(appended while a run writes, read again after a restart, a corrupt line skipped), evaluation against
numbers computed here independently, sorting (the input's tree hash unchanged, every file placed once,
undo, a clash refused, a FIFO and a symlink in the input) and the exports, through the CLI."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import threading
from pathlib import Path

import pytest

from batchlens.cli import main
from batchlens.core.errors import BatchLensError
from batchlens.core.models.demo_data import SHAPES
from batchlens.core.outputs.evaluation import evaluate, metrics
from batchlens.core.outputs.export import export
from batchlens.core.outputs.reviews import REVIEWS, ReviewsReader, append_review, read_reviews
from batchlens.core.outputs.run_facts import load_run
from batchlens.core.outputs.sorting import do_sort, plan_sort, undo_sort
from tests.helpers import make_shapes_folder


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory) -> tuple[Path, Path]:
    """(input, output): 16 generated shapes in class folders (ImageFolder), run through demo-shapes."""
    base = tmp_path_factory.mktemp("shapes")
    flat, inputs, output = base / "flat", base / "in", base / "out"
    labels = make_shapes_folder(flat, 16, size=64)
    for i, label in enumerate(labels):
        (inputs / SHAPES[label]).mkdir(parents=True, exist_ok=True)
        shutil.move(flat / f"shape_{i:04d}.png", inputs / SHAPES[label] / f"shape_{i:04d}.png")
    code = main(
        ["run", "--model", "demo-shapes", "--input", str(inputs), "--output", str(output)]
        + ["--recursive", "--device", "cpu", "--no-progress"]
    )
    assert code == 0
    return inputs, output


def _copy_run(shapes_run, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the run (its run.json pointing at a private copy of the input)."""
    inputs, output = tmp_path / "in", tmp_path / "out"
    shutil.copytree(shapes_run[0], inputs)
    shutil.copytree(shapes_run[1], output)
    manifest = json.loads((output / "run.json").read_text())
    manifest["input"] = str(inputs)
    (output / "run.json").write_text(json.dumps(manifest))
    return inputs, output


def _lines(output: Path) -> list[dict]:
    return [json.loads(t) for t in (output / "predictions.jsonl").read_text().splitlines()]


def tree_hash(folder: Path) -> str:
    """Every entry's relative path, kind and content (a link by its target), hashed."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            digest.update(f"L {rel} {os.readlink(path)}\n".encode())
        elif path.is_file():
            digest.update(f"F {rel} ".encode() + hashlib.sha256(path.read_bytes()).digest())
        else:
            digest.update(f"D {rel}\n".encode())
    return digest.hexdigest()


# -- reviews -------------------------------------------------------------------------------------
def test_reviews_last_line_wins_across_restarts_and_a_corrupt_line_is_skipped(tmp_path, caplog):
    append_review(tmp_path, "a/1.png", label="cat")
    append_review(tmp_path, "b/2.png", boxes=[{"label": "dog", "box": [1, 2, 30, 40], "score": 0.9}])
    with open(tmp_path / REVIEWS, "a", encoding="utf-8") as f:
        f.write('{"image": "a/1.png", "label": \n')  # corrupt
        f.write('{"image": "c/3.png"}\n')  # neither label nor boxes
    append_review(tmp_path, "a/1.png", label="lynx")
    with caplog.at_level(logging.WARNING):
        reviews = read_reviews(tmp_path)  # a fresh reader: as after a restart
    assert reviews["a/1.png"].label == "lynx"
    assert reviews["b/2.png"].boxes == [{"label": "dog", "box": [1.0, 2.0, 30.0, 40.0], "score": 0.9}]
    assert "c/3.png" not in reviews
    skipped = [r.getMessage() for r in caplog.records if "Skipped line" in r.getMessage()]
    assert [m.split()[2] for m in skipped] == ["3", "4"]
    lines = (tmp_path / REVIEWS).read_text().splitlines()
    assert all(json.loads(lines[i])["at"].endswith("+00:00") for i in (0, 1, 4))


def test_reviews_are_read_as_they_are_appended_while_a_run_writes(shapes_run, tmp_path):
    """A run still appending predictions: reviews written meanwhile (a partial line left for later)
    are all seen, and apply to lines that arrive after them."""
    _, output = _copy_run(shapes_run, tmp_path)
    lines = (output / "predictions.jsonl").read_text().splitlines(keepends=True)
    (output / "predictions.jsonl").write_text("".join(lines[:4]))
    reader = ReviewsReader(output)
    images = [json.loads(t)["image"] for t in lines]

    def run_appends():
        for text in lines[4:]:
            with open(output / "predictions.jsonl", "a") as f:
                f.write(text)

    writer = threading.Thread(target=run_appends)
    writer.start()
    for image in images[::2]:
        append_review(output, image, label="cross")
        reader.read_new()
    with open(output / REVIEWS, "a") as f:
        f.write('{"image": "x.png", "lab')  # a review being written: not read yet
    writer.join()
    assert reader.read_new() == [] and set(reader.reviews) == set(images[::2])
    facts = load_run(output)
    assert len(facts.lines) == len(images) and set(facts.reviews) == set(images[::2])


# -- evaluation ----------------------------------------------------------------------------------
def test_metrics_match_numbers_worked_out_by_hand():
    pairs = [("cat", "cat")] * 3 + [("cat", "dog")] + [("dog", "dog")] * 2 + [("dog", "cat"), ("owl", "dog")]
    classes, labels, matrix = metrics(pairs)
    assert labels == ["cat", "dog", "owl"]
    assert matrix == [[3, 1, 0], [1, 2, 0], [0, 1, 0]]
    assert classes["cat"] == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    assert classes["dog"] == {"precision": 0.5, "recall": 0.666667, "f1": 0.571429, "support": 3}
    assert classes["owl"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_evaluate_a_real_run_against_its_class_folders(shapes_run, tmp_path):
    _, output = _copy_run(shapes_run, tmp_path)
    lines = _lines(output)
    # One failed image, counted apart.
    lines[0] = {"image": lines[0]["image"], "status": "error", "error": "is empty (0 bytes)", "seconds": 0.0}
    (output / "predictions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = evaluate(output)
    report = json.loads((output / "evaluation.json").read_text())
    assert report == result.report
    assert list(report) == ["task", "images", "failed", "accuracy", "top5_accuracy", "classes", "confusion"]
    ok = [x for x in lines if x["status"] == "ok"]
    truth = [x["image"].split("/")[0] for x in ok]
    predicted = [x["top"][0]["label"] for x in ok]
    assert report["images"] == 16 and report["failed"] == 1
    assert report["accuracy"] == round(sum(t == p for t, p in zip(truth, predicted)) / 15, 6)
    top5 = sum(t in [e["label"] for e in x["top"][:5]] for t, x in zip(truth, ok))
    assert report["top5_accuracy"] == round(top5 / 15, 6)
    labels = report["confusion"]["labels"]
    for i, row in enumerate(report["confusion"]["matrix"]):
        for j, count in enumerate(row):
            assert count == sum(t == labels[i] and p == labels[j] for t, p in zip(truth, predicted))
    for label, numbers in report["classes"].items():
        hits = sum(t == p == label for t, p in zip(truth, predicted))
        assert numbers["support"] == truth.count(label)
        assert numbers["recall"] == round(hits / truth.count(label), 6) if truth.count(label) else True
        assert numbers["precision"] == (
            round(hits / predicted.count(label), 6) if predicted.count(label) else 0
        )
    from PIL import Image

    with Image.open(output / "confusion.png") as picture:
        assert picture.width > 100 and len(picture.getcolors(1 << 16)) > 3


def test_evaluate_against_a_csv_and_against_the_reviews(shapes_run, tmp_path):
    _, output = _copy_run(shapes_run, tmp_path)
    images = [x["image"] for x in _lines(output)]
    truth = tmp_path / "truth.csv"
    truth.write_text("image,label\n" + "".join(f"{im},circle\n" for im in images[:5]), encoding="utf-8")
    report = evaluate(output, truth).report
    assert report["images"] == 5 and report["classes"]["circle"]["support"] == 5
    with pytest.raises(BatchLensError, match="Nobody has reviewed"):
        evaluate(output, "reviews")
    for image in images[:3]:
        append_review(output, image, label="square")
    report = evaluate(output, "reviews").report
    assert report["images"] == 3 and report["classes"]["square"]["support"] == 3
    (tmp_path / "bad.csv").write_text("image,label\nonly-one-column\n", encoding="utf-8")
    with pytest.raises(BatchLensError, match="Line 2 of .*bad.csv is not `image,label`"):
        evaluate(output, tmp_path / "bad.csv")


# -- sorting -------------------------------------------------------------------------------------
def test_sort_copies_each_image_once_leaves_the_input_alone_and_undoes(shapes_run, tmp_path):
    inputs, output = _copy_run(shapes_run, tmp_path)
    lines = _lines(output)
    reviewed = lines[1]["image"]
    append_review(output, reviewed, label="a/../weird:label")  # a label that is no folder name as it is
    before = tree_hash(inputs)
    plan = plan_sort(output, tmp_path / "sorted", min_score=0.9)
    done = do_sort(plan)
    assert tree_hash(inputs) == before
    placed = sorted(p for p in (tmp_path / "sorted").rglob("*.png"))
    assert len(placed) == len(lines) == sum(done.values()) == sum(plan.counts.values())
    by_rel = {p.relative_to(tmp_path / "sorted").as_posix().split("/", 1)[1]: p for p in placed}
    assert sorted(by_rel) == sorted(x["image"] for x in lines)  # every image exactly once
    for line in lines:
        folder = by_rel[line["image"]].relative_to(tmp_path / "sorted").parts[0]
        if line["image"] == reviewed:
            assert folder == "a_.._weird_label"
        elif line["top"][0]["score"] < 0.9:
            assert folder == "unsure"
        else:
            assert folder == line["top"][0]["label"]
        assert by_rel[line["image"]].read_bytes() == (inputs / line["image"]).read_bytes()
    result = undo_sort(tmp_path / "sorted")
    assert result.removed == len(lines)
    assert sorted(p.name for p in (tmp_path / "sorted").iterdir()) == ["sort-log.undone.jsonl"]
    assert tree_hash(inputs) == before


def test_sort_move_and_undo_give_the_input_back_exactly(shapes_run, tmp_path):
    inputs, output = _copy_run(shapes_run, tmp_path)
    before = tree_hash(inputs)
    assert main(["sort", str(output), "--into", str(tmp_path / "s"), "--move"]) == 0
    assert not list(inputs.rglob("*.png"))
    assert main(["sort", "--undo", str(tmp_path / "s")]) == 0
    assert tree_hash(inputs) == before


def test_sort_refuses_a_clash_before_touching_anything(shapes_run, tmp_path, capsys):
    inputs, output = _copy_run(shapes_run, tmp_path)
    line = _lines(output)[0]
    clash = tmp_path / "s" / line["top"][0]["label"] / line["image"]
    clash.parent.mkdir(parents=True)
    clash.write_bytes(b"mine")
    assert main(["sort", str(output), "--into", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert f"Nothing was sorted: {clash} already exists" in err and err.count("\n") == 1
    assert clash.read_bytes() == b"mine"
    assert [p for p in (tmp_path / "s").rglob("*") if p.is_file()] == [clash]
    with pytest.raises(BatchLensError, match="inside the input folder"):
        plan_sort(output, inputs / "sorted")
    label = line["top"][0]["label"]
    (tmp_path / "parent").mkdir()
    shutil.move(inputs, tmp_path / "parent" / label)  # the input is now a folder named like a label
    with pytest.raises(BatchLensError, match="which holds the input folder"):
        plan_sort(output, tmp_path / "parent", input_dir=tmp_path / "parent" / label)


def test_a_file_that_cannot_be_written_is_one_sentence(shapes_run, tmp_path, capsys):
    _, output = _copy_run(shapes_run, tmp_path)
    (output / "evaluation.json").mkdir()  # in the way of the file (fails for root too, unlike chmod)
    (output / "evaluation.json" / "keep").write_text("mine")
    assert main(["evaluate", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"batchlens evaluate: {output / 'evaluation.json'}: ") and err.count("\n") == 1
    assert (output / "evaluation.json" / "keep").read_text() == "mine"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_sort_skips_a_fifo_and_copies_a_symlinks_file(shapes_run, tmp_path):
    inputs, output = _copy_run(shapes_run, tmp_path)
    lines = _lines(output)
    fifo, link = lines[0]["image"], lines[1]["image"]
    (inputs / fifo).unlink()
    os.mkfifo(inputs / fifo)  # opening it would block for ever
    target = tmp_path / "elsewhere.png"
    shutil.move(inputs / link, target)
    (inputs / link).symlink_to(target)
    os.mkfifo(output / "stray.fifo")  # a FIFO in the run folder is never read either
    os.mkfifo(output / REVIEWS)  # nor one in the place of reviews.jsonl (opening it would block)
    assert read_reviews(output) == {}
    with pytest.raises(OSError, match="not a plain file"):
        append_review(output, lines[2]["image"], label="cross")
    plan = plan_sort(output, tmp_path / "s")
    assert plan.not_files == [fifo]
    do_sort(plan)
    placed = [p for p in (tmp_path / "s").rglob("*.png")]
    assert len(placed) == len(lines) - 1
    copy = next(p for p in placed if p.as_posix().endswith(link))
    assert not copy.is_symlink() and copy.read_bytes() == target.read_bytes()
    assert (inputs / link).is_symlink() and (inputs / fifo).is_fifo()


# -- exports -------------------------------------------------------------------------------------
def test_export_csv_has_the_reviews_beside_the_model_and_is_spreadsheet_safe(shapes_run, tmp_path):
    _, output = _copy_run(shapes_run, tmp_path)
    lines = _lines(output)
    append_review(output, lines[2]["image"], label="=HYPERLINK(1)")
    assert main(["export", str(output), "--format", "csv", "--to", str(tmp_path / "r.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "r.csv").read_text(encoding="utf-8-sig").splitlines()))
    assert [r["image"] for r in rows] == [x["image"] for x in lines]
    assert [r["label"] for r in rows] == [x["top"][0]["label"] for x in lines]
    assert rows[2]["reviewed_label"] == "'=HYPERLINK(1)" and rows[3]["reviewed_label"] == ""
    assert main(["export", str(output), "--format", "csv", "--to", str(tmp_path / "r.csv")]) == 2


def test_export_detection_coco_and_yolo_with_the_reviews(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    lines = [
        {
            "image": "a.png",
            "status": "ok",
            "error": None,
            "seconds": 0.1,
            "size": [100, 50],
            "detections": [
                {"label": "cat", "index": 17, "score": 0.9, "box": [10, 10, 30, 40]},
                {"label": "dog", "index": 18, "score": 0.4, "box": [0, 0, 100, 50]},
            ],
        },
        {
            "image": "d/b.png",
            "status": "ok",
            "error": None,
            "seconds": 0.1,
            "size": [20, 20],
            "detections": [],
        },
        {"image": "c.png", "status": "error", "error": "broken", "seconds": 0.1},
    ]
    (output / "predictions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    append_review(output, "d/b.png", boxes=[{"label": "owl", "box": [0, 0, 10, 20]}])
    model = json.loads(export(output, "coco", tmp_path / "m.json")[0].read_text())
    assert [c["name"] for c in model["categories"]] == ["cat", "dog"]
    assert [a["bbox"] for a in model["annotations"]] == [[10, 10, 20, 30], [0, 0, 100, 50]]
    reviewed = json.loads(export(output, "coco", tmp_path / "r.json", reviewed=True)[0].read_text())
    assert [c["name"] for c in reviewed["categories"]] == ["cat", "dog", "owl"]
    assert reviewed["annotations"][-1] == {
        "id": 3,
        "image_id": 2,
        "category_id": 3,
        "bbox": [0.0, 0.0, 10.0, 20.0],
        "area": 200.0,
        "iscrowd": 0,
    }
    export(output, "yolo", tmp_path / "y", reviewed=True)
    assert (tmp_path / "y" / "classes.txt").read_text() == "cat\ndog\nowl\n"
    assert (tmp_path / "y/labels/a.txt").read_text().splitlines()[
        0
    ] == "0 0.200000 0.500000 0.200000 0.600000"
    assert (tmp_path / "y/labels/d/b.txt").read_text() == "2 0.250000 0.500000 0.500000 1.000000\n"
    rows = list(csv.reader(export(output, "csv", tmp_path / "d.csv")[0].read_text("utf-8-sig").splitlines()))
    assert [r[2] for r in rows[1:]] == ["model", "model", "review", ""]
    args = ["export", str(output), "--format", "csv", "--min-score", "0.5", "--to", str(tmp_path / "h.csv")]
    assert main(args) == 0
    rows = list(csv.reader((tmp_path / "h.csv").read_text("utf-8-sig").splitlines()))
    assert [(r[2], r[3]) for r in rows[1:]] == [("model", "cat"), ("review", "owl"), ("", "")]
    # Detection sorting: a folder per label at or above the score, "empty" for none, the review wins.
    with pytest.raises(BatchLensError, match="does not say where its input images are"):
        plan_sort(output, tmp_path / "s")
    inputs = tmp_path / "in"
    make_shapes_folder(inputs, 2, size=32)
    (inputs / "shape_0000.png").rename(inputs / "a.png")
    (inputs / "d").mkdir()
    (inputs / "shape_0001.png").rename(inputs / "d" / "b.png")
    plan = plan_sort(output, tmp_path / "s", min_score=0.5, input_dir=inputs)
    assert plan.missing == ["c.png"]
    assert sorted(d for _, d in plan.moves) == ["cat/a.png", "owl/d/b.png"]
    plan = plan_sort(output, tmp_path / "s", min_score=0.3, input_dir=inputs, mode="move")
    do_sort(plan)
    assert sorted(p.relative_to(tmp_path / "s").as_posix() for p in (tmp_path / "s").rglob("*.png")) == [
        "cat/a.png",
        "dog/a.png",
        "owl/d/b.png",
    ]
    assert not (inputs / "a.png").exists()
    assert undo_sort(tmp_path / "s").moved_back == 2 and (inputs / "a.png").is_file()


def test_the_after_run_engine_needs_neither_qt_nor_torch():
    """`batchlens evaluate`, `sort` and `export` start without torch's import (seconds on a laptop)."""
    import subprocess
    import sys

    modules = ("run_facts", "reviews", "evaluation", "evaluation_boxes", "sorting", "export")
    code = (
        "import sys; "
        + "; ".join(f"import batchlens.core.outputs.{m}" for m in modules)
        + "; print(sorted({m.split('.')[0] for m in sys.modules} & {'PySide6', 'torch'}))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "app")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert result.stdout.strip() == "[]"
