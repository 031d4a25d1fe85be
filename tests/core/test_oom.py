"""Out-of-memory recovery, on the CPU: a wrapper around a real demo model raises torch.OutOfMemoryError
the way a small GPU would (for inputs above a size, or for the first N calls), after holding on to
memory as a real failed forward does. Every step of the ladder is checked, and that memory goes back
to where it was."""

from __future__ import annotations

import json
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from batchlens.core.errors import BatchLensError
from batchlens.core.machine.memory import CpuProbe, MemoryProbe, MemorySample
from batchlens.core.models import LoadedModel, load_model
from batchlens.core.run.config import EXACT_SETTINGS, RunConfig
from batchlens.core.run.events import ImageResult, RunNote
from batchlens.core.run.recovery import release_memory, tile_sizes, tiled_forward
from batchlens.core.run.runner import Runner
from tests.helpers import make_denoise_folder, make_shapes_folder

ACCELERATOR = torch.device("cpu", 0)  # stands for a GPU: compares unequal to the CPU fallback device
HOLD_MIB = 48


class SmallDevice(nn.Module):
    """Wraps a model like a GPU with little memory. While it is "on the accelerator" (anywhere but
    torch.device("cpu")), a forward raises torch.OutOfMemoryError when the batch has more than
    `max_pixels` pixels in all, or for the first `fail_first` calls; before raising it allocates
    HOLD_MIB MiB, as the failed forward's activations would be, and keeps a weak reference to it."""

    def __init__(self, inner: nn.Module, max_pixels: int | None = None, fail_first: int = 0):
        super().__init__()
        self.inner = inner
        self.max_pixels = max_pixels
        self.fail_first = fail_first
        self.placed_on = ACCELERATOR
        self.calls = 0
        self.failures = 0
        self.held: list[weakref.ref] = []
        self.held_alive_at_call: list[bool] = []  # was any earlier failure's memory still alive?
        self.seen_shapes: list[tuple] = []

    def to(self, *args, **kwargs):
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None:
            self.placed_on = torch.device(device)
        return super().to(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.held_alive_at_call.append(any(ref() is not None for ref in self.held))
        self.seen_shapes.append((tuple(x.shape), str(self.placed_on)))
        pixels = x.shape[0] * x.shape[-1] * x.shape[-2]
        on_accelerator = self.placed_on != torch.device("cpu")
        too_big = self.max_pixels is not None and pixels > self.max_pixels
        if on_accelerator and (self.calls <= self.fail_first or too_big):
            activations = torch.ones(HOLD_MIB * 2**18)  # float32, touched: really resident
            self.held.append(weakref.ref(activations))
            self.failures += 1
            raise torch.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {HOLD_MIB} MiB (simulated by the test)"
            )
        return self.inner(x)


def wrapped(model_id: str, device=ACCELERATOR, **kwargs) -> tuple[LoadedModel, SmallDevice]:
    loaded = load_model(model_id, torch.device("cpu"))
    small = SmallDevice(loaded.module, **kwargs)
    return LoadedModel(loaded.info, small, loaded.adapter, device), small


def run(folder: Path, out: Path, model: LoadedModel | None, model_id: str = "", **config) -> list:
    """A run at the exact settings unless `config` says otherwise: these tests count forward calls
    and follow each image through the out-of-memory ladder."""
    cfg = RunConfig(model_id or model.info.id, folder, out, device="cpu", **{**EXACT_SETTINGS, **config})
    return list(Runner(cfg, model=model).events())


@pytest.fixture
def few_shapes(tmp_path: Path) -> Path:
    folder = tmp_path / "few"
    make_shapes_folder(folder, 3)
    return folder


def lines(out: Path) -> dict[str, dict]:
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    return {row["image"]: row for row in rows}


def test_first_failure_is_retried_after_the_memory_is_released(tmp_path: Path):
    folder = tmp_path / "shapes"
    make_shapes_folder(folder, 4)
    model, small = wrapped("demo-shapes", fail_first=1)
    events = run(folder, tmp_path / "out", model)

    rows = lines(tmp_path / "out")
    first = rows["shape_0000.png"]
    assert first["status"] == "ok" and first["top"]
    assert len(first["recovered"]) == 1 and first["recovered"][0].endswith("and retried: ok")
    assert all("recovered" not in rows[f"shape_{i:04d}.png"] for i in (1, 2, 3))
    # The retry came after the failed forward's memory was gone (the except block was left first).
    assert small.failures == 1 and small.held_alive_at_call == [False, False, False, False, False]
    notes = [e for e in events if isinstance(e, RunNote) and "Out of memory" in e.message]
    assert len(notes) == 1 and notes[0].memory is not None  # timestamped: the plot can mark it


