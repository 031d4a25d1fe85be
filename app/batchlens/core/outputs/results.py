"""The output contract: predictions.jsonl (one line per image, flushed as it is written),
summary.json at the end, and atomic writes so a killed run never leaves a half-written file.

What a resume keeps is read back defensively (`read_predictions`): a line that breaks the contract is
set aside in predictions.rejected.jsonl with the reason, and its image runs again."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from batchlens.core.errors import BatchLensError
from batchlens.core.files import TEMP_NAME, OutputFolder, legacy_output_rel, output_rel, write_error
from batchlens.core.outputs.records import OUTPUT_FIELDS, check_line, json_ready, non_finite, record_key

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.jsonl"
SUMMARY = "summary.json"
REJECTED = "predictions.rejected.jsonl"
_ESCAPED = re.compile("[\udc80-\udcff]")  # what json_ready escapes: bytes of a name that were not UTF-8


def dumps_line(record: dict) -> str:
    """One strict-JSON line (names escaped, NaN refused with ValueError)."""
    text = json.dumps(record, ensure_ascii=False, allow_nan=False)
    if _ESCAPED.search(text):  # rare: json_ready's escaped names and raw bytes (the same text otherwise)
        text = json.dumps(json_ready(record), ensure_ascii=False, allow_nan=False)
    return text + "\n"


@dataclass
class ReadBack:
    """What a predictions.jsonl holds, checked line by line."""

    kept: list[dict] = field(default_factory=list)  # one valid ok line per image, in file order
    errors: int = 0  # error lines: their images run again
    rejected: list[tuple[int, bytes, str]] = field(default_factory=list)  # (line number, raw, reason)


def read_predictions(
    path: Path, check: Callable[[dict], str | None] | None = None, data: bytes | None = None
) -> ReadBack:
    """Read `path` (or its content `data`) defensively. `check` adds the task's own checks of an ok
    line (its fields). A final partial line (a run killed mid-write) is dropped: it never was a result."""
    back = ReadBack()
    if data is None:
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            return back
    seen: set[str] = set()
    output_dir = Path(path).parent
    for number, raw in enumerate(data.splitlines(keepends=True), start=1):
        if not raw.endswith(b"\n"):
            log.info("Dropped the partial last line of %s (the run was killed while writing it)", path)
            break
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            back.rejected.append((number, raw, "not UTF-8 text"))
            continue
        except ValueError:
            back.rejected.append((number, raw, "not JSON"))
            continue
        reason = check_line(record)
        if reason is None and record["status"] == "ok":
            reason = (check(record) if check else None) or _output_reason(record, output_dir)
            if reason is None and record_key(record) in seen:
                reason = "a second ok line for the same image"
        if reason is not None:
            back.rejected.append((number, raw, reason))
        elif record["status"] == "ok":
            seen.add(record_key(record))
            back.kept.append(record)
        else:
            back.errors += 1
    return back


def _output_reason(record: dict, output_dir: Path) -> str | None:
    """An ok line may name only the output file BatchLens writes for its image, and it must exist."""
    image = record_key(record)
    for name in OUTPUT_FIELDS:
        if name in record:
            written = record_key(record, name)
            if written not in (output_rel(image), legacy_output_rel(image)):
                return f"its {name!r} is not the file BatchLens writes for this image"
            if not (output_dir / written).is_file():
                return f"its output file {record[name]} is missing"
    return None


def read_records(path: Path) -> list[dict]:
    """Every line of a predictions.jsonl that keeps the contract (ok and error lines)."""
    records = []
    try:
        lines = Path(path).read_bytes().splitlines(keepends=True)
    except FileNotFoundError:
        return []
    for raw in lines:
        try:
            record = json.loads(raw.decode("utf-8"))
        except ValueError:
            continue
        if raw.endswith(b"\n") and check_line(record) is None:
            records.append(record)
    return records


def set_aside(output_dir: Path | OutputFolder, rejected: list[tuple[int, bytes, str]]) -> None:
    """Append the rejected lines, whole (text and raw bytes) with their reasons, to REJECTED."""
    when = datetime.now(UTC).isoformat(timespec="seconds")
    lines = "".join(
        json.dumps(
            {
                "line": number,
                "reason": reason,
                "set_aside_at": when,
                "text": raw.rstrip(b"\n").decode("utf-8", "backslashreplace"),
                "bytes_b64": base64.b64encode(raw).decode("ascii"),
            },
            ensure_ascii=False,
        )
        + "\n"
        for number, raw, reason in rejected
    )
    folder = OutputFolder.at(output_dir)
    old = folder.read_bytes(REJECTED) or b""
    folder.write_bytes(REJECTED, old + lines.encode("utf-8", "backslashreplace"))


def remove_stale_temp_files(output_dir: Path, input_dir: Path | None = None) -> int:
    """Delete the temporary files of a killed run and return how many. Only names of BatchLens's own
    pattern (TEMP_NAME), never inside the input folder (which may sit inside the output folder),
    links not followed. Call it while holding the folder's lock, so no live run owns them."""
    removed = 0
    skip = Path(input_dir).resolve() if input_dir is not None else None
    for folder, dirs, files in os.walk(output_dir):
        if skip is not None:
            dirs[:] = [d for d in dirs if Path(folder, d).resolve() != skip]
            if Path(folder).resolve() == skip:
                continue
        for name in files:
            path = Path(folder, name)
            if TEMP_NAME.fullmatch(name) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def run_finished(output_dir: Path) -> bool:
    """Whether summary.json says the folder's run got to its end (not killed, cancelled or stopped)."""
    predictions, summary = Path(output_dir) / PREDICTIONS, Path(output_dir) / SUMMARY
    try:
        data = json.loads(summary.read_text(encoding="utf-8"))
        return bool(
            summary.stat().st_mtime_ns >= predictions.stat().st_mtime_ns  # not an older run's summary
            and not data.get("cancelled")
            and not data.get("stopped")
            and data["counts"].get("not_processed", 0) == 0
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False  # no summary: the run was killed or crashed


class ResultsWriter:
    """Appends one JSON line per image and flushes it, so every finished image survives a crash.

    With `resume`, the lines a resume keeps are read back with `check` (the task's field checks):
    anything else is set aside in REJECTED (never silently dropped) and its image runs again."""

    def __init__(
        self,
        output_dir: Path | OutputFolder,
        resume: bool = False,
        check: Callable[[dict], str | None] | None = None,
        input_dir: Path | None = None,
    ):
        self.folder = OutputFolder.at(output_dir)  # every write goes through it (core/files.py)
        self.output_dir = self.folder.path
        self.path = self.output_dir / PREDICTIONS
        self.kept: list[dict] = []
        self.rejected: list[tuple[int, bytes, str]] = []
        if resume:
            data = self.folder.read_bytes(PREDICTIONS)
            back = read_predictions(self.path, check, data) if data is not None else ReadBack()
            self.kept, self.rejected = back.kept, back.rejected
            if self.rejected:
                set_aside(self.folder, self.rejected)
            # Keep the images that already succeeded; errors are retried. Rewriting atomically also
            # drops a partial last line left by a killed run.
            self.folder.write_text(PREDICTIONS, "".join(dumps_line(r) for r in self.kept))
            remove_stale_temp_files(self.output_dir, input_dir)
        else:
            self.folder.unlink(PREDICTIONS)
        # Unbuffered bytes: each line reaches the operating system whole the moment it is written.
        self._file = self.folder.open_append(PREDICTIONS)

    @property
    def done(self) -> set[str]:
        return {record_key(r) for r in self.kept}

    def rejected_note(self) -> str | None:
        """One sentence about the lines set aside, or None."""
        if not self.rejected:
            return None
        lines = ", ".join(f"{n} ({reason})" for n, _, reason in self.rejected[:5])
        more = f" and {len(self.rejected) - 5} more" if len(self.rejected) > 5 else ""
        return (
            f"{len(self.rejected)} line(s) of {self.path.name} broke the output contract and were set "
            f"aside in {REJECTED}, their images run again: line {lines}{more}."
        )

    def write(self, record: dict) -> None:
        """Append one whole line. If the disk fills up part-way, the partial line is cut off again, so
        the file only ever holds complete lines (then the OSError is raised)."""
        try:
            text = dumps_line(record)
        except ValueError:  # NaN the pipeline did not catch: an error line, never invalid JSON
            where = non_finite(record) or "a value"
            text = dumps_line(
                {
                    "image": record["image"],
                    "status": "error",
                    "error": f"{record['image']}: the model produced NaN or infinity ({where})",
                    "seconds": record.get("seconds", 0.0),
                }
            )
        data = text.encode("utf-8", "backslashreplace")  # a lone surrogate in a message: never a crash
        start = self._file.seek(0, os.SEEK_END)
        try:
            self._write_all(data)
        except OSError:
            try:
                os.ftruncate(self._file.fileno(), start)
            except OSError:
                pass  # resume drops a partial last line anyway
            raise

    def write_line(self, record: dict) -> None:
        """write(), a failed write told in one sentence (BatchLensError): the folder's own when it was
        deleted, moved or replaced (check), else what the write met (a full disk...)."""
        try:
            self.write(record)
        except OSError as exc:
            self.check()
            raise BatchLensError(write_error(exc, self.output_dir)) from None

    def _write_all(self, data: bytes) -> None:
        fd, view = self._file.fileno(), memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def close(self, order: list[str] | None = None) -> None:
        """Close the file; with `order` (the scan order), sort the lines into it (after a resume)."""
        self._file.close()
        if order is not None and self.kept and self.folder.problem() is None:
            rank = {rel: i for i, rel in enumerate(order)}

            def position(line: bytes) -> int:
                try:
                    return rank.get(record_key(json.loads(line)), len(rank))
                except (ValueError, KeyError, TypeError):
                    return len(rank)

            # The lines as written (every one this writer wrote is whole and valid), only reordered.
            lines = (self.folder.read_bytes(PREDICTIONS) or b"").splitlines(keepends=True)
            data = b"".join(sorted((line for line in lines if line.endswith(b"\n")), key=position))
            self.folder.write_bytes(PREDICTIONS, data)

    def check(self) -> None:
        """Raise BatchLensError (one sentence) when the output folder or predictions.jsonl is no longer
        the one this writer opened (deleted, moved, replaced, read-only): see OutputFolder."""
        self.folder.check_still_ours()

    def write_summary(self, summary: dict) -> Path:
        self.check()  # never a summary in a folder that is no longer the run's
        text = json.dumps(json_ready(summary), indent=2, ensure_ascii=False, allow_nan=False)
        return self.folder.write_text(SUMMARY, text + "\n")
