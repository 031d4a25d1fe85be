"""The memory snapshot file: PyTorch's allocator history, as `torch.cuda.memory._dump_snapshot` writes
it (a pickled dict that https://pytorch.org/memory_viz opens), with BatchLens's image and batch markers
added under a key of its own. No torch here: the window's viewer reads these files too.

The format (torch/cuda/memory.py, `_snapshot`): {"segments": [segment, ...], "device_traces":
[[trace entry, ...] per device]}, a segment {"address", "total_size", "stream", "segment_type",
"allocated_size", "active_size", "blocks": [{"address", "size", "requested_size", "state", "frames"}]},
a trace entry {"action" ("alloc", "free_requested", "free_completed", "segment_alloc",
"segment_free", "oom", "snapshot", ...), "addr", "size", "stream", "time_us", "frames"}, a frame
{"filename", "line", "name"}. BatchLens adds "batchlens_markers": [{"time_us", "kind" ("batch",
"image"), "text"}], on the trace's clock (microseconds since the Unix epoch); memory_viz ignores it.

Reading never runs code from the file: the unpickler refuses every class (a snapshot holds only
dicts, lists, tuples, strings, numbers, booleans and None), and files over the size limit are refused
before they are read.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

from batchlens.core.errors import BatchLensError
from batchlens.core.files import atomic_write

#: memory_viz (a web page) cannot open pickles over about 1 GB; BatchLens writes and reads no bigger
MAX_SNAPSHOT_BYTES = 1_000_000_000
MARKERS_KEY = "batchlens_markers"


class SnapshotError(BatchLensError):
    pass


class _NoClasses(pickle.Unpickler):
    """Builtin containers and scalars only: any class or function in the stream is refused."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"it names {module}.{name}, and a memory snapshot holds no code")


class _YieldingReader(io.RawIOBase):
    """A file whose every read is a Python call: the unpickler (C code, holding the GIL) then lets other
    threads, such as the window's, run between the pickle's frames instead of waiting for the whole file."""

    def __init__(self, raw):
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self._raw.readinto(buffer)

    def read(self, size: int = -1) -> bytes:
        return self._raw.read(size)

    def readline(self, size: int = -1) -> bytes:
        return self._raw.readline(size)

    def peek(self, size: int = 0) -> bytes:
        return self._raw.peek(size)


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def load_snapshot(path: Path, max_bytes: int = MAX_SNAPSHOT_BYTES) -> dict:
    """The snapshot in `path`, or SnapshotError with one sentence naming the file and the problem."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise SnapshotError(f"Cannot open {path}: {exc.strerror or exc}.") from None
    if size > max_bytes:
        raise SnapshotError(
            f"{path} is {_size(size)}, over the {_size(max_bytes)} BatchLens (and memory_viz) can open; "
            "record fewer images to make a smaller snapshot."
        )
    try:
        with open(path, "rb") as raw:
            data = _NoClasses(_YieldingReader(raw)).load()
    except OSError as exc:
        raise SnapshotError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    except Exception as exc:  # UnpicklingError, EOFError, ValueError...: a damaged or foreign file
        raise SnapshotError(f"{path} is not a memory snapshot BatchLens can read ({exc}).") from None
    problem = snapshot_problem(data)
    if problem:
        raise SnapshotError(f"{path} is not a memory snapshot BatchLens can read ({problem}).")
    return data


def snapshot_problem(data) -> str | None:
    """What makes `data` no snapshot, or None."""
    if not isinstance(data, dict):
        return f"it holds a {type(data).__name__}, not the snapshot's dict"
    if not isinstance(data.get("segments"), list) or not isinstance(data.get("device_traces"), list):
        return 'it has no "segments" and "device_traces" lists'
    if not all(isinstance(trace, list) for trace in data["device_traces"]):
        return 'its "device_traces" are not lists of entries'
    return None


def write_snapshot(
    snapshot: dict, path: Path, markers: list[dict], max_bytes: int = MAX_SNAPSHOT_BYTES
) -> int:
    """Write `snapshot` (torch's dict) with `markers` to `path`, atomically, in at most `max_bytes`:
    while it is bigger, the oldest half of each device's trace is dropped (the newest events, those
    nearest the moment it was taken, are kept). Returns how many trace entries were dropped."""
    data = dict(snapshot)
    data[MARKERS_KEY] = list(markers)
    traces = [list(t) for t in data.get("device_traces", [])]
    dropped = 0
    while True:
        data["device_traces"] = traces
        blob = pickle.dumps(data, protocol=4)
        if len(blob) <= max_bytes or not any(traces):
            break
        for i, trace in enumerate(traces):
            cut = (len(trace) + 1) // 2
            dropped += cut
            traces[i] = trace[cut:]
    if len(blob) > max_bytes:
        raise SnapshotError(
            f"The memory snapshot for {path} would be {_size(len(blob))} even without its history, over "
            f"the {_size(max_bytes)} memory_viz can open; it was not written."
        )
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(blob))
    return dropped
