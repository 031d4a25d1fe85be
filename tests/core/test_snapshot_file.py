"""The memory snapshot file and --memory-snapshot, on the CPU: a SYNTHETIC snapshot in torch's
documented format (tests/core/snapshot_kit.py); the recording itself needs CUDA (tests/gpu)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from batchlens.core.errors import BatchLensError
from batchlens.core.outputs.snapshot_file import SnapshotError, load_snapshot, write_snapshot
from batchlens.core.run.snapshot_recorder import SnapshotRecorder, snapshot_mode
from tests.core.snapshot_kit import make_snapshot


def test_a_snapshot_written_is_read_back_with_its_markers(tmp_path: Path):
    snap = make_snapshot()
    markers = snap.pop("batchlens_markers")
    path = tmp_path / "memory-snapshot.pickle"
    assert write_snapshot(snap, path, markers) == 0
    back = load_snapshot(path)
    assert back["device_traces"] == snap["device_traces"] and back["batchlens_markers"] == markers
    assert [p.name for p in tmp_path.iterdir()] == ["memory-snapshot.pickle"]  # no temporary left


def test_an_oversized_snapshot_keeps_its_newest_events_under_the_cap(tmp_path: Path):
    snap = make_snapshot(batches=20)
    full = len(pickle.dumps(snap, protocol=4))
    dropped = write_snapshot(snap, tmp_path / "s.pickle", [], max_bytes=full // 3)
    back = load_snapshot(tmp_path / "s.pickle")
    assert (tmp_path / "s.pickle").stat().st_size <= full // 3 and dropped > 0
    assert back["device_traces"][0] == snap["device_traces"][0][dropped:]  # the newest kept


def test_over_limit_corrupt_or_foreign_files_are_refused_in_one_sentence(tmp_path: Path):
    big = tmp_path / "big.pickle"
    write_snapshot(make_snapshot(), big, [])
    with pytest.raises(SnapshotError, match=r"big\.pickle is .* over the .* can open"):
        load_snapshot(big, max_bytes=1000)
    cut = tmp_path / "cut.pickle"
    cut.write_bytes(big.read_bytes()[:5000])
    with pytest.raises(SnapshotError, match=r"cut\.pickle is not a memory snapshot BatchLens can read"):
        load_snapshot(cut)
    evil = tmp_path / "evil.pickle"
    evil.write_bytes(pickle.dumps({"segments": [], "device_traces": [], "x": os.system}))
    with pytest.raises(SnapshotError, match=r"names posix.system|names nt.system"):
        load_snapshot(evil)  # never resolved, never called
    other = tmp_path / "list.pickle"
    other.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(SnapshotError, match="holds a list"):
        load_snapshot(other)


def test_the_option_reads_always_oom_off_and_the_old_flag():
    assert snapshot_mode("off") == ("off", 0) and snapshot_mode(False) == ("off", 0)
    assert snapshot_mode(True) == ("oom", 0) and snapshot_mode("oom") == ("oom", 0)
    assert snapshot_mode("always") == ("always", 50) and snapshot_mode("always:8") == ("always", 8)
    for bad in ("sometimes", "oom:3", "always:0", "always:x"):
        with pytest.raises(BatchLensError, match="is not a choice"):
            snapshot_mode(bad)


def test_the_cli_takes_the_option_and_refuses_a_wrong_value(tmp_path: Path, capsys):
    from batchlens.cli import main
    from batchlens.cli.args import build_parser

    parser = build_parser()
    base = ["run", "--model", "demo-shapes", "--input", str(tmp_path), "--output", str(tmp_path / "o")]
    assert parser.parse_args(base).memory_snapshot == "off"
    assert parser.parse_args([*base, "--memory-snapshot"]).memory_snapshot == "oom"
    assert parser.parse_args([*base, "--memory-snapshot", "always:5"]).memory_snapshot == "always:5"
    with pytest.raises(SystemExit) as refused:  # the parser refuses it, as every wrong option value
        main([*base, "--memory-snapshot", "often"])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    # refused by the parser's type (cli/option_types.py), in one sentence that names the option
    assert "--memory-snapshot: 'often' is not a choice" in err and "Traceback" not in err
    assert err.strip().count("\n") == 0


class FakeHistory:
    """Stands in for torch.cuda.memory's recording calls on a machine without CUDA."""

    def __init__(self):
        self.calls = []

    def record(self, enabled="all", **kwargs):
        self.calls.append(enabled)

    def snapshot(self, device=None):
        snap = make_snapshot(batches=2)
        snap.pop("batchlens_markers")
        return snap


def test_always_records_the_first_images_then_writes_and_stops(tmp_path: Path, monkeypatch):
    fake = FakeHistory()
    monkeypatch.setattr(torch.cuda.memory, "_record_memory_history", fake.record)
    monkeypatch.setattr(torch.cuda.memory, "_snapshot", fake.snapshot)
    (tmp_path / "memory-snapshot.pickle").write_bytes(b"an earlier one")
    recorder = SnapshotRecorder("always:3", torch.device("cuda", 0), tmp_path / "memory-snapshot.pickle")
    assert recorder.start() and fake.calls == ["all"]
    recorder.mark_batch(["a.png", "b.png"])
    assert recorder.after_batch(2) is None
    recorder.mark_batch(["c.png"])
    message = recorder.after_batch(1)
    assert message.startswith("Saved a memory snapshot after 3 images to ") and fake.calls == ["all", None]
    assert (tmp_path / "memory-snapshot.pickle").read_bytes() == b"an earlier one"  # never overwritten
    saved = load_snapshot(tmp_path / "memory-snapshot-2.pickle")
    assert [m["text"] for m in saved["batchlens_markers"]] == ["a.png and 1 more", "c.png"]
    assert recorder.after_batch(1) is None  # once
    recorder.mark_batch(["d.png"])
    assert len(recorder.markers) == 2  # no longer recording


def test_on_the_cpu_the_option_says_it_needs_cuda():
    recorder = SnapshotRecorder("always", torch.device("cpu"), Path("x"))
    assert not recorder.start()
    assert recorder.unavailable_note().startswith("--memory-snapshot needs a CUDA GPU")
    assert "needs a CUDA GPU" in recorder.begin_now()
    assert SnapshotRecorder("off", torch.device("cpu"), Path("x")).unavailable_note() is None
