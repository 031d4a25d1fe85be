"""`--memory-snapshot always|oom|off`: record the CUDA allocator's history during a run and write it as
a memory_viz-compatible pickle (core/outputs/snapshot_file.py) in the output folder.

* oom: recorded from the start, written at the first out-of-memory error (what `--memory-snapshot`
  alone has always meant);
* always: recorded for the first N images (`always:N`, default 50) or 120 s, whichever comes first,
  then written and recording stops (a run's steady state is in its first batches; recording every
  allocation's stack costs a few microseconds each);
* off (the default): nothing is recorded.

Each batch is marked on the trace's clock (microseconds since the Unix epoch, as torch stamps its
entries), with the images it held, so the viewer can say which image's forward made the peak.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from batchlens.core.errors import BatchLensError
from batchlens.core.outputs.snapshot_file import MAX_SNAPSHOT_BYTES, SnapshotError, write_snapshot

MODES = ("off", "oom", "always")
DEFAULT_IMAGES = 50
DEFAULT_SECONDS = 120.0
MAX_ENTRIES = 100_000  # the allocator's trace keeps the newest this many events
MAX_MARKERS = 20_000


def snapshot_mode(value) -> tuple[str, int]:
    """("off" | "oom" | "always", images to record) from the option's text (or the old boolean)."""
    if value is True:
        return "oom", 0
    if not value:
        return "off", 0
    text = str(value).strip().lower()
    mode, _, count = text.partition(":")
    if mode not in MODES or (count and (mode != "always" or not count.isdigit() or int(count) < 1)):
        raise BatchLensError(
            f"--memory-snapshot {value} is not a choice: use always (or always:N, N images), oom or off."
        )
    return mode, int(count) if count else (DEFAULT_IMAGES if mode == "always" else 0)


def now_us() -> int:
    return time.time_ns() // 1000


class SnapshotRecorder:
    """Started before the first batch; `mark_batch` before each batch's forward; `after_batch` after
    it (writes the `always` snapshot when its images are done); `on_first_oom` for the `oom` mode;
    `stop` at the end (the history is turned off, whatever happened)."""

    def __init__(
        self,
        value,
        device: torch.device,
        path: Path,
        seconds: float = DEFAULT_SECONDS,
        max_bytes: int = MAX_SNAPSHOT_BYTES,
    ):
        self.mode, self.images = snapshot_mode(value)
        self.device = device
        self.path = Path(path)
        self.seconds = seconds
        self.max_bytes = max_bytes
        self.markers: list[dict] = []
        self.recording = False
        self.saved = False
        self._seen = 0
        self._started = 0.0

    @property
    def wanted(self) -> bool:
        return self.mode != "off"

    def unavailable_note(self) -> str | None:
        if self.device.type != "cuda" and (self.wanted or self.mode == "always"):
            return (
                f"--memory-snapshot needs a CUDA GPU (PyTorch records allocator history only there); "
                f"no snapshot is taken on {self.device}."
            )
        return None

    def start(self) -> bool:
        if not self.wanted or self.device.type != "cuda":
            return False
        torch.cuda.memory._record_memory_history(max_entries=MAX_ENTRIES)
        self.recording = True
        self._started = time.monotonic()
        return True

    def begin_now(self, images: int = DEFAULT_IMAGES) -> str:
        """Start an `always` recording now (asked during a run), or say why not, in one sentence."""
        if self.device.type != "cuda":
            return self.unavailable_note() or (
                f"Recording a memory snapshot needs a CUDA GPU; this run uses {self.device}."
            )
        if self.recording and self.mode == "always":
            return "A memory snapshot is already being recorded."
        if not self.recording:
            self.start()
        self.mode, self.images, self.saved, self._seen = "always", images, False, 0
        self._started = time.monotonic()
        return f"Recording a memory snapshot of the next {images} images into {self.path}."

    def mark_batch(self, images: list[str]) -> None:
        if not self.recording or len(self.markers) >= MAX_MARKERS:
            return
        at = now_us()
        first = images[0] if images else ""
        text = first if len(images) == 1 else f"{first} and {len(images) - 1} more"
        self.markers.append({"time_us": at, "kind": "batch", "text": text, "images": list(images)})

    def after_batch(self, count: int) -> str | None:
        """The `always` snapshot's message once its images (or seconds) are done, else None."""
        self._seen += count
        if self.mode != "always" or not self.recording or self.saved:
            return None
        if self._seen < self.images and time.monotonic() - self._started < self.seconds:
            return None
        message = self.save(f"after {self._seen} images")
        self.stop()
        return message

    def on_first_oom(self) -> str | None:
        if not self.recording or self.saved:
            return None
        return self.save("at the first out-of-memory error")

    def free_path(self) -> Path:
        """The snapshot's name, numbered where one is already there (a second recording in the same
        run, or a resumed run's): an earlier snapshot is never overwritten."""
        path, n = self.path, 1
        while path.exists():
            n += 1
            path = self.path.with_name(f"{self.path.stem}-{n}{self.path.suffix}")
        return path

    def save(self, when: str) -> str:
        self.saved = True
        path = self.free_path()
        try:
            snapshot = torch.cuda.memory._snapshot(self.device)
            dropped = write_snapshot(snapshot, path, self.markers, self.max_bytes)
        except SnapshotError as exc:
            return str(exc)
        except Exception as exc:  # a failed snapshot must not make the run fail
            return f"Could not save the memory snapshot to {path}: {type(exc).__name__}: {exc}"
        trimmed = f" (its oldest {dropped} events were left out to keep it under 1 GB)" if dropped else ""
        return (
            f"Saved a memory snapshot {when} to {path}{trimmed}; open it with File > Open memory "
            "snapshot, or drag it onto https://pytorch.org/memory_viz."
        )

    def stop(self) -> None:
        if self.recording:
            self.recording = False
            torch.cuda.memory._record_memory_history(enabled=None)
