"""Out-of-memory recovery, and the memory warnings that go with it.

When the model runs out of memory on a batch, `OomRecovery.recover` climbs a ladder, one step at a
time, until the images get a result:

1. free (garbage collector + the backend's `empty_cache()`) and retry the same batch;
2. split the batch in halves (and halves again) down to single images;
3. image-to-image models only: run the image in overlapping tiles, halving the tile size each time
   (the way chaiNNer and ComfyUI do), stitching the tiles' centres back together;
4. run that one image on the CPU, if the user allowed it (`--cpu-fallback`).

Every attempt happens *outside* the `except` block that caught the error: a live traceback keeps the
failed forward's frames, and their tensors, alive, so freeing inside it would free nothing.
Each step is recorded (the image's `recovered` field in predictions.jsonl, and a note for the plot);
an image that fails every step gets an error naming the size and what was tried.
"""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from batchlens.core.errors import BatchLensError
from batchlens.core.machine.gpu_processes import GpuReport
from batchlens.core.machine.memory import MemorySample, _malloc_trim, format_bytes

log = logging.getLogger(__name__)

#: forward(module, batch, device) -> one CPU output per image in the batch (core.inference.infer)
Forward = Callable[[nn.Module, torch.Tensor, torch.device], list]

MIN_TILE = 64  # pixels; smaller tiles cost more in overlap than they save in memory
MAX_TILE = 1024
CPU = torch.device("cpu")


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.OutOfMemoryError (CUDA, XPU), and the RuntimeError MPS raises when it runs out."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def release_memory(device: torch.device) -> None:
    """Collect garbage and hand the allocator's cached blocks back to the device.

    Only the young generations are collected: a failed attempt's reference cycles are new objects, and
    a full collection in a process that has imported torch can take a second."""
    gc.collect(1)
    backend = {"cuda": torch.cuda, "mps": getattr(torch, "mps", None), "xpu": getattr(torch, "xpu", None)}
    module = backend.get(device.type)
    if module is not None:
        module.empty_cache()
    elif device.type == "cpu":
        _malloc_trim()  # glibc keeps freed heap pages otherwise; RSS would not come down


@dataclass
class Outcome:
    """What recovery got for one image: an output (CPU) or an error, and the steps it took."""

    output: object | None = None
    steps: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class RecoveryNote:
    """A recovery step the run should report (the runner turns these into RunNote events)."""

    level: str
    message: str
    kind: str = "out_of_memory"  # RunNote.kind


def _short(message: str) -> str:
    """The first line of an error message, trimmed (CUDA's OOM text is a paragraph)."""
    first = message.strip().splitlines()[0] if message.strip() else "out of memory"
    return first if len(first) <= 160 else first[:157] + "..."


class _Failed(Exception):
    """A non-memory error during tiling (for example a model that needs a fixed input size)."""


def tile_sizes(height: int, width: int) -> list[int]:
    """Tile edges to try, largest first, halving: the largest power of two below the long side."""
    longest = max(height, width)
    if longest <= MIN_TILE:
        return []
    tile = min(MAX_TILE, 2 ** int(math.log2(longest - 1)))
    sizes = []
    while tile >= MIN_TILE:
        sizes.append(tile)
        tile //= 2
    return sizes


