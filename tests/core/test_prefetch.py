"""The speed options: prefetching, batching with --batch-size auto, mixed precision, channels_last.
Each must give the same answers as the plain engine, stay bounded, and stop cleanly."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch

from batchlens.cli import main
from batchlens.core.errors import BatchLensError
from batchlens.core.inputs.images import scan_images
from batchlens.core.inputs.prefetch import Prefetcher
from batchlens.core.machine.memory import CpuProbe
from batchlens.core.models import load_model
from batchlens.core.run import pipeline as pipeline_module
from batchlens.core.run.autobatch import BatchChoice, find_batch_size
from batchlens.core.run.config import RunConfig
from batchlens.core.run.events import ImageResult, RunNote
from batchlens.core.run.inference import infer, use_channels_last
from batchlens.core.run.pipeline import BatchPipeline
from batchlens.core.run.runner import Runner
from batchlens.core.run.threads import decode_thread_setup

CPU = torch.device("cpu")


def _predictions(out: Path) -> list[dict]:
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    for line in lines:  # the answers, without the measurements (time, and the batch's memory peak)
        line.pop("seconds")
        line.pop("peak_memory_bytes")
    return lines


def _prefetch_threads() -> list[threading.Thread]:
    """The prefetcher's threads still alive: one per batch in flight, and the shared decoding pool."""
    return [t for t in threading.enumerate() if t.name.startswith(("batchlens-prefetch", "batchlens-decode"))]


def test_prefetcher_keeps_order_stays_bounded_and_passes_errors_on():
    in_flight, most = 0, 0
    lock = threading.Lock()

    def prepare(x: int, _each) -> int:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.01 * (x % 3))  # finish out of order
        return x * 10

    def consume(depth: int) -> list[int]:
        nonlocal in_flight
        got = []
        with Prefetcher(prepare, list(range(12)), depth) as ahead:
            for value in ahead:
                with lock:
                    in_flight -= 1
                got.append(value)
        return got

    assert consume(0) == [x * 10 for x in range(12)] and most == 1
    most = 0
    assert consume(3) == [x * 10 for x in range(12)]
    assert most <= 4  # `depth` prepared ahead plus the one the consumer holds

    def broken(x: int, _each) -> int:
        if x == 2:
            raise RuntimeError("decoder exploded")
        return x

    with Prefetcher(broken, [0, 1, 2, 3], 2) as ahead:
        assert next(ahead) == 0 and next(ahead) == 1
        with pytest.raises(RuntimeError, match="decoder exploded"):
            next(ahead)
    assert not _prefetch_threads()
    with pytest.raises(ValueError):
        Prefetcher(broken, [], -1)


def test_batching_and_prefetch_give_the_same_answers(shapes_folder: Path, tmp_path: Path):
    list(Runner(RunConfig("demo-shapes", shapes_folder, tmp_path / "a", device="cpu")).events())
    events = list(
        Runner(
            RunConfig("demo-shapes", shapes_folder, tmp_path / "b", device="cpu", batch_size=5, prefetch=2)
        ).events()
    )
    assert _predictions(tmp_path / "a") == _predictions(tmp_path / "b")
    assert [e.index for e in events if isinstance(e, ImageResult)] == list(range(1, 13))
    summary = events[-1].summary
    assert summary["batch_size"] == 5 and summary["prefetch"] == 2
    assert summary["channels_last"] is True  # a conv net batching on the CPU runs NHWC (measured faster)
    assert not _prefetch_threads()


def test_cancel_with_prefetch_stops_the_background_threads(shapes_folder: Path, tmp_path: Path):
    config = RunConfig("demo-shapes", shapes_folder, tmp_path / "out", device="cpu", batch_size=1, prefetch=3)
    runner = Runner(config)  # (cancel is checked between batches: one image each here)
    seen = 0
    for event in runner.events():
        if isinstance(event, ImageResult):
            seen += 1
            if seen == 2:
                runner.cancel()
    assert seen == 2
    assert events_written(tmp_path / "out") == 2
    assert not _prefetch_threads()


def events_written(out: Path) -> int:
    return len((out / "predictions.jsonl").read_text().splitlines())