def test_batch_is_split_until_it_fits_with_the_same_answers(tmp_path: Path):
    folder = tmp_path / "shapes"
    make_shapes_folder(folder, 8)
    plain = tmp_path / "plain"
    run(folder, plain, None, model_id="demo-shapes", batch_size=4)
    # Four 64×64 images do not fit; two do.
    model, small = wrapped("demo-shapes", max_pixels=2 * 64 * 64)
    run(folder, tmp_path / "out", model, batch_size=4)

    rows, expected = lines(tmp_path / "out"), lines(plain)
    assert len(rows) == 8
    for name, row in rows.items():
        assert row["status"] == "ok"
        assert row["recovered"] == [
            "freed memory and retried: out of memory",
            "split the batch of 4 into 2: ok",
        ]
        assert [t["label"] for t in row["top"]] == [t["label"] for t in expected[name]["top"]]
        assert row["top"][0]["score"] == pytest.approx(expected[name]["top"][0]["score"], abs=1e-4)
    batch_sizes = [shape[0][0] for shape in small.seen_shapes]
    assert batch_sizes == [4, 4, 2, 2] * 2


def test_image_to_image_falls_back_to_tiles_with_identical_output(tmp_path: Path):
    folder = tmp_path / "noisy"
    make_denoise_folder(folder, 2, size=150)
    Image.open(folder / "noisy_0001.png").crop((0, 0, 72, 60)).save(folder / "noisy_0001.png")
    plain = tmp_path / "plain"
    run(folder, plain, None, model_id="demo-denoise")
    # 150×150 does not fit, nor do 128-pixel tiles; 64-pixel tiles (with overlap) do. 72×60 fits whole.
    model, small = wrapped("demo-denoise", max_pixels=100 * 100)
    events = run(folder, tmp_path / "out", model)

    rows = lines(tmp_path / "out")
    big, small_image = rows["noisy_0000.png"], rows["noisy_0001.png"]
    assert big["status"] == "ok" and "recovered" not in small_image
    assert big["recovered"] == [
        "freed memory and retried: out of memory",
        "tiles of 128 px (overlap 16 px): out of memory",
        "tiles of 64 px (overlap 8 px): ok",
    ]
    tiled = np.asarray(Image.open(tmp_path / "out" / big["output"])).astype(int)
    whole = np.asarray(Image.open(plain / big["output"])).astype(int)
    assert tiled.shape == whole.shape == (150, 150)
    assert np.abs(tiled - whole).max() <= 1  # the seams are invisible: each tile had enough context
    tile_inputs = [shape for shape, _ in small.seen_shapes if shape[-1] <= 64 and shape[-2] <= 64]
    assert len(tile_inputs) == 16  # 150 px in 48-pixel tile centres: 4 × 4 tiles
    assert any("64 px" in e.message for e in events if isinstance(e, RunNote))


def test_tiled_forward_handles_upscaling_models():
    class Upscale2x(nn.Module):
        def forward(self, x):
            return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    def forward(module, batch, device):
        return list(module(batch.to(device)))

    image = torch.rand(3, 150, 97)
    out = tiled_forward(forward, Upscale2x(), image, torch.device("cpu"), 64)
    assert out.shape == (3, 300, 194)
    assert torch.equal(out, Upscale2x()(image.unsqueeze(0))[0])
    assert tile_sizes(150, 97) == [128, 64] and tile_sizes(50, 40) == []


def test_last_resort_runs_the_image_on_the_cpu_when_allowed(tmp_path: Path):
    folder = tmp_path / "noisy"
    make_denoise_folder(folder, 1, size=120)
    plain = tmp_path / "plain"
    run(folder, plain, None, model_id="demo-denoise")
    # Nothing over 50×50 fits "on the accelerator", not even 64-pixel tiles.
    model, small = wrapped("demo-denoise", max_pixels=50 * 50)
    run(folder, tmp_path / "out", model, cpu_fallback=True)

    row = lines(tmp_path / "out")["noisy_0000.png"]
    assert row["status"] == "ok"
    assert row["recovered"][-2:] == ["tiles of 64 px (overlap 8 px): out of memory", "ran on the CPU: ok"]
    assert small.seen_shapes[-1] == ((1, 1, 120, 120), "cpu")
    assert small.placed_on == ACCELERATOR  # the model went back to its device afterwards
    out_image = np.asarray(Image.open(tmp_path / "out" / row["output"])).astype(int)
    assert np.abs(out_image - np.asarray(Image.open(plain / row["output"])).astype(int)).max() <= 1