def tile_overlap(tile: int) -> int:
    """Context each tile gets on every side (its border is cut off, so the seams match)."""
    return max(8, min(64, tile // 8))


def tiled_forward(
    forward: Forward, module: nn.Module, image: torch.Tensor, device: torch.device, tile: int
) -> torch.Tensor:
    """Run one CHW image through `module` in tiles of at most tile×tile pixels with overlap.

    Each tile carries `tile_overlap(tile)` pixels of context on every inner side; only its centre is
    kept, so for a model whose receptive field fits in the overlap the result equals the whole-image
    result. Works for any integer or fractional scale (super-resolution), judged from each tile."""
    if image.dim() != 3:
        raise _Failed("tiling needs a single C×H×W image")
    _, height, width = image.shape
    overlap = tile_overlap(tile)
    core = tile - 2 * overlap
    out: torch.Tensor | None = None
    scale = 1.0
    for y in range(0, height, core):
        for x in range(0, width, core):
            y0, x0 = max(0, y - overlap), max(0, x - overlap)
            y1, x1 = min(height, y + core + overlap), min(width, x + core + overlap)
            piece = image[:, y0:y1, x0:x1].unsqueeze(0).contiguous()
            (result,) = forward(module, piece, device)
            del piece
            if not isinstance(result, torch.Tensor) or result.dim() != 3:
                raise _Failed("the model's output is not an image, so it cannot be tiled")
            if out is None:
                scale = result.shape[-1] / (x1 - x0)
                out = torch.empty(
                    (result.shape[0], round(height * scale), round(width * scale)), dtype=result.dtype
                )
            if result.shape[-2:] != (round((y1 - y0) * scale), round((x1 - x0) * scale)):
                raise _Failed("the model's output size does not follow its input size, so it cannot be tiled")
            ye, xe = min(height, y + core), min(width, x + core)
            # The tile's centre, in output pixels, and where it goes in the whole output.
            src_y, src_x = round((y - y0) * scale), round((x - x0) * scale)
            dst = (round(y * scale), round(ye * scale), round(x * scale), round(xe * scale))
            h, w = dst[1] - dst[0], dst[3] - dst[2]
            out[:, dst[0] : dst[1], dst[2] : dst[3]] = result[:, src_y : src_y + h, src_x : src_x + w]
            del result
    return out


class OomRecovery:
    """The out-of-memory ladder for one run (see the module docstring)."""

    def __init__(
        self,
        device: torch.device,
        *,
        tiles: bool = False,
        takes_list: bool = False,
        cpu_fallback: bool = False,
        on_first_oom: Callable[[], str | None] | None = None,
    ):
        self.device = device
        self.takes_list = takes_list  # detection models take a list of any-size images, not a stack
        self.tiles = tiles  # image-to-image models: the output is an image the same shape as the input
        self.cpu_fallback = cpu_fallback
        #: where the last step runs; the step is skipped when the model is already there
        self.fallback_device = CPU
        self.on_first_oom = on_first_oom
        self.oom_count = 0
        self.notes: list[RecoveryNote] = []  # drained by the runner after each batch

    # -- public --------------------------------------------------------------------------------
    def recover(
        self,
        module: nn.Module,
        images: list[torch.Tensor],
        forward: Forward,
        sizes: list[tuple[int, int]],
        first_error: str,
    ) -> list[Outcome]:
        """Called, outside any `except` block, after `images` (CPU, one per image, same shape) ran out
        of memory together. Returns one Outcome per image."""
        self._first_oom()
        outcomes = [Outcome() for _ in images]
        self._free()
        step = "freed memory and retried"
        if self._attempt(module, forward, images, list(range(len(images))), outcomes, [], step):
            self._note("info", f"Out of memory ({_short(first_error)}); {step}: that was enough.")
            return outcomes
        if len(images) > 1:
            self._split(module, forward, images, list(range(len(images))), outcomes, sizes)
        else:
            self._single(module, forward, images, 0, outcomes, sizes)
        return outcomes

    # -- the ladder ----------------------------------------------------------------------------
    def _attempt(self, module, forward, images, indices, outcomes, before: list[str], step: str) -> bool:
        """Try `indices` as one batch; on success give each its output and the steps so far."""
        batch = [images[i] for i in indices] if self.takes_list else torch.stack([images[i] for i in indices])
        outputs, error = self._call(forward, module, batch, self.device)
        del batch
        if error is None:
            for i, output in zip(indices, outputs):
                outcomes[i].output = output
                outcomes[i].steps = [*before, f"{step}: ok"]
            return True
        for i in indices:
            outcomes[i].steps = [*before, f"{step}: {error}"]
        return False

    def _split(self, module, forward, images, indices, outcomes, sizes) -> None:
        half = (len(indices) + 1) // 2
        for part in (indices[:half], indices[half:]):
            before = list(outcomes[part[0]].steps)
            self._free()
            if len(part) == 1:
                self._single(module, forward, images, part[0], outcomes, sizes)
                continue
            step = f"split the batch of {len(indices)} into {len(part)}"
            if self._attempt(module, forward, images, part, outcomes, before, step):
                self._note(
                    "info", f"Out of memory with a batch of {len(indices)}; batches of {len(part)} fit."
                )
            else:
                self._split(module, forward, images, part, outcomes, sizes)

    def _single(self, module, forward, images, i, outcomes, sizes) -> None:
        outcome, image = outcomes[i], images[i]
        if len(images) > 1:
            self._free()
            if self._attempt(module, forward, images, [i], outcomes, list(outcome.steps), "alone"):
                self._note("info", "Out of memory with a batch; this image fits alone.")
                return
        if self.tiles and image.dim() == 3:
            for tile in tile_sizes(image.shape[-2], image.shape[-1]):
                self._free()
                step = f"tiles of {tile} px (overlap {tile_overlap(tile)} px)"
                output, error = self._call(tiled_forward, forward, module, image, self.device, tile)
                outcome.steps.append(f"{step}: {error or 'ok'}")
                if error is None:
                    outcome.output = output
                    self._note("info", f"Out of memory; the image fit in {step}.")
                    return
                if error != "out of memory":
                    break  # tiling cannot work for this model; smaller tiles will not help
        if self.cpu_fallback and self.device != self.fallback_device:
            self._free()
            output, error = self._on_fallback_device(module, forward, image)
            outcome.steps.append(f"ran on the CPU: {error or 'ok'}")
            if error is None:
                outcome.output = output
                self._note("warning", "Out of memory on the device; this image ran on the CPU (slower).")
                return
        elif self.device != self.fallback_device:
            outcome.steps.append("CPU fallback: off (allow it with --cpu-fallback)")
        width, height = sizes[i]
        tried = "; ".join(outcome.steps)
        outcome.error = (
            f"ran out of memory on {self.device} with this {width}×{height} image "
            f"({width * height / 1e6:.1f} megapixels) even after every recovery step. Tried: {tried}"
        )
        outcome.output = None
        self._free()

    def _on_fallback_device(self, module, forward, image):
        """Move the model to the CPU for this one image, then back (freeing device memory meanwhile)."""
        moved, error = self._call(module.to, self.fallback_device)
        output = None
        if moved is not None:
            self._free()
            output, error = self._call(forward, module, image.unsqueeze(0), self.fallback_device)
        self._free()
        _, back_error = self._call(module.to, self.device)
        if back_error is not None:  # it fitted before; the run cannot go on with the model half moved
            raise BatchLensError(
                f"Could not move the model back to {self.device} after running an image on the CPU "
                f"({back_error}). The results written so far are kept; run again with --resume."
            )
        return (output[0] if output else None), error

    def take_notes(self) -> list[RecoveryNote]:
        """The notes since the last call (the runner turns them into RunNote events)."""
        notes, self.notes = self.notes, []
        return notes

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _call(fn, *args):
        """Run fn; return (value, None) or (None, short error text). The exception and its traceback
        are dropped before this returns, so the failed attempt's tensors can be freed."""
        failure = None
        try:
            return fn(*args), None
        except Exception as exc:
            if is_out_of_memory(exc):
                failure = "out of memory"
            elif isinstance(exc, _Failed):
                failure = f"not possible ({exc})"
            else:
                failure = f"failed ({type(exc).__name__}: {_short(str(exc))})"
        return None, failure

    def _free(self) -> None:
        release_memory(self.device)

    def _first_oom(self) -> None:
        self.oom_count += 1
        if self.oom_count == 1 and self.on_first_oom is not None:
            message = self.on_first_oom()
            if message:
                self._note("info", message, kind="memory_snapshot")

    def _note(self, level: str, message: str, kind: str = "out_of_memory") -> None:
        log.info(message)  # the user sees it as a RunNote; logging it louder would print it twice
        self.notes.append(RecoveryNote(level, message, kind))


class LeakWatch:
    """Notices memory that keeps climbing across images after each image's memory was freed.

    A model that keeps references (a list of outputs, a cache keyed by input) grows by about the same
    amount every image; the noise of a healthy run does not climb steadily. Warns once."""

    def __init__(self, warmup: int = 3, window: int = 8, min_rate: float = 1 << 20):
        # On a GPU "allocated" counts live tensors exactly; on the CPU it is the process's RSS, which
        # also moves with the allocator and (in the window) previews: the runner asks for 2 MiB there.
        self.warmup = warmup  # batches ignored at the start (caches, lazy initialisation)
        self.window = window  # batches looked at
        self.min_rate = min_rate  # bytes per image
        self._history: list[tuple[int, int]] = []  # (images done, allocated after the free)
        self._seen = 0
        self.warned = False

    def add(self, images_done: int, sample: MemorySample) -> float | None:
        """Record the sample after a batch; return the leak rate (bytes per image) the first time
        memory has climbed steadily through a whole window, else None."""
        self._seen += 1
        if self.warned or self._seen <= self.warmup:
            return None
        self._history.append((images_done, sample.allocated))
        self._history = self._history[-self.window :]
        if len(self._history) < self.window:
            return None
        rises = sum(b[1] > a[1] for a, b in zip(self._history, self._history[1:]))
        (n0, m0), (n1, m1) = self._history[0], self._history[-1]
        rate = (m1 - m0) / max(1, n1 - n0)
        if rises >= 0.8 * (self.window - 1) and rate >= self.min_rate:
            self.warned = True
            return rate
        return None


def leak_watch_for(memory_kind: str) -> LeakWatch:
    """A GPU's allocated bytes count live tensors exactly, so a short look suffices. On the CPU the
    figure is the process RSS, which also grows while allocator arenas, caches and (in the window)
    previews warm up over the first dozen images: look later and longer there, and ask for more."""
    if memory_kind == "cpu":
        return LeakWatch(warmup=8, window=16, min_rate=2 * 2**20)
    return LeakWatch(warmup=3, window=8, min_rate=2**20)


def other_processes_share(
    sample: MemorySample,
) -> tuple[int, float] | None:
    """Bytes of the device held outside this process's PyTorch allocator (other processes, plus the
    CUDA context), and that share of the device, or None when the backend cannot tell."""
    if sample.device_used is None or not sample.device_total:
        return None
    other = max(0, sample.device_used - sample.reserved)
    return other, other / sample.device_total


def other_processes_warning(
    sample: MemorySample, device: object, min_share: float = 0.25, report: GpuReport | None = None
) -> str | None:
    """A warning when much of the device is held outside this run's PyTorch allocator. With NVML's
    list of the GPU's processes (`report`, the panel's source) the figure is theirs and names them;
    without it (or where NVML sees none of them, as from inside a container), the estimate from the
    device's memory in use minus this process's reserved memory."""
    if report is not None and report.others and report.total:
        other, total = report.others_used(), report.total
        fraction = other / total
        if fraction < min_share or other < (1 << 30):
            return None
        named = ", ".join(
            (f"PID {p.pid}" if p.name.startswith("(") else f"{p.name} (PID {p.pid})")
            + (f" with {format_bytes(p.used)}" if p.used is not None else "")
            for p in sorted(report.others, key=lambda p: -(p.used or 0))[:3]
        )
        more = f" and {len(report.others) - 3} more" if len(report.others) > 3 else ""
        return (
            f"Other processes hold {format_bytes(other)} ({fraction:.0%}) of {device}'s "
            f"{format_bytes(total)}: {named}{more}; this run can use only the rest. Close them if "
            "images run out of memory."
        )
    share = other_processes_share(sample)
    if share is None or share[1] < min_share or share[0] < (1 << 30):
        return None
    other, fraction = share
    return (
        f"Other processes hold {format_bytes(other)} ({fraction:.0%}) of {device}'s "
        f"{format_bytes(sample.device_total)} (memory in use on the device minus what PyTorch reserved "
        "here, CUDA context included); this run can use only the rest. Close them (see nvidia-smi) "
        "if images run out of memory."
    )


def leak_warning(rate: float, window: int) -> str:
    return (
        f"Memory left after each image keeps climbing: about {rate / 2**20:.1f} MiB per image over the "
        f"last {window} batches, after everything was freed. The model probably keeps references to its "
        "inputs or outputs (a leak); a long run will run out of memory."
    )


#: What an image costs before the model sees it, per pixel: the decoded RGB (3 bytes) and its float32
#: copy (12 bytes). A model that resizes to a fixed size costs no more than that for a bigger photo.
DECODE_BYTES_PER_PIXEL = 15
#: The note is given only when the estimate passes this share of the memory free at the start.
OUTSIZED_SHARE = 0.5


def image_bytes_per_pixel(model) -> float:
    """A lower bound on the memory one more pixel of input costs with `model`. A model that resizes
    its input to a set size pays only the decode; one that works at full resolution (image_to_image,
    or preprocessing without a resize) also holds, at its first convolution, that layer's input and
    output maps at once (float32), whatever comes after."""
    full_resolution = model.adapter.full_resolution or (
        model.preprocessing is not None and model.preprocessing.resize is None
    )
    if not full_resolution:
        return DECODE_BYTES_PER_PIXEL
    first_conv = next((m for m in model.module.modules() if isinstance(m, torch.nn.Conv2d)), None)
    channels = (first_conv.in_channels + first_conv.out_channels) if first_conv is not None else 6
    return DECODE_BYTES_PER_PIXEL + 4 * channels


def outsized_image_warning(
    sizes: list[tuple[str, int, int]],
    max_pixels: int | None,
    free_bytes: int | None,
    bytes_per_pixel: float = DECODE_BYTES_PER_PIXEL,
    factor: float = 4.0,
) -> str | None:
    """Pre-flight: name the largest image when it is far bigger than the typical one (the median) AND
    the memory it needs (at least `bytes_per_pixel` a pixel) is near the limit: more than
    OUTSIZED_SHARE of `free_bytes`, the memory free on the device (or in RAM) as the run starts.
    Unknown free memory: no note (a guess would only cry wolf).

    `sizes` holds (relative path, width, height) from the images' headers. Images over the pixel limit
    are left out: they are refused without being decoded anyway."""
    sizes = [s for s in sizes if not max_pixels or s[1] * s[2] <= max_pixels]
    if len(sizes) < 3 or not free_bytes:
        return None
    pixels = sorted(w * h for _, w, h in sizes)
    median = pixels[len(pixels) // 2]
    rel, width, height = max(sizes, key=lambda s: s[1] * s[2])
    need = width * height * bytes_per_pixel
    if median == 0 or width * height < factor * median or need <= OUTSIZED_SHARE * free_bytes:
        return None
    return (
        f"The largest image, {rel} ({width}×{height}, {width * height / 1e6:.1f} megapixels), is "
        f"{width * height / median:.0f}× the typical image's size and needs at least "
        f"{format_bytes(need)} of the {format_bytes(free_bytes)} free; it is the one most likely to run "
        "out of memory (consider --cpu-fallback, or resizing it)."
    )