def test_batch_size_auto_reports_its_choice(shapes_folder: Path, tmp_path: Path):
    out = tmp_path / "out"
    config = RunConfig("demo-shapes", shapes_folder, out, device="cpu", batch_size="auto")
    events = list(Runner(config).events())
    notes = [e for e in events if isinstance(e, RunNote) and e.message.startswith("Batch size auto:")]
    assert len(notes) <= 2  # when it settles, and when it changes later (12 images: rarely)
    summary = json.loads((out / "summary.json").read_text())
    auto = summary["batch_size_auto"]
    assert summary["batch_size"] == auto["chosen"] and summary["counts"]["ok"] == 12
    sizes = [s["batch_size"] for s in auto["sizes"]]
    assert sizes[0] == 1 and sizes == [2**i for i in range(len(sizes))] and max(sizes) <= 12
    assert auto["chosen"] in sizes and auto["reason"]
    assert all(s["images_per_second"] > 0 and s["cpu_ms_per_image"] > 0 for s in auto["sizes"])


def test_find_batch_size_stops_at_out_of_memory():
    """A model that 'runs out of memory' above 4 images: the search stops there and keeps a size that
    worked (the OOM path, without needing a GPU to exhaust)."""

    class Limited(torch.nn.Module):
        def forward(self, x):
            if x.shape[0] > 4:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            time.sleep(0.02)  # a fixed cost per batch: bigger batches are faster per image
            return x.flatten(1)[:, :3]

    model = load_model("demo-shapes", CPU)
    model.module = Limited()
    choice = find_batch_size(model, torch.rand(3, 8, 8), CpuProbe(), max_batch=64)
    assert isinstance(choice, BatchChoice)
    assert [t.batch_size for t in choice.trials][-1] == 8 and choice.trials[-1].error == "out of memory"
    assert choice.batch_size in (1, 2, 4) and "ran out of memory" in choice.reason
    assert "chose" in choice.message()


def test_mixed_precision_runs_and_hands_adapters_float32(shapes_folder: Path, tmp_path: Path):
    model = load_model("demo-shapes", CPU)
    outputs = infer(model.module, torch.rand(2, 3, 64, 64), CPU, "bf16")
    assert [o.dtype for o in outputs] == [torch.float32, torch.float32]
    out = tmp_path / "out"
    list(Runner(RunConfig("demo-shapes", shapes_folder, out, device="cpu", precision="bf16")).events())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["precision"] == "bf16" and summary["counts"]["ok"] == 12
    with pytest.raises(BatchLensError, match="Unknown precision"):
        wrong = RunConfig("demo-shapes", shapes_folder, tmp_path / "o2", device="cpu", precision="fp8")
        list(Runner(wrong).events())


def test_channels_last_gives_the_same_answers():
    model = load_model("demo-shapes", CPU)
    x = torch.rand(3, 3, 64, 64)
    plain = infer(model.module, x, CPU)
    assert use_channels_last(model.module, CPU, None) is False  # auto on the CPU: only when batching
    assert use_channels_last(model.module, CPU, True) is True
    assert model.module.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    nhwc = infer(model.module, x, CPU, channels_last=True)
    for a, b in zip(plain, nhwc):
        assert torch.allclose(a, b, atol=1e-4) and a.is_contiguous()


