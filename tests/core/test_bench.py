"""`batchlens bench` end to end on a tiny synthetic folder: the table and the JSON have every row,
and every row processed the same images. No timing assertions: speed is reported, not tested."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from PIL import Image

from batchlens.cli import main
from batchlens.core.run.bench import digest, make_synthetic_folder
from tests.helpers import pin_machine_load

# "fast": --fast-decode resizes demo-shapes's images on the uint8 tensor (core/inputs/fast_preprocess.py)
ROW_NAMES = ["plain", "expert", "naive", "exact", "engine", "no-probe", "tuned", "fast"]


def test_bench_cli_prints_table_and_writes_json(tmp_path: Path, capsys, monkeypatch):
    pin_machine_load(monkeypatch, 1.0)  # busy: the engine row decodes batches ahead
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--model",
            "demo-shapes",
            "--synthetic",
            "6",
            "--size",
            "80x60",
            "--device",
            "cpu",
            "--batch-size",
            "2",
            "--repeat",
            "2",
            "--sampler-check",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())

    assert [row["name"] for row in result["rows"]] == ROW_NAMES
    assert result["images"] == 6 and result["device"] == "cpu" and result["memory_kind"] == "cpu"
    assert result["command"].startswith("batchlens bench --model demo-shapes --synthetic 6 --size 80x60")
    names = [f"img_{i:05d}.jpg" for i in range(6)]
    for row in result["rows"]:
        assert row["images"] == 6, row  # the naive loop too: 6 small images stay far under 1 GiB
        assert row["images_digest"] == digest(names), row["name"]
        assert row["images_per_second"] > 0 and row["seconds"] > 0 and row["cpu_seconds"] > 0
        assert row["peak_bytes"] > 0 and row["after_bytes"] > 0 and row["first_result_s"] > 0
        # what the row itself added over the memory at its start: each round's, the median of them
        growths = [r["peak_bytes"] - r["start_bytes"] for r in row["rounds"]]
        assert row["peak_growth_bytes"] == int(statistics.median(growths)), row["name"]
        assert all(r["start_bytes"] > 0 and r["peak_bytes"] <= row["peak_bytes"] for r in row["rounds"])
        assert row["label"] in printed
        low, high = row["images_per_second_range"]
        assert low <= row["images_per_second"] <= high  # the median of its rounds
        assert len(row["rounds"]) == (1 if row["name"] == "naive" else 2)
    rows = {row["name"]: row for row in result["rows"]}
    assert rows["plain"]["ratio"] == 1.0 and rows["expert"]["ratio_expert"] == 1.0
    for row in result["rows"]:  # ratios are medians of the rounds' own ratios (paired rounds)
        if row["name"] != "naive":
            plain = rows["plain"]["rounds"]
            paired = [r["images_per_second"] / p["images_per_second"] for r, p in zip(row["rounds"], plain)]
            assert row["ratio"] == pytest.approx(statistics.median(paired), abs=1e-3)
    assert rows["expert"]["settings"]["batch_size"] == 16 and rows["expert"]["settings"]["workers"] >= 1
    assert rows["exact"]["settings"]["batch_size"] == 1 and rows["exact"]["settings"]["prefetch"] == 0
    engine = rows["engine"]["settings"]
    assert engine["prefetch"] == 2 and engine["threads"]["decode_in_step"] is False
    assert engine["batch_size_auto"]["sizes"][0]["batch_size"] == 1
    assert engine["threads"]["torch"] >= 1 and "auto:" in rows["engine"]["note"]
    assert rows["tuned"]["settings"]["batch_size"] == 2 and rows["tuned"]["settings"]["prefetch"] == 2
    assert result["sampler"]["us_per_sample"] > 0 and result["sampler"]["samples"] >= 6
    assert "ab_percent" in result["sampler"]
    ceiling = result["ceiling"]  # the forward alone, at the defaults row's batch size and threads
    assert ceiling["images_per_second"] > 0 and ceiling["batch_size"] == engine["batch_size"]
    assert "forward-only ceiling" in printed
    assert "main process only" in rows["expert"]["note"]  # its workers' memory is not in its peak
    columns = ("images/s", "vs plain", "vs expert", "first result", "CPU ms/img", "peak mem", "peak-start")
    for column in columns:
        assert column in printed
    assert "memory sampler:" in printed


def test_naive_row_stops_at_its_memory_limit(tmp_path: Path):
    """The origin story's loop, bounded: with a tiny limit it stops early and says how far it got,
    while its memory per image is clearly above the engine's."""
    from batchlens.core.run.bench import BenchConfig, run_bench

    folder = make_synthetic_folder(tmp_path / "in", 6, (96, 96))
    result = run_bench(
        BenchConfig(
            "demo-shapes", input_dir=folder, device="cpu", batch_size=2, naive_limit_bytes=1, prefetch=1
        )
    )
    rows = {row["name"]: row for row in result["rows"]}
    naive = rows["naive"]
    assert 1 <= naive["images"] < 6 and naive["note"].startswith("stopped after")
    assert rows["engine"]["images"] == rows["tuned"]["images"] == rows["plain"]["images"] == 6
    assert rows["tuned"]["settings"]["batch_size"] == 2


