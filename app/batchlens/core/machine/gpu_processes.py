"""Who holds the GPU: every process on one NVIDIA GPU, read through NVML (the driver's management
library, Python package `nvidia-ml-py`, module `pynvml`, the optional `nvml` extra), as nvidia-smi and
nvitop read it: name, PID, memory used on the card, and utilisation where the driver gives it.

No torch and no Qt here: the window's panel reads it on a worker thread once a second, and the run's
"other processes hold the GPU" warning reads the same list. The `pynvml` module is injectable, so the
tests feed a recorded fake shaped like NVML's answers. Where NVML cannot answer (the package is not
installed, no NVIDIA driver, MPS, XPU, the CPU) `read()` gives a plain-words reason instead of rows.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from types import ModuleType

import psutil

NVML_EXTRA = 'pip install "batchlens[nvml]"'


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    name: str
    used: int | None  # bytes on the card; None where the driver does not say (some Windows modes)
    kind: str  # "compute", "graphics" or "compute, graphics"
    sm_percent: int | None = None  # share of the card's compute, over the last sampling period
    memory_percent: int | None = None  # share of the card's memory bandwidth, likewise
    own: bool = False  # this BatchLens process


@dataclass(frozen=True)
class GpuReport:
    """One reading of a GPU: its processes, or `reason` (one sentence) why they cannot be listed."""

    processes: tuple[GpuProcess, ...] = ()
    reason: str | None = None
    device_name: str = ""
    used: int | None = None
    total: int | None = None
    utilisation: int | None = None  # percent of the last sampling period a kernel ran

    @property
    def others(self) -> tuple[GpuProcess, ...]:
        return tuple(p for p in self.processes if not p.own)

    def others_used(self) -> int:
        return sum(p.used or 0 for p in self.others)


def load_nvml() -> tuple[ModuleType | None, str | None]:
    """The pynvml module, or None and the reason it cannot be used."""
    try:
        import pynvml
    except ImportError:
        return None, (
            "Listing the processes on the GPU needs NVML's Python package, which is not installed "
            f"({NVML_EXTRA} adds it)."
        )
    return pynvml, None


def nvml_index(cuda_index: int, visible: str | None = None) -> int | str:
    """The NVML index (or UUID) of CUDA device `cuda_index`: NVML counts every card, CUDA only those
    CUDA_VISIBLE_DEVICES lets it see, in that order."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    if not visible:
        return cuda_index
    names = [v.strip() for v in visible.split(",") if v.strip()]
    if cuda_index >= len(names):
        return cuda_index
    chosen = names[cuda_index]
    return int(chosen) if chosen.isdigit() else chosen


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def process_name(pid: int) -> str:
    """The process's name, or a plain note where this machine cannot see it (another container)."""
    try:
        return psutil.Process(pid).name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "(not visible from here)"


