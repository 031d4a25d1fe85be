"""A person's word on a run's results: RUN/reviews.jsonl, one line per decision, appended.

`{"image": "cats/a.jpg", "label": "cat", "at": "2026-12-07T05:01:02+00:00"}` for a label (classification
and segmentation), `{"image": ..., "boxes": [{"label", "box": [x1, y1, x2, y2], "score"?}], "at": ...}`
for detection. The last line for an image wins. predictions.jsonl (the model's word) is never rewritten:
evaluation, sorting and exports read both files.

Qt-free and torch-free. A decision is one `write()` of one line on a file opened for appending, so two
writers (the window and a script) never interleave half lines; a partial last line (a crash mid-write)
is left for the next read, and a line that is not a review is skipped with a warning naming it.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

REVIEWS = "reviews.jsonl"


@dataclass(frozen=True, slots=True)
class Review:
    """One decision: a label, or (detection) the boxes the image really holds."""

    image: str
    label: str | None
    boxes: list | None  # [{"label": str, "box": [x1, y1, x2, y2], "score": float?}], or None
    at: str


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _box_ok(entry) -> bool:
    if not isinstance(entry, dict) or not isinstance(entry.get("label"), str) or not entry["label"]:
        return False
    box = entry.get("box")
    return (
        isinstance(box, list)
        and len(box) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in box)
    )


def parse_review(data) -> Review | None:
    """A Review from one parsed line, or None when the line is not one."""
    if not isinstance(data, dict) or not isinstance(data.get("image"), str) or not data["image"]:
        return None
    label, boxes = data.get("label"), data.get("boxes")
    if isinstance(label, str) and label.strip():
        return Review(data["image"], label, None, str(data.get("at", "")))
    if isinstance(boxes, list) and all(_box_ok(b) for b in boxes):
        return Review(data["image"], None, [dict(b) for b in boxes], str(data.get("at", "")))
    return None


def review_line(image: str, label: str | None = None, boxes: list | None = None) -> dict:
    if (label is None) == (boxes is None):
        raise ValueError("a review gives a label or boxes")
    line = {"image": image}
    if label is not None:
        if not label.strip():
            raise ValueError("an empty label")
        line["label"] = label
    else:
        clean = [
            {"label": b["label"], "box": [float(v) for v in b["box"]]}
            | ({"score": float(b["score"])} if "score" in b else {})
            for b in boxes
        ]
        if not all(_box_ok(b) for b in clean):
            raise ValueError("a box without a label or four numbers")
        line["boxes"] = clean
    line["at"] = now_iso()
    return line


def append_review(run_dir: Path, image: str, label: str | None = None, boxes: list | None = None) -> Review:
    """Append one decision to RUN/reviews.jsonl (created when missing) and return it."""
    line = review_line(image, label, boxes)
    text = json.dumps(line, ensure_ascii=False, allow_nan=False) + "\n"
    path = Path(run_dir) / REVIEWS
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise OSError(f"{path} is not a plain file, so no review was written")
    # One write on an O_APPEND descriptor: lines from two writers never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return parse_review(line)


class ReviewsReader:
    """Reads the complete lines added to reviews.jsonl since the last call (the window polls it).
    `reviews` maps an image to its last decision. A bad line is skipped once, with a warning."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / REVIEWS
        self.offset = 0
        self.reviews: dict[str, Review] = {}
        self.bad_lines = 0
        self._identity: tuple[int, int] | None = None
        self._line_number = 0

    def read_new(self) -> list[Review]:
        try:
            st = os.stat(self.path)
        except OSError:
            return []
        if not stat.S_ISREG(st.st_mode):  # a FIFO or a folder in its place: never opened (would block)
            return []
        identity = (st.st_dev, st.st_ino)
        if self._identity is not None and (identity != self._identity or st.st_size < self.offset):
            self.offset, self._line_number, self.reviews = 0, 0, {}
        self._identity = identity
        if st.st_size <= self.offset:
            return []
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read(st.st_size - self.offset)
        except OSError:
            return []
        end = chunk.rfind(b"\n") + 1
        new = []
        for raw in chunk[:end].splitlines():
            self._line_number += 1
            if not raw.strip():
                continue
            try:
                review = parse_review(json.loads(raw.decode("utf-8")))
            except ValueError:
                review = None
            if review is None:
                self.bad_lines += 1
                log.warning(
                    "Skipped line %d of %s: it is not a review (an image with a label or boxes).",
                    self._line_number,
                    self.path,
                )
                continue
            self.reviews[review.image] = review
            new.append(review)
        self.offset += end
        return new


def read_reviews(run_dir: Path) -> dict[str, Review]:
    """Every image's last decision (an empty dict when nobody has reviewed yet)."""
    reader = ReviewsReader(run_dir)
    reader.read_new()
    return reader.reviews