def test_final_failure_is_an_error_line_and_the_run_goes_on(tmp_path: Path):
    folder = tmp_path / "noisy"
    make_denoise_folder(folder, 2, size=120)
    Image.open(folder / "noisy_0001.png").crop((0, 0, 40, 40)).save(folder / "noisy_0001.png")
    model, small = wrapped("demo-denoise", max_pixels=50 * 50)
    events = run(folder, tmp_path / "out", model)  # no --cpu-fallback

    rows = lines(tmp_path / "out")
    failed = rows["noisy_0000.png"]
    assert failed["status"] == "error" and "output" not in failed
    message = failed["error"]
    assert message.startswith("noisy_0000.png: ran out of memory on cpu:0 with this 120×120 image")
    for step in ("freed memory and retried: out of memory", "tiles of 64 px (overlap 8 px): out of memory"):
        assert step in message
    assert "CPU fallback: off (allow it with --cpu-fallback)" in message
    assert rows["noisy_0001.png"]["status"] == "ok"  # the run went on
    assert events[-1].summary["counts"] == {
        "ok": 1,
        "error": 1,
        "skipped": 0,
        "already_done": 0,
        "not_processed": 0,
    }
    assert not (tmp_path / "out" / "noisy_0000.png").exists()


def test_memory_returns_to_its_level_before_the_failures(few_shapes: Path, tmp_path: Path):
    probe = CpuProbe()
    model, small = wrapped("demo-shapes", fail_first=1)
    run(few_shapes, tmp_path / "warm", model)  # warm up: allocator pools, lazy imports
    release_memory(torch.device("cpu"))
    before = probe.sample().allocated
    # Image 1: out of memory, again after the retry, then it runs on the CPU. Image 2: out of memory,
    # and again; CPU. Image 3: fits.
    model, small = wrapped("demo-shapes", fail_first=5)
    run(few_shapes, tmp_path / "out", model, cpu_fallback=True)
    release_memory(torch.device("cpu"))
    after = probe.sample().allocated

    assert small.failures == 4
    assert not any(small.held_alive_at_call)  # each failure's memory was gone before the next try
    assert all(ref() is None for ref in small.held)
    # 4 × 48 MiB were allocated by failed attempts; what stays is noise, not a leaked failure.
    assert after - before < HOLD_MIB * 2**20 // 2, (before, after)
    rows = lines(tmp_path / "out")
    assert [row["recovered"][-1] for row in list(rows.values())[:2]] == ["ran on the CPU: ok"] * 2
    assert all(row["status"] == "ok" for row in rows.values())


