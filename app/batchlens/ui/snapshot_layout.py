"""What the snapshot viewer draws, computed without Qt widgets (on the loader's thread): live memory
over time stacked by allocation, as memory_viz's "Active Memory Timeline" stacks it (each block sits on
the blocks allocated before it that are still alive, and drops when one of them is freed), coloured by
where it was allocated; the segments and their blocks; BatchLens's batch markers on the same clock.

Decimated so that a big snapshot stays quick to draw: the `max_blocks` biggest allocations are drawn
one by one, sampled at `samples` moments; the others are in the outline of the total."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from batchlens.core.outputs.snapshot_file import MARKERS_KEY

TORCH_PARTS = ("/torch/", "\\torch\\", "<built-in", "??")
PALETTE = (
    "#3d8bfd", "#f08c00", "#ae3ec9", "#12b886", "#e03131", "#1098ad", "#f783ac", "#74b816",
    "#fab005", "#7048e8", "#fd7e14", "#20c997", "#845ef7", "#ff6b6b", "#228be6", "#94d82d",
)  # fmt: skip


def top_frame(frames: list) -> str:
    """Where a block was allocated, in a few words: the innermost frame outside torch itself (the
    model's code or BatchLens's), else the innermost frame; "unknown" without frames."""
    if not frames:
        return "unknown (no stack recorded)"
    chosen = next(
        (f for f in frames if not any(p in str(f.get("filename", "")) for p in TORCH_PARTS)), frames[0]
    )
    name = str(chosen.get("filename", "?")).replace("\\", "/").rsplit("/", 1)[-1]
    return f"{chosen.get('name', '?')} ({name}:{chosen.get('line', '?')})"


def colour_of(site: str) -> str:
    return PALETTE[zlib.crc32(site.encode()) % len(PALETTE)]


def stack_text(frames: list) -> str:
    if not frames:
        return "No stack was recorded for this block."
    return "\n".join(f"{f.get('name', '?')}  {f.get('filename', '?')}:{f.get('line', '?')}" for f in frames)


@dataclass
class SnapshotLayout:
    t0_us: int
    times: np.ndarray  # the sampled moments, s since the trace's first event
    total: np.ndarray  # live bytes at each sampled moment (every block, drawn or not)
    starts: np.ndarray  # per drawn block: allocated at (s)
    ends: np.ndarray  # freed at (s); the trace's end where still alive
    alive: np.ndarray  # per drawn block: still allocated when the snapshot was taken
    sizes: np.ndarray  # bytes
    below: np.ndarray  # (samples, drawn blocks): bytes of older live blocks under each block, NaN dead
    sites: list[str]  # per drawn block: top_frame
    frames: list[list]  # per drawn block: its stack
    markers: list[tuple[float, str, str]]  # (s, kind, text)
    segments: list[dict]
    blocks_total: int = 0  # allocations in the trace (drawn or not)
    events: int = 0
    ooms: list[float] = field(default_factory=list)  # when the allocator ran out of memory (s)

    @property
    def peak(self) -> tuple[float, int]:
        """(when, bytes) of the highest live memory sampled."""
        if not len(self.total):
            return 0.0, 0
        i = int(np.argmax(self.total))
        return float(self.times[i]), int(self.total[i])

    def marker_before(self, time_s: float) -> tuple[float, str, str] | None:
        """The batch marker at or before `time_s`: the batch whose forward was running then."""
        before = [m for m in self.markers if m[0] <= time_s]
        return before[-1] if before else None

    def block_at(self, time_s: float, y_bytes: float) -> int | None:
        """The drawn block under (time, height), or None."""
        if not len(self.times) or not len(self.sizes):
            return None
        j = int(np.clip(np.searchsorted(self.times, time_s), 0, len(self.times) - 1))
        below = self.below[j]
        hit = np.flatnonzero((below <= y_bytes) & (y_bytes < below + self.sizes))
        return int(hit[0]) if len(hit) else None


def _stack(times, start, end, alive_at_end, size, drawn) -> tuple[np.ndarray, np.ndarray]:
    """For each sampled time: the bytes of the live blocks allocated before each drawn block (NaN where
    that block is not alive) and the total live. One sweep over the allocations and frees in time
    order, keeping the live blocks in allocation order: at any moment only a few hundred are alive."""
    n = len(size)
    below = np.full((len(times), len(drawn)), np.nan)
    total = np.zeros(len(times))
    freed = np.flatnonzero(~alive_at_end)
    ev_time = np.concatenate((start, end[freed]))
    ev_block = np.concatenate((np.arange(n), freed))
    ev_alloc = np.concatenate((np.ones(n, bool), np.zeros(len(freed), bool)))
    order = np.lexsort((~ev_alloc, ev_time))  # at one moment: allocations first, then frees
    ev_time, ev_block, ev_alloc = ev_time[order].tolist(), ev_block[order].tolist(), ev_alloc[order].tolist()
    column = {int(b): k for k, b in enumerate(drawn)}
    sizes = size.tolist()
    live: dict[int, float] = {}
    e, events = 0, len(ev_time)
    for j, t in enumerate(times.tolist()):
        while e < events and ev_time[e] <= t:
            if ev_alloc[e]:
                live[ev_block[e]] = sizes[ev_block[e]]
            else:
                live.pop(ev_block[e], None)
            e += 1
        if not live:
            continue
        blocks = sorted(live)  # allocation order (a block alive from the start may come late in `live`)
        held = np.fromiter((live[b] for b in blocks), float, len(blocks))
        under = np.cumsum(held) - held
        total[j] = under[-1] + held[-1]
        for b, u in zip(blocks, under.tolist(), strict=True):
            k = column.get(b)
            if k is not None:
                below[j, k] = u
    return below, total


def build_layout(data: dict, max_blocks: int = 1500, samples: int = 400) -> SnapshotLayout:
    """The layout of a loaded snapshot (`core/outputs/snapshot_file.load_snapshot`)."""
    traces = [t for t in data.get("device_traces", []) if t]
    trace = max(traces, key=len) if traces else []
    times_us = [e.get("time_us", 0) for e in trace if isinstance(e, dict)]
    t0 = min(times_us) if times_us else 0
    t_end = max(times_us) if times_us else 0
    # Each allocation: [alloc time, free time or None, size, frames]; blocks alive before the
    # history began (the weights, usually) come from the segments and sit at the bottom.
    allocs: list[list] = []
    open_at: dict[int, int] = {}
    traced = {e.get("addr") for e in trace if isinstance(e, dict) and e.get("action") == "alloc"}
    for segment in data.get("segments", []):
        for block in segment.get("blocks", []) if isinstance(segment, dict) else []:
            if block.get("state") == "active_allocated" and block.get("address") not in traced:
                open_at[block.get("address")] = len(allocs)
                allocs.append([t0, None, int(block.get("size", 0)), block.get("frames", [])])
    ooms = []
    for e in trace:
        if not isinstance(e, dict):
            continue
        action, addr = e.get("action"), e.get("addr")
        if action == "alloc":
            open_at[addr] = len(allocs)
            allocs.append([e.get("time_us", t0), None, int(e.get("size", 0)), e.get("frames", [])])
        elif action == "free_completed" and addr in open_at:
            allocs[open_at.pop(addr)][1] = e.get("time_us", t_end)
        elif action == "oom":
            ooms.append((e.get("time_us", t0) - t0) / 1e6)
    n = len(allocs)
    start = np.array([a[0] for a in allocs], dtype=np.float64) - t0 if n else np.zeros(0)
    end = (
        np.array([t_end if a[1] is None else a[1] for a in allocs], dtype=np.float64) - t0
        if n
        else np.zeros(0)
    )
    alive_at_end = np.array([a[1] is None for a in allocs], dtype=bool) if n else np.zeros(0, bool)
    size = np.array([a[2] for a in allocs], dtype=np.float64) if n else np.zeros(0)
    span = max(float(t_end - t0), 1.0)
    drawn = np.argsort(-size, kind="stable")[:max_blocks]
    drawn.sort()  # in allocation order
    # Sampled at even steps and at each drawn block's allocation (so even a short-lived one shows).
    times = np.unique(np.concatenate((np.linspace(0.0, span, samples), start[drawn])))
    below, total = _stack(times, start, end, alive_at_end, size, drawn)
    markers = [
        ((m.get("time_us", t0) - t0) / 1e6, str(m.get("kind", "batch")), str(m.get("text", "")))
        for m in data.get(MARKERS_KEY, [])
        if isinstance(m, dict)
    ]
    frames = [allocs[i][3] if isinstance(allocs[i][3], list) else [] for i in drawn]
    return SnapshotLayout(
        t0_us=t0,
        times=times / 1e6,
        total=total,
        starts=start[drawn] / 1e6,
        ends=end[drawn] / 1e6,
        alive=alive_at_end[drawn],
        sizes=size[drawn],
        below=below,
        sites=[top_frame(f) for f in frames],
        frames=frames,
        markers=sorted(markers),
        segments=[s for s in data.get("segments", []) if isinstance(s, dict)],
        blocks_total=n,
        events=len(trace),
        ooms=ooms,
    )
