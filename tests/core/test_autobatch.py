"""The default speed: a batch size measured on the run's own batches (core/run/autobatch.py), remembered
for the next run (core/run/tuning_cache.py), and threads sized from the cores and the load
(core/run/threads.py). The sizer's decisions are checked with timings fed to it; the runs are real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from batchlens.core.run.autobatch import BatchSizer
from batchlens.core.run.config import EXACT_SETTINGS, RunConfig
from batchlens.core.run.events import ImageResult, RunNote
from batchlens.core.run.runner import Runner
from batchlens.core.run.threads import UseThreads, plan_threads
from batchlens.core.run.tuning_cache import FILE_NAME, cache_dir, remembered_batch_size
from tests.helpers import pin_machine_load

CPU = torch.device("cpu")


def feed(sizer: BatchSizer, per_image: dict, batches: int, cpu: dict | None = None) -> list[int]:
    """Run `batches` batches through the sizer, each taking `per_image[size]` seconds per image."""
    sizes = []
    for _ in range(batches):
        size = sizer.next_size()
        sizes.append(size)
        cpu_per_image = (cpu or per_image)[size]
        sizer.record(size, per_image[size] * size, cpu_per_image * size, input_shape=(3, 8, 8))
    return sizes


def test_starts_at_one_image_and_grows_while_a_larger_batch_is_faster():
    sizer = BatchSizer("auto", max_batch=1000)
    speeds = {1: 0.10, 2: 0.06, 4: 0.04, 8: 0.035, 16: 0.0349}  # 16 is no longer 5 % faster than 8
    sizes = feed(sizer, speeds, 12)
    assert sizes[:5] == [1, 2, 4, 8, 16]  # one image first: the first result comes at once
    assert sizes[5] == 16  # a size that looks no better gets a second batch before it is turned down
    assert set(sizes[6:]) == {8} and sizer.size == 8
    assert "batch 16 was not 5% faster" in sizer.reason
    notes = sizer.take_notes()
    assert len(notes) == 1 and notes[0].startswith("Batch size auto: 8")


def test_one_noisy_figure_cannot_pin_the_run_to_a_small_size():
    sizer = BatchSizer("auto", max_batch=1000)
    sizer.record(1, 0.10, 0.10, input_shape=(3, 8, 8))
    assert sizer.next_size() == 2
    sizer.record(2, 2 * 0.5, 2 * 0.05)  # a busy spell: batch 2 looks five times slower than batch 1
    assert sizer.next_size() == 2  # measured again, not turned down
    sizer.record(2, 2 * 0.06, 2 * 0.05)  # the steady figure: faster per image
    assert sizer.size == 2 and sizer.next_size() == 4


def test_as_fast_with_less_cpu_time_wins_and_a_rejected_size_is_tried_again_later():
    sizer = BatchSizer("auto", max_batch=1000)
    wall = {1: 0.10, 2: 0.099, 4: 0.099}
    cpu = {1: 0.20, 2: 0.12, 4: 0.119}  # on a busy machine wall time hides what CPU time shows
    feed(sizer, wall, 2, cpu)
    assert sizer.size == 2 and "batch 2 was as fast with less CPU time" in sizer.reason
    feed(sizer, wall, 4, cpu)
    assert sizer.size == 2 and sizer.trying is None  # batch 4 was not clearly better: settled at 2
    # Later in the run batch 4 proves faster (the machine's load changed): the run grows to it.
    wall[4], wall[8], cpu[8] = 0.05, 0.05, 0.119
    sizes = feed(sizer, wall, 40, cpu)
    assert 4 in sizes and sizer.size == 4
    assert any("now 4" in note for note in sizer.take_notes())


def test_out_of_memory_and_one_image_models_cap_the_size():
    sizer = BatchSizer("auto", max_batch=1000)
    feed(sizer, {1: 0.1, 2: 0.05, 4: 0.03}, 3)
    sizer.record(4, 0.1, 0.1, out_of_memory=True)
    assert sizer.size == 2 and sizer.ceiling == 2 and "ran out of memory" in sizer.reason
    fixed = BatchSizer(4)
    assert fixed.next_size() == 4
    fixed.record(4, 0.1, 0.1, one_at_a_time="a batch of 4 failed (ValueError: one image only)")
    assert fixed.next_size() == 1 and fixed.one_at_a_time
    assert [n for n in fixed.take_notes() if "one image at a time" in n]


def test_memory_near_the_limit_stops_the_growth():
    sizer = BatchSizer("auto", max_batch=1000, memory_limit=1000)
    for size, peak in ((1, 500), (2, 600), (4, 800)):  # 100 a image: batch 8 would pass 85 %
        assert sizer.next_size() == size
        sizer.record(size, 0.1 * size / size**0.5, 0.1, peak, input_shape=(3, 8, 8))
    assert sizer.ceiling == 4 and sizer.next_size() == 4 and "would pass 85%" in sizer.reason


def test_batches_follow_the_size_as_it_changes():
    sizer = BatchSizer("auto", max_batch=1000)
    batches = sizer.batches(list(range(20)))
    first, second = next(batches), next(batches)  # prefetched before the first one's figures are in
    assert (first, second) == ([0], [1, 2])
    sizer.record(1, 0.1, 0.1, input_shape=(3, 8, 8))
    sizer.record(2, 0.1, 0.1)  # twice as fast per image
    assert next(batches) == [3, 4, 5, 6]


def test_the_chosen_size_is_remembered_for_the_next_run():
    key = "model|cpu"
    first = BatchSizer("auto", max_batch=1000, cache_key=key)
    feed(first, {1: 0.10, 2: 0.06, 4: 0.04, 8: 0.039}, 10)
    first.remember()
    assert first.size == 4 and remembered_batch_size(f"{key}|input=3x8x8") == 4
    assert (cache_dir() / FILE_NAME).is_file()
    second = BatchSizer("auto", max_batch=1000, cache_key=key)
    assert second.next_size() == 1  # the first image alone still: the first result comes at once
    second.record(1, 0.1, 0.1, input_shape=(3, 8, 8))
    assert second.next_size() == 4 and second.remembered == 4
    other = BatchSizer("auto", max_batch=1000, cache_key=key)
    other.record(1, 0.1, 0.1, input_shape=(3, 16, 16))  # another input size: measured afresh
    assert other.next_size() == 2 and other.remembered is None


def test_a_remembered_size_is_not_a_ceiling():
    """An earlier run may have settled on a small size from one noisy figure (a bench round at
    1600x1200 settled at 2 and every later round went on at 2: 0.95x the expert loop against 1.14x at
    8). A run that starts at a remembered size tries the next one up once the size has run twice."""
    key = "model|cpu"
    noisy = BatchSizer("auto", max_batch=1000, cache_key=key)
    feed(noisy, {1: 0.10, 2: 0.06, 4: 0.5}, 4)  # batch 4 looked slow twice: settled at 2
    noisy.remember()
    assert noisy.size == 2 and remembered_batch_size(f"{key}|input=3x8x8") == 2
    later = BatchSizer("auto", max_batch=1000, cache_key=key)
    sizes = feed(later, {1: 0.10, 2: 0.06, 4: 0.04, 8: 0.03, 16: 0.0299}, 9)
    assert sizes[:6] == [1, 2, 2, 4, 8, 16]  # straight to 2, then up while each size wins
    assert later.size == 8 and later.remembered == 2
    later.remember()
    assert remembered_batch_size(f"{key}|input=3x8x8") == 8


def test_a_short_run_whose_every_doubling_won_remembers_where_it_went_on():
    key = "model|cpu"
    short = BatchSizer("auto", max_batch=1000, cache_key=key)
    assert feed(short, {1: 0.10, 2: 0.06, 4: 0.04}, 3) == [1, 2, 4]  # one batch of each size, then the end
    short.remember()
    assert short.size == 4 and remembered_batch_size(f"{key}|input=3x8x8") == 4
    lone = BatchSizer("auto", max_batch=1000, cache_key="other|cpu")
    feed(lone, {1: 0.10}, 1)  # one image: nothing was measured against anything
    lone.remember()
    assert remembered_batch_size("other|cpu|input=3x8x8") is None


def test_a_damaged_cache_file_is_ignored(tmp_path: Path):
    cache_dir().mkdir(parents=True, exist_ok=True)
    (cache_dir() / FILE_NAME).write_text("{not json")
    assert remembered_batch_size("anything") is None


def test_threads_are_sized_from_the_cores_and_the_load():
    before = torch.get_num_threads()
    torch.set_num_threads(16)  # as torch starts on a 16-core machine
    try:
        quiet = plan_threads("auto", None, CPU, cores=2, load=0.0)  # by turns: decoding, then the forward
        assert (quiet.torch_threads, quiet.decode_threads, quiet.in_step) == (2, 2, True)
        assert quiet.prefetch(None) == 0 and quiet.to_json()["decode_in_step"] is True
        asked = plan_threads("auto", 2, CPU, cores=2, load=0.0)  # --prefetch 2: batches ahead, as asked
        assert (asked.torch_threads, asked.decode_threads, asked.in_step) == (2, 1, False)
        assert asked.prefetch(2) == 2
        busy = plan_threads("auto", None, CPU, cores=2, load=0.8)  # the free core, decoding beside it
        assert (busy.torch_threads, busy.decode_threads, busy.in_step) == (1, 1, False)
        assert busy.prefetch(None) == 2 and "1 of 2 cores free" in busy.reason
        one = plan_threads("auto", None, CPU, cores=2, load=0.0, batching=False)  # one image: beside it
        assert (one.torch_threads, one.decode_threads, one.in_step) == (2, 1, False)
        big = plan_threads("auto", None, CPU, cores=16, load=4.0)  # a quarter of the 12 free cores decode
        assert (big.torch_threads, big.decode_threads) == (12, 3)  # (not capped by the prefetch depth)
        big_quiet = plan_threads("auto", None, CPU, cores=16, load=0.2)
        assert (big_quiet.torch_threads, big_quiet.decode_threads, big_quiet.in_step) == (16, 16, True)
        gpu = plan_threads("auto", 2, torch.device("cuda"), cores=16, load=0.0)
        assert gpu.torch_threads == 4 and gpu.decode_threads == 15  # every free core but one decodes
        busy_gpu = plan_threads("auto", 2, torch.device("cuda"), cores=16, load=6.0)
        assert busy_gpu.decode_threads == 9 and "10 of 16 cores free" in busy_gpu.reason
        assert plan_threads(None, 2, torch.device("cuda"), cores=16, load=0.0).decode_threads == 15
        assert plan_threads("auto", 0, CPU, cores=2, load=0.0).decode_threads == 0  # decoding in the loop
        exact = plan_threads(None, 0, CPU, cores=2, load=0.0)
        assert exact.torch_threads == 16 and exact.reason == "torch's own choice"
        torch.set_num_threads(3)  # the window keeps a core for itself this way: auto stays below it
        assert plan_threads("auto", 2, CPU, cores=16, load=4.0).torch_threads == 3
        window = plan_threads("auto", None, CPU, cores=4, load=0.0)  # decoding beside, on the core left
        assert (window.torch_threads, window.decode_threads, window.in_step) == (3, 1, False)
    finally:
        torch.set_num_threads(before)
    with UseThreads(plan_threads(1, 2, CPU)):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def predictions(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def run(folder: Path, out: Path, **settings) -> list:
    return list(Runner(RunConfig("demo-shapes", folder, out, device="cpu", **settings)).events())


def test_defaults_batch_prefetch_and_match_the_exact_mode(shapes_folder: Path, tmp_path: Path, monkeypatch):
    pin_machine_load(monkeypatch, 1.0)  # busy: batches are decoded ahead
    exact = run(shapes_folder, tmp_path / "a", **EXACT_SETTINGS)
    runs = [run(shapes_folder, tmp_path / "b1")]
    stored = json.loads((cache_dir() / FILE_NAME).read_text())
    runs.append(run(shapes_folder, tmp_path / "b2"))
    plain = predictions(tmp_path / "a")
    for i, events in zip((1, 2), runs):
        fast = predictions(tmp_path / f"b{i}")
        assert [line["image"] for line in fast] == [line["image"] for line in plain]
        for a, b in zip(plain, fast):  # batching changes scores by float rounding at most
            assert [t["index"] for t in a["top"]] == [t["index"] for t in b["top"]]
            assert max(abs(x["score"] - y["score"]) for x, y in zip(a["top"], b["top"])) < 1e-5
        assert [e.index for e in events if isinstance(e, ImageResult)] == list(range(1, 13))
    summary = runs[0][-1].summary
    auto = summary["batch_size_auto"]
    assert summary["prefetch"] == 2 and summary["threads"]["decode_in_step"] is False
    assert auto["sizes"][0]["batch_size"] == 1
    assert summary["threads"]["torch"] >= 1 and summary["threads"]["decode"] >= 1
    assert summary["peak_memory_bytes"] > 0 and summary["peak_memory_source"].startswith("process RSS")
    assert exact[-1].summary["batch_size"] == 1 and exact[-1].summary["batch_size_auto"] is None
    assert exact[-1].summary["threads"]["reason"] == "torch's own choice"
    # The first run remembered the size it measured; the second started there after its first image.
    [remembered] = [entry["batch_size"] for entry in stored.values()]
    twice = [s["batch_size"] for s in auto["sizes"] if s["batches"] >= 2]
    assert remembered in twice or (not twice and remembered == auto["chosen"])
    assert runs[1][-1].summary["batch_size_auto"]["remembered"] == remembered
    assert sum(isinstance(e, RunNote) and "Batch size auto" in e.message for e in runs[0]) <= 2


@pytest.mark.parametrize("flag", [["--exact"], []])
def test_cli_exact_and_defaults(shapes_folder: Path, tmp_path: Path, flag, capsys, monkeypatch):
    from batchlens.cli import main

    pin_machine_load(monkeypatch, 0.0)  # quiet: the defaults decode each batch in step
    out = tmp_path / "out"
    argv = ["run", "--model", "demo-shapes", "--input", str(shapes_folder), "--output", str(out)]
    assert main([*argv, "--device", "cpu", "--no-progress", *flag]) == 0
    summary = json.loads((out / "summary.json").read_text())
    if flag:
        assert (summary["batch_size"], summary["prefetch"]) == (1, 0)
    else:
        assert summary["prefetch"] == 0 and summary["threads"]["decode_in_step"] is True
        assert summary["batch_size_auto"] is not None
    assert main([*argv, "--exact", "--batch-size", "4", "--overwrite"]) == 2
    assert "--exact fixes batch_size" in capsys.readouterr().err


def test_other_work_is_the_machines_busy_time_less_this_process(monkeypatch):
    """The load average would count this process's own previous run as someone else's work."""
    from collections import namedtuple

    from batchlens.core.machine import machine_load as threads

    Cpu = namedtuple("Cpu", "user system idle iowait")
    Own = namedtuple("Own", "user system")
    clock = {"t": 100.0, "busy": 0.0, "own": 0.0}
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(
        threads.psutil, "cpu_times", lambda percpu: [Cpu(clock["busy"] / 2, 0.0, 50.0, 0.0)] * 2
    )
    meter = threads._OthersMeter()
    monkeypatch.setattr(meter._process, "cpu_times", lambda: Own(clock["own"], 0.0))
    meter._last = meter._read()
    clock.update(t=100.5, busy=1.0, own=0.5)
    assert meter.others() is None  # half a second says little
    clock.update(t=102.5, busy=5.0, own=3.5)  # 2.5 s: 5 core-seconds busy, 3.5 of them this process's
    assert meter.others() == pytest.approx(0.6)
    clock.update(t=102.9, busy=5.8, own=3.5)  # a run right after the last: its figure stands
    assert meter.others() == pytest.approx(0.6)
    clock.update(t=103.5, busy=7.0, own=3.5)  # the span went on from 102.5: 2 core-seconds in 1 s
    assert meter.others() == pytest.approx(2.0)


def test_a_batch_prepared_before_its_size_was_turned_down_can_still_win():
    """With prefetching, batches of a size being tried keep arriving after the decision: when they
    show the size was faster after all, the run grows to it."""
    sizer = BatchSizer("auto", max_batch=1000)
    for size, wall in ((1, 0.10), (2, 0.05), (2, 0.05), (4, 0.06), (4, 0.06)):
        sizer.record(size, wall * size, wall * size, input_shape=(3, 8, 8))
    assert sizer.size == 2 and sizer.trying is None  # batch 4 turned down after two batches
    sizer.record(4, 0.03 * 4, 0.03 * 4)  # a late batch of 4, prepared before: clearly faster
    assert sizer.size == 4 and sizer.next_size() == 8


def test_decoding_threads_use_one_torch_thread_and_the_forward_keeps_its_own():
    from batchlens.core.inputs.prefetch import Prefetcher
    from batchlens.core.run.threads import decode_thread_setup

    def prepare(_, each):  # the batch's own thread and the decoding threads
        return [torch.get_num_threads(), *each(lambda _: torch.get_num_threads(), [0, 1, 2])]

    before = torch.get_num_threads()
    with UseThreads(plan_threads(2, 2, CPU)):
        with Prefetcher(prepare, [0, 1, 2], 2, 3, decode_thread_setup) as ahead:
            assert list(ahead) == [[1, 1, 1, 1]] * 3
        assert torch.get_num_threads() == 2  # the thread that runs the model keeps the plan's number
    assert torch.get_num_threads() == before
