"""The memory plot's data, without Qt: a fixed-size ring buffer of samples, the markers, the rows
Export CSV writes (every sample, and every marker on a row of its own at its own time), and how high
the plot's scale goes."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

# Columns of the ring buffer (bytes, NaN where the backend cannot tell; "segments" is a count).
COLUMNS = (
    "time_s",
    "allocated",
    "reserved",
    "peak",
    "device_used",
    "device_total",
    "inactive_split",
    "segments",
)
CSV_HEADER = [
    *(c if c in ("time_s", "segments") else f"{c}_bytes" for c in COLUMNS),
    "marker",
    "marker_text",
]

TOTAL_IN_REACH = 0.5  # the device total joins the scale once the run's lines reach half of it


class RingBuffer:
    """A fixed number of rows of floats; appending past capacity overwrites the oldest row."""

    def __init__(self, capacity: int, columns: int):
        self._data = np.full((capacity, columns), np.nan)
        self._next = 0
        self._count = 0

    @property
    def capacity(self) -> int:
        return self._data.shape[0]

    def __len__(self) -> int:
        return self._count

    def append(self, row) -> None:
        self._data[self._next] = row
        self._next = (self._next + 1) % self.capacity
        self._count = min(self._count + 1, self.capacity)

    def array(self) -> np.ndarray:
        """The rows, oldest first (a copy)."""
        if self._count < self.capacity:
            return self._data[: self._count].copy()
        return np.concatenate((self._data[self._next :], self._data[: self._next]))

    def clear(self) -> None:
        self._data[:] = np.nan
        self._next = self._count = 0


@dataclass(frozen=True)
class Marker:
    time_s: float
    kind: str  # a key of plot_markers.MARKER_COLORS
    text: str


def nan_if_none(value: int | None) -> float:
    return math.nan if value is None else float(value)


def scale_top(history: np.ndarray, cpu: bool, whole_device: bool, headroom: float) -> tuple[float, bool]:
    """The top of the plot's scale in bytes (`headroom` times the highest line drawn), and whether the
    device total is drawn.

    The scale follows the run's own lines (allocated, reserved, peak, device used), so that 4 GiB on a
    140 GiB card fills the plot instead of lying flat along its bottom. The device total is drawn (and
    scaled to) only when those lines come within reach of it, or when the user asks for the whole
    device. On the CPU the lines are this process's RAM: the machine's total is never drawn."""
    lines = ("allocated", "peak") if cpu else ("allocated", "reserved", "peak", "device_used")
    # (the held-but-unused curves lie below reserved: they never raise the scale)
    values = history[:, [COLUMNS.index(k) for k in lines]]
    highest = float(np.nanmax(values)) if not np.isnan(values).all() else 0.0
    total = history[-1, COLUMNS.index("device_total")] if len(history) else math.nan
    show_total = not cpu and not math.isnan(total) and (whole_device or highest >= TOTAL_IN_REACH * total)
    if show_total:
        highest = max(highest, total)
    return highest * headroom, show_total


def csv_rows(history: np.ndarray, markers: Iterable[Marker]) -> list[list[str]]:
    """Samples and markers in time order (a marker before a sample taken at the same time). Markers
    older than the history keep their own time rather than joining its first row."""
    rows: list[tuple[float, int, list[str]]] = []
    for row in history:
        cells = ["" if math.isnan(v) else str(int(v)) for v in row[1:]]
        rows.append((row[0], 1, [f"{row[0]:.3f}", *cells, "", ""]))
    for m in markers:
        rows.append((m.time_s, 0, [f"{m.time_s:.3f}", *([""] * (len(COLUMNS) - 1)), m.kind, m.text]))
    rows.sort(key=lambda r: (r[0], r[1]))
    return [cells for _, _, cells in rows]


def held_unused(history: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample: reserved - allocated (held by the allocator, used by no tensor), the part of it in
    inactive splits (fragmented: free, but cut from segments that also hold live tensors) and the rest,
    the free cache a new tensor can take whole. NaN where the backend does not report splits."""
    allocated = history[:, COLUMNS.index("allocated")]
    reserved = history[:, COLUMNS.index("reserved")]
    held = np.maximum(reserved - allocated, 0.0)
    inactive = np.minimum(history[:, COLUMNS.index("inactive_split")], held)
    return held, inactive, held - inactive
