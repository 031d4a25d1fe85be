"""The output contract: predictions.jsonl (one line per image, flushed as it is written),
summary.json at the end, and atomic writes so a killed run never leaves a half-written file."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PREDICTIONS = "predictions.jsonl"
SUMMARY = "summary.json"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temporary name next to `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def output_path_for(output_dir: Path, rel: str, suffix: str = ".png") -> Path:
    """Where an image's output file goes: the input tree mirrored under the output folder.

    `a/b.png` -> `a/b.png`; other inputs keep their extension in the name (`a/b.jpg` -> `a/b.jpg.png`)
    so `b.jpg` and `b.png` in one folder never overwrite each other's output.
    """
    name = rel if rel.lower().endswith(suffix) else rel + suffix
    return output_dir / name


def write_error(exc: OSError, output_dir: Path) -> str:
    """One sentence for a write that failed: what happened, that nothing written is damaged, what to do."""
    kept = "Everything written so far is complete and valid"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"The disk holding the output folder {output_dir} is full (no space left on device), so the "
            f"run stopped. {kept}: free some space, then run the same command with --resume to finish."
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            f"The output folder {output_dir} is no longer writable ({exc.strerror}), so the run stopped. "
            f"{kept}: fix the folder's permissions, then run again with --resume."
        )
    where = exc.filename or output_dir
    return (
        f"Cannot write {where}: {exc.strerror or exc}, so the run stopped. "
        f"{kept}; once the cause is fixed, run again with --resume."
    )


def read_records(path: Path) -> list[dict]:
    """Every complete line of a predictions.jsonl. A final partial line (a killed run) is dropped."""
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # partial last line: the process died mid-write
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def remove_stale_temp_files(output_dir: Path) -> int:
    """Delete the temporary files of a killed run (`.NAME.PID.tmp`, see atomic_write); return how many."""
    removed = 0
    for tmp in Path(output_dir).rglob(".*.tmp"):
        parts = tmp.name.rsplit(".", 2)  # [".NAME", "PID", "tmp"]
        if len(parts) == 3 and parts[1].isdigit() and tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


@dataclass(frozen=True)
class UnfinishedRun:
    """An output folder whose last run did not finish (killed, cancelled, stopped, or with images
    still to do): what `--resume` (the window's Resume) would keep."""

    ok: int  # images finished (kept by a resume)
    failed: int  # images with an error line (retried by a resume)


def unfinished_run(output_dir: Path) -> UnfinishedRun | None:
    """None when `output_dir` holds no run, or a run that finished; else what it holds."""
    predictions, summary = Path(output_dir) / PREDICTIONS, Path(output_dir) / SUMMARY
    records = read_records(predictions)
    if not records:
        return None
    ok = sum(r.get("status") == "ok" for r in records)
    try:
        data = json.loads(summary.read_text(encoding="utf-8"))
        finished = (
            summary.stat().st_mtime_ns >= predictions.stat().st_mtime_ns  # not an older run's summary
            and not data.get("cancelled")
            and not data.get("stopped")
            and data["counts"].get("not_processed", 0) == 0
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        finished = False  # no summary: the run was killed or crashed
    return None if finished else UnfinishedRun(ok, len(records) - ok)


class ResultsWriter:
    """Appends one JSON line per image and flushes it, so every finished image survives a crash."""

    def __init__(self, output_dir: Path, resume: bool = False):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / PREDICTIONS
        self.kept: list[dict] = []
        if resume:
            # Keep the images that already succeeded; errors are retried. Rewriting atomically also
            # drops a partial last line left by a killed run.
            self.kept = [r for r in read_records(self.path) if r.get("status") == "ok"]
            atomic_write_text(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.kept))
            remove_stale_temp_files(self.output_dir)
        else:
            self.path.unlink(missing_ok=True)
        # Unbuffered bytes: each line reaches the operating system whole the moment it is written.
        self._file = open(self.path, "ab", buffering=0)

    @property
    def done(self) -> set[str]:
        return {r["image"] for r in self.kept}

    def write(self, record: dict) -> None:
        """Append one whole line. If the disk fills up part-way, the partial line is cut off again, so
        the file only ever holds complete lines (then the OSError is raised)."""
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        start = self._file.seek(0, os.SEEK_END)
        try:
            self._write_all(data)
        except OSError:
            try:
                os.ftruncate(self._file.fileno(), start)
            except OSError:
                pass  # resume drops a partial last line anyway
            raise

    def _write_all(self, data: bytes) -> None:
        fd, view = self._file.fileno(), memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def close(self, order: list[str] | None = None) -> None:
        """Close the file; with `order` (the scan order), sort the lines into it (after a resume)."""
        self._file.close()
        if order is not None and self.kept:
            rank = {rel: i for i, rel in enumerate(order)}
            records = read_records(self.path)
            records.sort(key=lambda r: rank.get(r.get("image"), len(rank)))
            atomic_write_text(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))

    def write_summary(self, summary: dict) -> Path:
        path = self.output_dir / SUMMARY
        atomic_write_text(path, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        return path