class GpuProcessReader:
    """Reads one GPU's processes. NVML is initialised once, on the first read, and shut down by
    `close()`; a reader is used from one thread at a time (the lock makes a stray second caller wait)."""

    def __init__(
        self,
        device_type: str,
        index: int = 0,
        nvml: ModuleType | None = None,
        own_pid: int | None = None,
        name_of=process_name,
    ):
        self.device_type = device_type
        self.index = index
        self.own_pid = os.getpid() if own_pid is None else own_pid
        self.name_of = name_of
        self._nvml = nvml
        self._handle = None
        self._reason: str | None = None
        self._last_seen = 0  # NVML's timestamp (µs) of the newest utilisation sample read
        self._lock = threading.Lock()

    def unavailable(self) -> str | None:
        """Why this reader can never list processes, found without calling NVML (no NVIDIA GPU chosen,
        no pynvml package), else None (NVML itself may still refuse, on the first read)."""
        if self._handle is not None or self._reason is not None:
            return self._reason
        if self.device_type != "cuda":
            self._open()  # (no NVML call: it only words the reason)
        elif self._nvml is None:
            self._nvml, self._reason = load_nvml()  # an import; nvmlInit waits for the first read
        return self._reason

    def _open(self):
        if self._handle is not None or self._reason is not None:
            return self._handle
        if self.device_type != "cuda":
            where = {"mps": "an Apple GPU (MPS)", "xpu": "an Intel GPU (XPU)"}.get(
                self.device_type, "the CPU"
            )
            self._reason = (
                f"Listing the processes on the GPU needs an NVIDIA GPU and its driver (NVML); "
                f"this run uses {where}."
            )
            return None
        nvml = self._nvml
        if nvml is None:
            nvml, self._reason = load_nvml()
            if nvml is None:
                return None
            self._nvml = nvml
        try:
            nvml.nvmlInit()
            which = nvml_index(self.index)
            if isinstance(which, str):
                self._handle = nvml.nvmlDeviceGetHandleByUUID(which)
            else:
                self._handle = nvml.nvmlDeviceGetHandleByIndex(which)
        except Exception as exc:  # NVMLError: no driver, driver too old, no such card
            self._reason = (
                "NVML, the NVIDIA driver's management library, cannot be used here, so the processes "
                f"on the GPU cannot be listed ({_text(exc) or type(exc).__name__})."
            )
        return self._handle

    def read(self) -> GpuReport:
        with self._lock:
            handle = self._open()
            if handle is None:
                return GpuReport(reason=self._reason)
            try:
                return self._read(self._nvml, handle)
            except Exception as exc:  # the card went away, the driver was reloaded
                return GpuReport(
                    reason=f"NVML stopped answering, so the processes on the GPU cannot be listed "
                    f"({_text(exc) or type(exc).__name__})."
                )

    def _read(self, nvml, handle) -> GpuReport:
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        try:
            utilisation = int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:
            utilisation = None
        found: dict[int, dict] = {}
        for kind, call in (
            ("compute", "nvmlDeviceGetComputeRunningProcesses"),
            ("graphics", "nvmlDeviceGetGraphicsRunningProcesses"),
        ):
            try:
                entries = getattr(nvml, call)(handle)
            except Exception:
                continue
            for entry in entries:
                row = found.setdefault(int(entry.pid), {"used": None, "kinds": []})
                row["kinds"].append(kind)
                used = getattr(entry, "usedGpuMemory", None)
                if used is not None:
                    row["used"] = max(row["used"] or 0, int(used))
        per_pid = {}
        try:
            samples = nvml.nvmlDeviceGetProcessUtilization(handle, self._last_seen)
        except Exception:  # NVML_ERROR_NOT_FOUND: no sample since the last read; or not supported
            samples = []
        for sample in samples:
            self._last_seen = max(self._last_seen, int(sample.timeStamp))
            per_pid[int(sample.pid)] = (int(sample.smUtil), int(sample.memUtil))
        processes = []
        for pid, row in found.items():
            sm, mem = per_pid.get(pid, (None, None))
            processes.append(
                GpuProcess(
                    pid=pid,
                    name=self.name_of(pid),
                    used=row["used"],
                    kind=", ".join(row["kinds"]),
                    sm_percent=sm,
                    memory_percent=mem,
                    own=pid == self.own_pid,
                )
            )
        processes.sort(key=lambda p: (not p.own, -(p.used or 0), p.pid))
        return GpuReport(
            processes=tuple(processes),
            device_name=_text(nvml.nvmlDeviceGetName(handle)),
            used=int(memory.used),
            total=int(memory.total),
            utilisation=utilisation,
        )

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                try:
                    self._nvml.nvmlShutdown()
                except Exception:
                    pass
            self._handle = None
            self._reason = None


def read_gpu_processes(device_type: str, index: int = 0, nvml: ModuleType | None = None) -> GpuReport:
    """One reading, NVML opened and closed around it (the run's start-of-run check)."""
    reader = GpuProcessReader(device_type, index, nvml)
    try:
        return reader.read()
    finally:
        reader.close()
