"""--empty-cache: parsing, when each policy fires, and that a run records it (the effect on reserved
memory needs a GPU: tests/gpu/test_cuda_proof.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchlens.core.errors import BatchLensError
from batchlens.core.machine.memory import MemorySample
from batchlens.core.run.cache_policy import CachePolicy

GiB = 2**30


def sample(reserved: int, total: int | None = 10 * GiB) -> MemorySample:
    return MemorySample(0.0, allocated=0, reserved=reserved, peak=0, device_used=None, device_total=total)


def test_parse_and_round_trip():
    for text in ("never", "image", "every:25", "reserved:0.5", " Every:3 "):
        policy = CachePolicy.parse(text)
        assert CachePolicy.parse(str(policy)) == policy
    for bad in ("", "sometimes", "every:0", "every:x", "reserved:1.5", "reserved:0", "never:3"):
        with pytest.raises(BatchLensError, match="Unknown cache policy"):
            CachePolicy.parse(bad)


def test_when_each_policy_fires():
    low, high = sample(1 * GiB), sample(6 * GiB)
    assert not CachePolicy.parse("never").due(0, 1, high)
    assert all(CachePolicy.parse("image").due(i, i + 1, low) for i in range(5))
    every = CachePolicy.parse("every:10")
    fired = [n for n in range(0, 40, 4) if every.due(n, n + 4, low)]  # batches of 4 images
    assert fired == [8, 16, 28, 36]  # the batches that reach 10, 20, 30 and 40 images, once each
    reserved = CachePolicy.parse("reserved:0.5")
    assert reserved.due(0, 1, high) and not reserved.due(0, 1, low)
    assert not reserved.due(0, 1, sample(6 * GiB, total=None))  # the CPU has no device total


def test_cli_records_the_policy_and_refuses_a_wrong_one(tmp_path: Path, shapes_folder: Path, capsys):
    """`batchlens run` in this process (the option's way from the command line to summary.json; a real
    process's exit code and one-sentence refusals are test_cli.py's)."""
    from batchlens.cli import main

    def run(*args: str) -> tuple[int, str]:
        argv = ["run", "--model", "demo-shapes", "--input", str(shapes_folder), "--device", "cpu", *args]
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse refuses a wrong choice this way
            code = exc.code
        return code, capsys.readouterr().err

    code, err = run("--output", str(tmp_path / "a"), "--empty-cache", "every:5", "--no-progress")
    assert code == 0, err
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["empty_cache"] == "every:5" and summary["counts"]["ok"] == 12
    code, err = run("--output", str(tmp_path / "b"), "--empty-cache", "often")
    assert code == 2 and "Unknown cache policy 'often'" in err
    assert "Traceback" not in err and not (tmp_path / "b" / "predictions.jsonl").exists()