def test_synthetic_images_are_photo_sized_jpegs(tmp_path: Path):
    folder = make_synthetic_folder(tmp_path / "syn", 2, (320, 240))
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == ["img_00000.jpg", "img_00001.jpg"]
    with Image.open(files[0]) as im:
        assert im.format == "JPEG" and im.size == (320, 240)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--input", "/no/such/folder"], "does not exist"),
    ],
)
def test_bench_input_problems_are_one_sentence(argv, message, capsys):
    code = main(["bench", "--model", "demo-shapes", "--device", "cpu", *argv])
    assert code == 2
    assert message in capsys.readouterr().err


def test_bench_refuses_zero_synthetic_images_as_it_reads_the_option(capsys):
    with pytest.raises(SystemExit) as refused:
        main(["bench", "--model", "demo-shapes", "--synthetic", "0"])
    assert refused.value.code == 2
    assert "argument --synthetic: '0' is not a whole number from 1 to 100,000" in capsys.readouterr().err


def test_fast_decode_row_says_how_often_its_labels_agree(tmp_path: Path):
    """On JPEGs at least twice the model's input size, the bench adds the --fast-decode row and
    compares its top-1 labels with the default row's full-size decode."""
    from batchlens.core.run.bench import BenchConfig, run_bench

    folder = make_synthetic_folder(tmp_path / "in", 4, (256, 192))  # demo-shapes takes 64x64
    result = run_bench(BenchConfig("demo-shapes", input_dir=folder, device="cpu", batch_size=2))
    rows = {row["name"]: row for row in result["rows"]}
    fast = rows["fast"]
    assert fast["images"] == 4 and fast["settings"]["fast_decode"] is True
    same, total = fast["settings"]["top1_agreement"]
    assert total == 4 and 0 <= same <= 4
    assert f"top-1 as with full decode on {same} of 4 images" in fast["note"]
    # demo-shapes' inputs are normalised with std 0.25: a reduced decode moves them, but not far
    assert 0 < fast["settings"]["input_mean_abs_diff"] < 0.1
    assert f"mean |diff| {fast['settings']['input_mean_abs_diff']:.4f}" in fast["note"]
    assert rows["tuned"]["settings"]["fast_decode"] is False


def test_loops_say_they_write_no_files_when_the_engine_writes_them(tmp_path: Path):
    """demo-denoise's results are PNGs the engine writes and the loops do not: their rows say so;
    a classification bench (no output files) has no such note."""
    from batchlens.core.run.bench import BenchConfig, run_bench

    folder = make_synthetic_folder(tmp_path / "in", 3, (48, 48))
    rows = {
        row["name"]: row
        for row in run_bench(BenchConfig("demo-denoise", input_dir=folder, device="cpu"))["rows"]
    }
    for name in ("plain", "expert", "naive"):
        assert "writes no output files (the engine rows write 3 PNGs, atomically)" in rows[name]["note"]
    assert "writes no output files" not in rows["engine"]["note"]
    shapes = run_bench(BenchConfig("demo-shapes", input_dir=folder, device="cpu"))["rows"]
    assert not any("writes no output files" in row["note"] for row in shapes)
