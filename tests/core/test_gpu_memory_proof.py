"""The CPU-side checks of the GPU proof's memory step (scripts/gpu_memory_proof.py): fed a recorded fake
NVML, made-up fragmentation rows, and a SYNTHETIC snapshot; the step itself runs only on a GPU."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from batchlens.core.machine.gpu_processes import GpuProcessReader
from batchlens.core.outputs.snapshot_file import write_snapshot
from tests.core.fake_nvml import GIB, FakeNvml
from tests.core.snapshot_kit import make_snapshot

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_memory_proof.py"
spec = importlib.util.spec_from_file_location("gpu_memory_proof", SCRIPT)
proof = importlib.util.module_from_spec(spec)
spec.loader.exec_module(proof)


def test_the_holder_is_seen_with_its_share_beside_batchlens():
    fake = FakeNvml([(os.getpid(), 2 * GIB, "compute"), (9999, 28 * GIB, "compute")])
    ok, words = proof.holder_seen(GpuProcessReader("cuda", 0, fake, name_of=str).read(), 9999)
    assert ok and "holds 35% of the card" in words
    ok, words = proof.holder_seen(GpuProcessReader("cuda", 0, fake, name_of=str).read(), 1234)
    assert not ok and "not in the list" in words
    ok, words = proof.holder_seen(GpuProcessReader("cpu").read(), 9999)
    assert not ok and words.startswith("no list:")


def test_fragmentation_must_move_with_the_batch_size():
    rows = [{"batch": b, "inactive_split": v, "segments": 3} for b, v in ((1, 0), (16, 2**21), (3, 2**20))]
    assert proof.fragmentation_moved(rows)[0]
    flat = [dict(r, inactive_split=0) for r in rows]
    assert not proof.fragmentation_moved(flat)[0]
    assert not proof.fragmentation_moved([dict(r, inactive_split=None) for r in rows])[0]


def test_the_snapshot_facts_name_the_peak_batch(tmp_path: Path):
    snap = make_snapshot()
    markers = snap.pop("batchlens_markers")
    write_snapshot(snap, tmp_path / "s.pickle", markers)
    ok, facts = proof.snapshot_facts(tmp_path / "s.pickle")
    assert ok and facts["peak_batch"] == "img2.png" and facts["batches_marked"] == 4
