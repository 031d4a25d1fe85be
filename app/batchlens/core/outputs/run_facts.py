"""A run's results as evaluation, sorting and export read them: one line per image from
predictions.jsonl (the last ok line, else the last error line) with the person's last review beside it.

Qt-free and torch-free. Nothing here writes."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass, field
from pathlib import Path

from batchlens.core.errors import BatchLensError
from batchlens.core.outputs.records import STATUSES, record_key
from batchlens.core.outputs.results import PREDICTIONS
from batchlens.core.outputs.results_index import describe_folder
from batchlens.core.outputs.reviews import Review, read_reviews


@dataclass
class RunFacts:
    path: Path
    task: str | None
    input_dir: Path | None  # where the input images are found on this computer (None: not here)
    recorded_input: Path | None
    lines: dict[str, dict] = field(default_factory=dict)  # image -> its line, in run order
    reviews: dict[str, Review] = field(default_factory=dict)

    def ok(self, image: str) -> bool:
        return self.lines[image].get("status") == "ok"

    def source(self, image: str) -> Path | None:
        """The input file of an image (None when the input folder is not on this computer)."""
        if self.input_dir is None:
            return None
        return self.input_dir / record_key(self.lines[image])


def task_of(line: dict) -> str | None:
    """The task whose shape a line has (result_pictures.task_of without its torch-importing module)."""
    for key, task in (("top", "classification"), ("detections", "detection"), ("classes", "segmentation")):
        if key in line:
            return task
    return "image_to_image" if "output" in line else None


def top_label(line: dict) -> tuple[str | None, float | None]:
    """A classification line's top-1 label and score."""
    top = line.get("top")
    if isinstance(top, list) and top and isinstance(top[0], dict):
        score = top[0].get("score")
        return str(top[0].get("label", top[0].get("index"))), float(score) if score is not None else None
    return None, None


def label_of(facts: RunFacts, image: str) -> str | None:
    """The label that counts for an image: the person's when reviewed, else the model's top-1."""
    review = facts.reviews.get(image)
    if review is not None and review.label is not None:
        return review.label
    return top_label(facts.lines[image])[0]


def boxes_of(facts: RunFacts, image: str, reviewed: bool = True) -> list[dict]:
    """A detection line's boxes ({label, box, score?}); the reviewed boxes when `reviewed` and any."""
    review = facts.reviews.get(image)
    if reviewed and review is not None and review.boxes is not None:
        return review.boxes
    found = facts.lines[image].get("detections")
    return [d for d in found if isinstance(d, dict)] if isinstance(found, list) else []


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _usable(line) -> bool:
    """The few things every reader here relies on (records.check_line checks a line in full, at ~10x
    the cost; NaN and infinity are refused by the parser already)."""
    if not isinstance(line, dict) or line.get("status") not in STATUSES:
        return False
    image = line.get("image")
    return (
        isinstance(image, str)
        and bool(image)
        and not image.startswith(("/", "\\"))
        and ".." not in image.replace("\\", "/").split("/")
        and "\x00" not in image
    )


def load_run(run_dir: Path | str, input_dir: Path | None = None) -> RunFacts:
    """Read a run's output folder. Raises BatchLensError (one sentence) when it holds no results."""
    run_dir = Path(run_dir).expanduser()
    predictions = run_dir / PREDICTIONS
    try:
        mode = predictions.stat().st_mode
    except OSError:
        raise BatchLensError(
            f"{run_dir} holds no predictions.jsonl; give the output folder of a run."
        ) from None
    if not stat.S_ISREG(mode):
        raise BatchLensError(f"{predictions} is not a plain file, so it cannot be read as results.")
    folder = describe_folder(run_dir, input_dir)
    lines: dict[str, dict] = {}
    with open(predictions, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break  # a run writing (or killed mid-write): the partial line is not a result yet
            try:
                line = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
            except ValueError:
                continue
            if not _usable(line):
                continue
            image = line["image"]
            if line["status"] == "ok" or lines.get(image, {}).get("status") != "ok":
                lines.pop(image, None)  # keep the run order of the line that counts
                lines[image] = line
    task = folder.task
    if task is None:
        first = next((v for v in lines.values() if v.get("status") == "ok"), None)
        task = task_of(first) if first else None
    return RunFacts(
        path=run_dir,
        task=task,
        input_dir=folder.input_dir,
        recorded_input=folder.recorded_input,
        lines=lines,
        reviews=read_reviews(run_dir),
    )


@dataclass
class Evaluation:
    report: dict  # what evaluation.json holds
    cells: dict[tuple[str, str], list[str]]  # (truth, predicted) -> images, for the window's matrix
    without_truth: int  # images of the run that the truth does not name
    truth_only: int  # images the truth names that the run has no line for
    files: list[Path]
