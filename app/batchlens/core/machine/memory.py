"""Memory probes: what the device (or, on CPU, the process) holds right now, cheaply enough for 10 Hz.

Sampling only reads allocator counters; it never synchronises the device. `clear_cache()` runs the
garbage collector and the backend's `empty_cache()` and reports how many bytes it handed back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import gc
import resource
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class MemorySample:
    """One reading, in bytes. `device_used`/`device_total` are None where the backend cannot tell."""

    time: float
    allocated: int
    reserved: int
    peak: int
    device_used: int | None = None
    device_total: int | None = None
    #: bytes of the allocator's cache that sit in split blocks, free but cut from a segment that also
    #: holds live tensors: they count in "reserved" yet a larger tensor cannot use them (fragmentation)
    inactive_split: int | None = None
    #: how many segments (blocks the allocator asked the driver for) the allocator holds
    segments: int | None = None
    #: the peak since the last `start_span()` by any reader (the allocator's own peak, the kernel's peak
    #: RSS), where `peak` is this probe's own running maximum; None where the backend keeps none
    span_peak: int | None = None

    @property
    def held_unused(self) -> int:
        """Reserved but not allocated: the inactive splits plus the free cache."""
        return max(0, self.reserved - self.allocated)


@dataclass(frozen=True)
class ClearResult:
    freed: int
    still_allocated: int
    kind: str = "cuda"  # the probe's kind: on "cpu" both figures are process RAM, not a tensor cache

    def message(self) -> str:
        if self.kind == "cpu":
            return (
                f"Handed {format_bytes(self.freed)} of RAM back to the system; "
                f"this process now uses {format_bytes(self.still_allocated)}."
            )
        return (
            f"Freed {format_bytes(self.freed)} of cached memory; "
            f"{format_bytes(self.still_allocated)} still allocated by live tensors."
        )


def format_bytes(n: float | None) -> str:
    if n is None:
        return "n/a"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class MemoryProbe:
    """Base class. Subclasses read one backend; tests inject their own with known numbers."""

    #: short name of what is measured, shown in the UI ("cuda", "mps", "xpu", "cpu")
    kind = "cpu"
    #: what "allocated"/"reserved" mean on this backend, for labels and tooltips
    description = ""
    #: what this backend does not report about fragmentation, in one sentence ("" where it reports it)
    fragmentation_note = ""

    def sample(self) -> MemorySample:
        raise NotImplementedError

    def clear_cache(self) -> ClearResult:
        raise NotImplementedError

    def reset_peak(self) -> None:
        """Start peak tracking afresh (called when a run starts)."""

    def start_span(self) -> None:
        """Start a span (a batch) whose own peak the next sample's `span_peak` gives. The allocator's
        and the kernel's peaks are shared by the process: `peak` stays this probe's running maximum."""

    @property
    def keeps_exact_peak(self) -> bool:
        """Whether `sample().peak` is a peak kept apart from the samples since `reset_peak` (the
        kernel's, for process RAM), so nothing needs to sample between batches to catch it."""
        return False


def allocator_sample(stats: dict, device_used: int | None, device_total: int | None) -> MemorySample:
    """A sample from a caching allocator's nested stats (CUDA's and XPU's share the layout). The nested
    dict is the allocator's own: memory_stats() flattens and sorts its ~150 entries in Python, once per
    batch (every image at batch 1)."""
    allocated, reserved = (
        stats.get("allocated_bytes", {}).get("all", {}),
        stats.get("reserved_bytes", {}).get("all", {}),
    )
    inactive = stats.get("inactive_split_bytes", {}).get("all", {}).get("current")
    segments = stats.get("segment", {}).get("all", {}).get("current")
    return MemorySample(
        time=time.monotonic(),
        allocated=allocated.get("current", 0),
        reserved=reserved.get("current", 0),
        peak=allocated.get("peak", 0),
        device_used=device_used,
        device_total=device_total,
        inactive_split=inactive,
        segments=segments,
        span_peak=allocated.get("peak", 0),
    )


class CudaProbe(MemoryProbe):
    kind = "cuda"
    description = (
        "GPU memory. Allocated: held by live tensors. Reserved: held by PyTorch's caching allocator "
        "(allocated + cache). Device used: everything on the card, including the CUDA context and "
        "other processes; the gap between device used and reserved is memory PyTorch cannot free."
    )

    def __init__(self, device: torch.device):
        self.device = device
        self._peak = 0

    def sample(self) -> MemorySample:
        import torch

        free, total = torch.cuda.mem_get_info(self.device)
        sample = allocator_sample(torch.cuda.memory_stats_as_nested_dict(self.device), total - free, total)
        self._peak = max(self._peak, sample.peak)
        return dataclasses.replace(sample, peak=self._peak)

    def clear_cache(self) -> ClearResult:
        import torch

        before = torch.cuda.memory_reserved(self.device)
        gc.collect()
        torch.cuda.empty_cache()
        after = torch.cuda.memory_reserved(self.device)
        return ClearResult(max(0, before - after), torch.cuda.memory_allocated(self.device))

    def reset_peak(self) -> None:
        import torch

        torch.cuda.reset_peak_memory_stats(self.device)
        self._peak = 0

    def start_span(self) -> None:
        import torch

        torch.cuda.reset_peak_memory_stats(self.device)


class MpsProbe(MemoryProbe):
    kind = "mps"
    description = (
        "Apple GPU (unified memory). Allocated: held by live tensors. Reserved: everything the Metal "
        "driver holds for this process, cache included."
    )

    fragmentation_note = (
        "The Apple GPU (MPS) does not report how much of its cache is fragmented, nor its segments."
    )

    def __init__(self) -> None:
        self._peak = 0

    def sample(self) -> MemorySample:
        import torch

        allocated = torch.mps.current_allocated_memory()
        self._peak = max(self._peak, allocated)
        total = getattr(torch.mps, "recommended_max_memory", lambda: None)()
        return MemorySample(
            time.monotonic(), allocated, torch.mps.driver_allocated_memory(), self._peak, None, total
        )

    def clear_cache(self) -> ClearResult:
        import torch

        before = torch.mps.driver_allocated_memory()
        gc.collect()
        torch.mps.empty_cache()
        after = torch.mps.driver_allocated_memory()
        return ClearResult(max(0, before - after), torch.mps.current_allocated_memory())

    def reset_peak(self) -> None:
        self._peak = 0


class XpuProbe(MemoryProbe):
    kind = "xpu"
    description = "Intel GPU memory. Allocated: held by live tensors. Reserved: allocated + cache."
    fragmentation_note = (
        "Where this Intel GPU (XPU) build does not report inactive split bytes or segments, the "
        "fragmented share of the cache is not shown."
    )

    def __init__(self, device: torch.device):
        self.device = device
        self._peak = 0

    def sample(self) -> MemorySample:
        import torch

        used = total = None
        if hasattr(torch.xpu, "mem_get_info"):  # not in every XPU build
            free, total = torch.xpu.mem_get_info(self.device)
            used = total - free
        sample = allocator_sample(torch.xpu.memory_stats_as_nested_dict(self.device), used, total)
        self._peak = max(self._peak, sample.peak)
        return dataclasses.replace(sample, peak=self._peak)

    def clear_cache(self) -> ClearResult:
        import torch

        before = torch.xpu.memory_reserved(self.device)
        gc.collect()
        torch.xpu.empty_cache()
        after = torch.xpu.memory_reserved(self.device)
        return ClearResult(max(0, before - after), torch.xpu.memory_allocated(self.device))

    def reset_peak(self) -> None:
        import torch

        torch.xpu.reset_peak_memory_stats(self.device)
        self._peak = 0

    def start_span(self) -> None:
        import torch

        torch.xpu.reset_peak_memory_stats(self.device)


def _malloc_trim() -> None:
    """Ask glibc to hand freed heap pages back to the OS; without it RSS rarely drops on Linux."""
    if not sys.platform.startswith("linux"):
        return
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        try:
            ctypes.CDLL(libc_name).malloc_trim(0)
        except (OSError, AttributeError):
            pass


class KernelPeakRss:
    """The kernel's own peak RSS of this process since a reset: exact, every page counted, where
    sampling the RSS every 10 ms can miss a short forward's peak. Linux keeps it as VmHWM in
    /proc/self/status and lets the process reset it (writing 5 to /proc/self/clear_refs, Linux 4.0+).
    The reset is process-wide and lowers ru_maxrss too, so the lifetime peak before each reset is kept.
    One instance per process (`KERNEL_PEAK_RSS`): the window's probe and a run's share it."""

    def __init__(self) -> None:
        self.reset_done = False  # VmHWM is a span's peak only after a reset; before, it is lifetime
        self._lifetime_before_reset = 0

    @staticmethod
    def _status() -> tuple[int, int] | None:
        """(VmRSS, VmHWM) in bytes, from one read of /proc/self/status."""
        found = {}
        try:
            with open("/proc/self/status", "rb") as status:
                for line in status:
                    if line.startswith((b"VmHWM:", b"VmRSS:")):
                        found[line[:5]] = int(line.split()[1]) * 1024  # "VmHWM:   113272 kB"
                        if len(found) == 2:
                            return found[b"VmRSS"], found[b"VmHWM"]
        except (OSError, ValueError, IndexError):
            return None
        return None

    def reset(self) -> bool:
        """Start a span; False where the kernel offers no resettable peak (macOS, Windows, old Linux)."""
        before = self._status() if sys.platform.startswith("linux") else None
        if before is None:  # (the peak could not be read back either)
            self.reset_done = False
            return False
        try:
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")
        except OSError:
            self.reset_done = False
            return False
        self._lifetime_before_reset = max(self._lifetime_before_reset, before[1])
        self.reset_done = True
        return True

    def rss_and_peak(self) -> tuple[int, int] | None:
        """The RSS now and the peak since the reset, in one read (a sample per batch); None before a
        reset or where the kernel keeps no such peak."""
        return self._status() if self.reset_done else None

    def lifetime(self) -> int:
        """The whole process's peak since it started (ru_maxrss is KiB on Linux, bytes on macOS)."""
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return max(self._lifetime_before_reset, peak if sys.platform == "darwin" else peak * 1024)


KERNEL_PEAK_RSS = KernelPeakRss()


class CpuProbe(MemoryProbe):
    """On the CPU there is no device memory: we report this process's RAM (RSS), not VRAM."""

    kind = "cpu"
    description = (
        "No GPU in use: these lines show this process's RAM (resident set size), not GPU memory. "
        "Allocated and reserved are both the RSS; device used/total are the whole machine's RAM."
    )
    fragmentation_note = "On the CPU there is no allocator cache, so there is no fragmentation to show."

    #: the machine's RAM figures are re-read at most this often: reading them costs twice as much as
    #: the RSS, and they change slowly (this keeps a sample per image well under 1 % of a run)
    MACHINE_RAM_MAX_AGE_S = 0.5

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._peak = 0
        self._machine: tuple[float, int, int] | None = None  # (when read, used, total)

    def _rss(self) -> int:
        return self._process.memory_info().rss

    def _machine_ram(self, now: float) -> tuple[int, int]:
        if self._machine is None or now - self._machine[0] > self.MACHINE_RAM_MAX_AGE_S:
            vm = psutil.virtual_memory()
            self._machine = (now, vm.total - vm.available, vm.total)
        return self._machine[1], self._machine[2]

    def sample(self) -> MemorySample:
        rss, kernel_peak = KERNEL_PEAK_RSS.rss_and_peak() or (self._rss(), 0)
        self._peak = max(self._peak, rss, kernel_peak)
        now = time.monotonic()
        used, total = self._machine_ram(now)
        return MemorySample(now, rss, rss, self._peak, used, total, span_peak=max(rss, kernel_peak))

    def clear_cache(self) -> ClearResult:
        before = self._rss()
        gc.collect()
        _malloc_trim()
        after = self._rss()
        return ClearResult(max(0, before - after), after, kind="cpu")

    def reset_peak(self) -> None:
        self._peak = 0
        KERNEL_PEAK_RSS.reset()

    def start_span(self) -> None:
        KERNEL_PEAK_RSS.reset()

    @property
    def keeps_exact_peak(self) -> bool:
        return KERNEL_PEAK_RSS.reset_done

    @staticmethod
    def lifetime_peak_rss() -> int:
        return KERNEL_PEAK_RSS.lifetime()


class PeakWatch:
    """The true peak over a span of work. A GPU allocator keeps its own exact peak
    (`max_memory_allocated`, the probe's `peak`), and so does Linux for process RAM (a probe that
    `keeps_exact_peak`). Where neither is kept (the CPU on macOS and Windows: ru_maxrss is the whole
    process's lifetime), a thread samples the RSS every `interval` seconds and keeps the highest,
    catching the forward's own peak that samples taken between batches miss. A sample costs ~20 µs:
    at 10 ms that is 0.2 % of one core."""

    def __init__(self, probe: MemoryProbe, interval: float = 0.01):
        self.probe = probe
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = None

    @property
    def source(self) -> str:
        if self.probe.kind != "cpu":
            return "the allocator's max_memory_allocated over the run"
        if self._thread is None:
            return "process RSS, the kernel's peak over the run (VmHWM, reset at the start)"
        return "process RSS, sampled every 10 ms through the run"

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.probe.sample().peak)

    def read(self, sample: MemorySample | None = None) -> int:
        """The peak so far; `sample`: one the caller has just taken (its peak is the probe's)."""
        self.peak = max(self.peak, (sample or self.probe.sample()).peak)  # (the kernel's, where kept)
        return self.peak

    def __enter__(self) -> PeakWatch:
        self.probe.reset_peak()
        if self.probe.kind == "cpu" and not self.probe.keeps_exact_peak:
            self._thread = threading.Thread(target=self._run, name="batchlens-peak", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.read()


def probe_for(device: torch.device) -> MemoryProbe:
    if device.type == "cuda":
        return CudaProbe(device)
    if device.type == "mps":
        return MpsProbe()
    if device.type == "xpu":
        return XpuProbe(device)
    return CpuProbe()
