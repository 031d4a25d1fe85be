"""Reading an output folder back for browsing: predictions.jsonl read incrementally (a run may still be
writing it), each line boiled down to a small record, and what the folder says about its run.

Qt-free and torch-free. A record keeps the byte offset and length of its line, so the full result (a
long list of detections, say) is read again only for the few images on screen, and memory stays small
for a folder of any size.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from batchlens.core.files import read_json_object
from batchlens.core.outputs.results import PREDICTIONS, SUMMARY

RUN_MANIFEST = "run.json"  # written by newer runs (what made the folder); summary.json as a fallback
STATUSES = ("ok", "recovered", "error")  # "recovered": ok after an out-of-memory recovery step
READ_CHUNK = 2 * 2**20  # bytes read per call (~6,000 lines): a big file comes in steps, the window stays live


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """One line of predictions.jsonl, reduced to what the browser sorts and filters on."""

    image: str  # path relative to the input folder
    status: str  # one of STATUSES
    seconds: float | None
    error: str | None
    label: str | None  # the headline: the top label, the best detection, the largest class
    score: float | None  # the headline's score (None: the task gives no scores)
    labels: dict  # every label or class in the result -> its best score (None without scores)
    offset: int  # where the line starts in predictions.jsonl
    length: int  # its length in bytes, newline included
    memory: int | None = None  # the peak memory of the batch it ran in (bytes; older runs: None)


def _float(value) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _best(entries, score_key: str | None) -> dict:
    """{label: best score} over a list of {label, score...} entries, in the list's order."""
    labels: dict = {}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        name = str(entry.get("label", entry.get("index", "?")))
        score = _float(entry.get(score_key)) if score_key else None
        if name not in labels or (score is not None and (labels[name] or 0) < score):
            labels[name] = score
    return labels


def summarise(data: dict, offset: int = 0, length: int = 0) -> ResultRecord:
    """A record from one parsed line, whatever the task: what it holds decides, not a task name."""
    ok = data.get("status") == "ok"
    status = ("recovered" if data.get("recovered") else "ok") if ok else "error"
    labels: dict = {}
    label = score = None
    if ok:
        if isinstance(data.get("top"), list):  # classification: the top label only counts
            top = _best(data["top"][:1], "score")
        elif isinstance(data.get("detections"), list):
            top = labels = _best(data["detections"], "score")
        elif isinstance(data.get("classes"), list):  # segmentation: sorted by area, largest first
            labels = _best(data["classes"], None)
            # The headline is the largest class that is not class 0 (by convention the background).
            shown = [c for c in data["classes"] if isinstance(c, dict) and c.get("index") != 0]
            top = _best(shown[:1], None) or labels
        else:
            top = {}
        labels = labels or top
        if top:
            label, score = next(iter(top.items()))
            if data.get("detections"):
                score = _float(data["detections"][0].get("score"))
    error = data.get("error")
    return ResultRecord(
        image=str(data.get("image", "?")),
        status=status,
        seconds=_float(data.get("seconds")),
        error=str(error) if error is not None else None,
        label=label,
        score=score,
        labels=labels,
        offset=offset,
        length=length,
        memory=int(m)
        if isinstance(m := data.get("peak_memory_bytes"), int) and not isinstance(m, bool)
        else None,
    )


class PredictionsReader:
    """Reads the complete lines added to a predictions.jsonl since the last call.

    A partial last line (a run mid-write, or killed) is left for the next call. When the file is
    replaced or shrinks (a resume rewrites it), reading starts again from the top and `read_new`
    says so."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0
        self.bad_lines = 0  # complete lines that are not JSON objects (skipped)
        self._identity: tuple[int, int] | None = None

    def read_new(self, max_bytes: int = READ_CHUNK) -> tuple[list[ResultRecord], bool]:
        """(new records, restarted). `restarted`: drop what was read before, these start afresh."""
        try:
            st = os.stat(self.path)
        except OSError:
            restarted = self.offset > 0
            self.offset, self._identity = 0, None
            return [], restarted
        identity = (st.st_dev, st.st_ino)
        restarted = self._identity is not None and (identity != self._identity or st.st_size < self.offset)
        if restarted:
            self.offset, self.bad_lines = 0, 0
        self._identity = identity
        if st.st_size <= self.offset:
            return [], restarted
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read(min(max_bytes, st.st_size - self.offset))
        except OSError:
            return [], restarted
        end = chunk.rfind(b"\n") + 1
        if end == 0 and len(chunk) >= max_bytes:  # one line longer than a chunk: read it whole
            return self.read_new(max_bytes * 4)
        records = []
        position = 0
        while position < end:
            stop = chunk.index(b"\n", position) + 1
            try:
                data = json.loads(chunk[position:stop])
            except ValueError:
                data = None
            if isinstance(data, dict):
                records.append(summarise(data, self.offset + position, stop - position))
            elif chunk[position:stop].strip():
                self.bad_lines += 1
            position = stop
        self.offset += end
        return records, restarted


def read_line(path: Path, record: ResultRecord) -> dict:
    """The full result behind a record (its line, read again by offset); {} if it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(record.offset)
            data = json.loads(f.read(record.length))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class OutputFolder:
    """What an output folder says about the run that wrote it."""

    path: Path
    task: str | None
    model: str | None
    recorded_input: Path | None  # the input folder as the run recorded it (maybe on another machine)
    input_dir: Path | None  # where the input images are found here; None: not on this computer
    finished: bool  # summary.json is there and newer than predictions.jsonl

    @property
    def predictions(self) -> Path:
        return self.path / PREDICTIONS


def describe_folder(path: Path, input_dir: Path | None = None) -> OutputFolder:
    """Read run.json and summary.json (either may be missing: a run still going, an older run).
    `input_dir` overrides the recorded input folder (the user pointed at where the images are now)."""
    path = Path(path).expanduser()
    manifest, summary = read_json_object(path / RUN_MANIFEST), read_json_object(path / SUMMARY)

    def first(*keys: str):
        for data in (manifest, summary):
            for key in keys:
                if isinstance(data.get(key), str) and data[key]:
                    return data[key]
        return None

    recorded = first("input", "input_dir", "input_folder")
    recorded_input = Path(recorded) if recorded else None
    found = input_dir if input_dir is not None else recorded_input
    try:
        predictions_time = (path / PREDICTIONS).stat().st_mtime_ns
        finished = bool(summary) and (path / SUMMARY).stat().st_mtime_ns >= predictions_time
    except OSError:
        finished = False
    return OutputFolder(
        path=path,
        task=first("task"),
        model=first("model", "model_id"),
        recorded_input=recorded_input,
        input_dir=Path(found) if found is not None and Path(found).is_dir() else None,
        finished=finished,
    )


def is_output_folder(path: Path) -> bool:
    """True when `path` holds a run's results (or the start of one)."""
    path = Path(path)
    return any((path / name).is_file() for name in (PREDICTIONS, SUMMARY, RUN_MANIFEST))