def test_a_model_that_raises_gives_an_error_line_not_a_dead_run(tmp_path: Path):
    class Picky(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            if x.shape[-1] == 40:
                raise ValueError("this model cannot handle a width of 40")
            return self.inner(x)

    folder = tmp_path / "noisy"
    make_denoise_folder(folder, 3, size=60)
    Image.open(folder / "noisy_0001.png").crop((0, 0, 40, 40)).save(folder / "noisy_0001.png")
    loaded = load_model("demo-denoise", torch.device("cpu"))
    model = LoadedModel(loaded.info, Picky(loaded.module), loaded.adapter, loaded.device)
    run(folder, tmp_path / "out", model)
    rows = lines(tmp_path / "out")
    assert rows["noisy_0001.png"]["status"] == "error"
    assert rows["noisy_0001.png"]["error"] == (
        "noisy_0001.png: the model failed on this image (ValueError: this model cannot handle a width of 40)"
    )
    assert rows["noisy_0000.png"]["status"] == rows["noisy_0002.png"]["status"] == "ok"


class LeakyModel(nn.Module):
    """A user model that keeps every output it made (the classic leak)."""

    def __init__(self, inner: nn.Module, mib_per_call: int = 4):
        super().__init__()
        self.inner = inner
        self.kept: list[torch.Tensor] = []
        self.mib = mib_per_call

    def forward(self, x):
        self.kept.append(torch.ones(self.mib * 2**18))
        return self.inner(x)


def test_a_leaking_model_is_reported_once_with_its_rate(tmp_path: Path):
    folder = tmp_path / "shapes"
    make_shapes_folder(folder, 30, size=64)  # the CPU watch looks at batches 9 to 24
    loaded = load_model("demo-shapes", torch.device("cpu"))
    leaky = LeakyModel(loaded.module, mib_per_call=6)
    model = LoadedModel(loaded.info, leaky, loaded.adapter, loaded.device)
    events = run(folder, tmp_path / "out", model)  # it leaks 6 MiB a forward
    warnings = [e.message for e in events if isinstance(e, RunNote) and "keeps climbing" in e.message]
    assert len(warnings) == 1, warnings
    rate = float(warnings[0].split("about ")[1].split(" MiB")[0])
    assert 5.0 <= rate <= 7.5, warnings[0]

    healthy = run(folder, tmp_path / "healthy", None, model_id="demo-shapes")
    assert not [e for e in healthy if isinstance(e, RunNote) and "keeps climbing" in e.message]


class CrowdedGpuProbe(MemoryProbe):
    """A CUDA probe with known numbers: 80 GiB card, 36 GiB used, of which this run reserved 4 GiB."""

    kind = "cuda"

    def sample(self) -> MemorySample:
        gib = 1 << 30
        return MemorySample(0.0, 2 * gib, 4 * gib, 3 * gib, 36 * gib, 80 * gib)

    def clear_cache(self):
        return CpuProbe().clear_cache()


def test_other_processes_on_the_gpu_are_reported(few_shapes: Path, tmp_path: Path):
    cfg = RunConfig("demo-shapes", few_shapes, tmp_path / "out", device="cpu")
    events = list(Runner(cfg, probe=CrowdedGpuProbe()).events())
    notes = [e.message for e in events if isinstance(e, RunNote) and "Other processes" in e.message]
    assert notes == [
        "Other processes hold 32.0 GiB (40%) of cpu's 80.0 GiB (memory in use on the device minus what "
        "PyTorch reserved here, CUDA context included); this run can use only the rest. Close them (see "
        "nvidia-smi) if images run out of memory."
    ]


class NearlyFullRamProbe(MemoryProbe):
    """A CPU probe of a machine with `free` bytes of RAM free (the rest in use by other programs)."""

    kind = "cpu"

    def __init__(self, free: int):
        self.free = free

    def sample(self) -> MemorySample:
        total = 16 << 30
        return MemorySample(0.0, 1 << 28, 1 << 28, 1 << 28, total - self.free, total)

    def clear_cache(self):
        return CpuProbe().clear_cache()


def test_preflight_names_the_outsized_image_only_near_the_memory_limit(few_shapes: Path, tmp_path: Path):
    """Issue 15: a 1.7-megapixel photo was flagged on a machine with 23 GB of RAM. The note now needs
    the largest image to be far bigger than the typical one AND its estimated need (here the decode,
    15 bytes a pixel: demo-shapes resizes to 64×64) to pass half of the memory free."""
    Image.new("RGB", (900, 700), (10, 200, 10)).save(few_shapes / "huge.png")  # needs ~9.0 MiB

    def notes(free: int, out: str) -> tuple[list[str], list]:
        cfg = RunConfig("demo-shapes", few_shapes, tmp_path / out, device="cpu")
        events = list(Runner(cfg, probe=NearlyFullRamProbe(free)).events())
        return [e.message for e in events if isinstance(e, RunNote) and "largest image" in e.message], events

    roomy, _ = notes(4 << 30, "roomy")  # 4 GiB free: nothing to warn about
    assert roomy == []
    tight, events = notes(16 << 20, "tight")  # 16 MiB free: 9 MiB is more than half of it
    assert len(tight) == 1 and "huge.png (900×700, 0.6 megapixels)" in tight[0]
    assert "needs at least 9.0 MiB of the 16.0 MiB free" in tight[0]
    note_at = events.index(next(e for e in events if isinstance(e, RunNote) and e.message == tight[0]))
    assert note_at < len(events) - 1  # before the run's end (the headers are read beside the first batch)
    (few_shapes / "huge.png").unlink()
    again, _ = notes(1 << 20, "again")  # no image far bigger than the others: no note at all
    assert again == []


def test_a_full_resolution_model_counts_its_first_layer():
    from batchlens.core.models import load_model
    from batchlens.core.run.recovery import DECODE_BYTES_PER_PIXEL, image_bytes_per_pixel

    shapes = load_model("demo-shapes", torch.device("cpu"))
    denoise = load_model("demo-denoise", torch.device("cpu"))
    assert image_bytes_per_pixel(shapes) == DECODE_BYTES_PER_PIXEL
    # Measured, not the code's formula: the first layer's input and output bytes per pixel of a real
    # forward (demo-denoise: one grey channel in, 32 out, float32: 4 x 33 = 132 bytes).
    first = next(m for m in denoise.module.modules() if isinstance(m, torch.nn.Conv2d))
    image = torch.zeros(1, first.in_channels, 64, 64)
    with torch.inference_mode():
        measured = (image.nbytes + first(image).nbytes) / (64 * 64)
    assert measured == 132
    assert image_bytes_per_pixel(denoise) == DECODE_BYTES_PER_PIXEL + measured


def test_memory_snapshot_on_cpu_says_it_needs_cuda(few_shapes: Path, tmp_path: Path):
    events = run(few_shapes, tmp_path / "out", None, model_id="demo-shapes", memory_snapshot=True)
    notes = [e.message for e in events if isinstance(e, RunNote)]
    assert (
        "--memory-snapshot needs a CUDA GPU (PyTorch records allocator history only there); "
        "no snapshot is taken on cpu." in notes
    )
    assert not (tmp_path / "out" / "memory-snapshot.pickle").exists()


def test_max_failures_stops_a_misconfigured_run(tmp_path: Path):
    folder = tmp_path / "texts"
    folder.mkdir()
    for i in range(6):
        (folder / f"photo_{i:02d}.jpg").write_text("not a photo at all\n")
    with pytest.raises(BatchLensError) as info:
        run(folder, tmp_path / "out", None, model_id="demo-shapes", max_failures=3)
    message = str(info.value)
    assert message.startswith("Stopped after 3 failed image(s) (every image so far), the limit set by ")
    assert "--max-failures 3" in message and "photo_02.jpg: is a text file, not an image" in message
    rows = lines(tmp_path / "out")
    assert sorted(rows) == ["photo_00.jpg", "photo_01.jpg", "photo_02.jpg"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["stopped"] == message and summary["counts"]["not_processed"] == 3


class ListDetector(nn.Module):
    """A detection-style model (takes a list of any-size images) that, like a small GPU, runs out of
    memory whenever it is given more than one image at once. Each image gets one box: its full frame."""

    def __init__(self):
        super().__init__()
        self.calls: list[int] = []

    def forward(self, images: list[torch.Tensor]) -> list[dict]:
        self.calls.append(len(images))
        if len(images) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated by the test)")
        h, w = images[0].shape[-2:]
        box = torch.tensor([[0.0, 0.0, float(w), float(h)]])
        return [{"boxes": box, "labels": torch.tensor([1]), "scores": torch.tensor([0.9])}]


def test_a_detection_batch_of_mixed_sizes_is_split_after_out_of_memory(tmp_path: Path):
    from torchvision.transforms import v2

    from batchlens.core.models import ModelInfo
    from batchlens.core.tasks import make_adapter

    folder = tmp_path / "photos"
    folder.mkdir()
    sizes = [(40, 30), (64, 48), (50, 50), (33, 70)]
    for i, size in enumerate(sizes):
        Image.new("RGB", size, (i * 40, 90, 200)).save(folder / f"p{i}.png")
    adapter = make_adapter(
        "detection",
        transform=v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]),
        labels=["background", "thing"],
    )
    detector = ListDetector()
    model = LoadedModel(ModelInfo("list-detector", "detection", "file"), detector, adapter, ACCELERATOR, True)
    events = run(folder, tmp_path / "out", model, batch_size=4)
    results = [e for e in events if isinstance(e, ImageResult)]
    assert [e.status for e in results] == ["ok"] * 4, [e.error for e in results]
    # the batch of 4, its retry after freeing, then halves of 2 (each failing) and each image alone
    assert detector.calls == [4, 4, 2, 1, 1, 2, 1, 1]
    for event, (w, h) in zip(results, sizes):
        assert event.fields["detections"][0]["box"] == [0.0, 0.0, float(w), float(h)]
        assert event.fields["recovered"][-1].endswith(": ok")