def test_cli_run_takes_the_speed_options(shapes_folder: Path, tmp_path: Path, capsys):
    out = tmp_path / "out"
    argv = ["run", "--model", "demo-shapes", "--input", str(shapes_folder), "--output", str(out)]
    code = main([*argv, "--device", "cpu", "--batch-size", "4", "--prefetch", "2", "--precision", "bf16"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["batch_size"], summary["prefetch"], summary["precision"]) == (4, 2, "bf16")
    with pytest.raises(SystemExit):
        main([*argv, "--batch-size", "many"])
    assert "'many' is not a batch size from 1 to 4096 or auto" in capsys.readouterr().err


def test_nothing_is_prepared_ahead_while_the_first_batch_runs():
    """The first batch's forward has the cores to itself, so the first result comes as soon as a
    plain loop's; from the second batch on, `depth` batches are prepared ahead."""
    started: list[int] = []

    def prepare(x: int, _each) -> int:
        started.append(x)
        return x

    with Prefetcher(prepare, range(6), 2) as ahead:
        assert next(ahead) == 0
        assert started == [0] and not ahead._pending  # batch 1 not even handed to the worker
        assert next(ahead) == 1
        for prepared in list(ahead._pending):  # batches 2 and 3, handed over while 1 is worked on
            prepared.result(timeout=30)
        assert started == [0, 1, 2, 3]
        assert list(ahead) == [2, 3, 4, 5]


def test_the_images_of_a_batch_decode_at_once_in_order_each_with_its_own_error(
    shapes_folder: Path, tmp_path: Path, monkeypatch
):
    """Every image of a batch is decoded on its own decoding thread at the same time (a barrier that
    only opens once all of them are inside the decode), and the prepared batch keeps the scan order
    and each image's own error."""
    (shapes_folder / "shape_0002.png").write_bytes(b"not a png at all")  # the third image is broken
    candidates = list(scan_images(shapes_folder))[:6]
    together = threading.Barrier(len(candidates), timeout=30)
    decoded_on: dict[str, str] = {}
    real_load = pipeline_module.load_image

    def load_image(path, *args):
        decoded_on[path.name] = threading.current_thread().name
        together.wait()  # raises BrokenBarrierError unless all six are decoding at once
        return real_load(path, *args)

    monkeypatch.setattr(pipeline_module, "load_image", load_image)
    pipeline = BatchPipeline(load_model("demo-shapes", CPU), tmp_path / "out", None)
    with Prefetcher(pipeline.prepare, [candidates], 1, len(candidates), decode_thread_setup) as ahead:
        (prepared,) = list(ahead)
    assert [item.candidate.rel for item in prepared.items] == [c.rel for c in candidates]
    assert len(set(decoded_on.values())) == len(candidates)
    assert all(name.startswith("batchlens-decode") for name in decoded_on.values())
    broken = prepared.items[2]
    assert broken.tensor is None and broken.error
    others = [item for i, item in enumerate(prepared.items) if i != 2]
    assert all(item.tensor is not None and item.error is None for item in others)
    (group, batch) = prepared.groups[0]
    assert len(prepared.groups) == 1 and group == others
    assert batch.shape[0] == 5
    assert not _prefetch_threads()

    # The same batch decoded in the loop (the exact mode): the same inputs, in the same order.
    monkeypatch.setattr(pipeline_module, "load_image", real_load)
    with Prefetcher(pipeline.prepare, [candidates], 0) as here:
        (serial,) = list(here)
    assert [item.error for item in serial.items] == [item.error for item in prepared.items]
    assert torch.equal(serial.groups[0][1], batch)


def test_in_step_a_batch_decodes_on_the_pool_only_when_asked_for(shapes_folder: Path, tmp_path: Path):
    """Depth 0 with workers (a CPU run on a quiet machine): nothing is prepared ahead, so the forward
    has the cores to itself, and each batch asked for decodes its images at once on the pool."""
    candidates = list(scan_images(shapes_folder))[:8]
    batches = [candidates[:4], candidates[4:]]
    together = threading.Barrier(4, timeout=30)
    decoded_on: list[str] = []
    pipeline = BatchPipeline(load_model("demo-shapes", CPU), tmp_path / "out", None)

    def prepare(batch, each):
        def decode(item):
            decoded_on.append(threading.current_thread().name)
            together.wait()  # all four images of the batch decode at the same time
            return item

        each(decode, list(range(len(batch))))
        return pipeline.prepare(batch, each)

    with Prefetcher(prepare, batches, 0, 4, decode_thread_setup) as ahead:
        first = next(ahead)
        assert len(decoded_on) == 4 and not ahead._pending  # the second batch waits until it is asked for
        second = next(ahead)
        assert next(ahead, None) is None
    assert all(name.startswith("batchlens-decode") for name in decoded_on)
    assert [i.candidate.rel for i in first.items + second.items] == [c.rel for c in candidates]
    with Prefetcher(pipeline.prepare, batches, 0) as here:  # the same inputs as decoded in the loop
        serial = list(here)
    assert all(torch.equal(a.groups[0][1], b.groups[0][1]) for a, b in zip([first, second], serial))
    assert not _prefetch_threads()

    # A batch of one image (a run's first) decodes in the calling thread: a fresh decoding thread's
    # first image costs more than the handover saves.
    decoded_on.clear()
    with Prefetcher(
        lambda batch, each: each(lambda c: decoded_on.append(threading.current_thread().name), batch),
        [candidates[:1], candidates[1:5]],
        0,
        4,
    ) as ahead:
        assert next(ahead) is not None and decoded_on == [threading.current_thread().name]
        next(ahead)  # four images: on the decoding threads
        assert len(decoded_on) == 5 and all(name.startswith("batchlens-decode") for name in decoded_on[1:])


def test_closing_drops_the_images_not_started_and_leaves_no_thread():
    """A cancel while a long batch decodes: the images not started are dropped, every thread ends."""
    decoded: list[int] = []
    first_image = threading.Event()

    def slow(x: int) -> int:
        first_image.set()
        time.sleep(0.02)
        decoded.append(x)
        return x

    ahead = Prefetcher(lambda batch, each: each(slow, batch), [list(range(200))], 1, 2)
    pending = ahead._pending  # (filled by the first next(); here the batch is only started)
    ahead._fill(1)
    assert first_image.wait(10) and len(pending) == 1
    ahead.close()
    assert len(decoded) < 200 and not _prefetch_threads()
    assert next(ahead, None) is None  # closed: nothing more comes
