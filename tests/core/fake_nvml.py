"""A recorded fake of `pynvml` (nvidia-ml-py): the structures NVML answers with, as the package gives
them (objects with the C struct's field names), recorded from an 80 GiB card shared by three processes.

Only the calls BatchLens makes exist, so a call it starts making without a fake fails loudly here."""

from __future__ import annotations

from types import SimpleNamespace

GIB = 2**30


class NVMLError(Exception):
    def __init__(self, value: int, text: str):
        super().__init__(text)
        self.value = value


NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_LIBRARY_NOT_FOUND = 12


class FakeNvml:
    """A module-like object. `processes`: (pid, bytes used or None, "compute"/"graphics");
    `utilisation`: (pid, sm %, memory %) samples for nvmlDeviceGetProcessUtilization."""

    NVMLError = NVMLError

    def __init__(self, processes, utilisation=(), total=80 * GIB, init_error: str | None = None):
        self.processes = list(processes)
        self.utilisation = list(utilisation)
        self.total = total
        self.init_error = init_error
        self.calls: list[str] = []
        self.initialised = 0

    def nvmlInit(self):
        self.calls.append("init")
        if self.init_error:
            raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND, self.init_error)
        self.initialised += 1

    def nvmlShutdown(self):
        self.calls.append("shutdown")
        self.initialised -= 1

    def nvmlDeviceGetHandleByIndex(self, index):
        self.calls.append(f"handle {index}")
        return SimpleNamespace(index=index)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self.calls.append(f"handle {uuid}")
        return SimpleNamespace(index=uuid)

    def nvmlDeviceGetName(self, handle):
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, handle):
        used = sum(u or 0 for _, u, _ in self.processes) + 600 * 2**20
        return SimpleNamespace(total=self.total, free=self.total - used, used=used)

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=87, memory=41)

    def _running(self, kind):
        return [
            SimpleNamespace(
                pid=pid, usedGpuMemory=used, gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF
            )
            for pid, used, k in self.processes
            if k == kind
        ]

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return self._running("compute")

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle):
        return self._running("graphics")

    def nvmlDeviceGetProcessUtilization(self, handle, last_seen):
        if not self.utilisation:
            raise NVMLError(NVML_ERROR_NOT_FOUND, "Not Found")
        return [
            SimpleNamespace(
                pid=pid, timeStamp=1_700_000_000_000_000 + i, smUtil=sm, memUtil=mem, encUtil=0, decUtil=0
            )
            for i, (pid, sm, mem) in enumerate(self.utilisation)
        ]
