"""Who holds the GPU, read through a recorded fake of NVML (tests/core/fake_nvml.py)."""

from __future__ import annotations

import os
import sys

from batchlens.core.machine.gpu_processes import GpuProcessReader, load_nvml, nvml_index, read_gpu_processes
from batchlens.core.machine.memory import MemorySample
from batchlens.core.run.recovery import other_processes_warning
from tests.core.fake_nvml import GIB, FakeNvml

OWN = os.getpid()
SHARED = FakeNvml(
    processes=[(OWN, 9 * GIB, "compute"), (4242, 28 * GIB, "compute"), (777, None, "graphics")],
    utilisation=[(OWN, 60, 30), (4242, 25, 10)],
)


def names(pid: int) -> str:
    return {OWN: "batchlens", 4242: "python3", 777: "Xorg"}[pid]


def test_every_process_on_the_card_with_its_memory_and_utilisation():
    reader = GpuProcessReader("cuda", 0, SHARED, name_of=names)
    report = reader.read()
    assert report.reason is None and report.device_name == "NVIDIA H100 80GB HBM3"
    assert report.total == 80 * GIB and report.utilisation == 87
    rows = [(p.pid, p.name, p.used, p.kind, p.sm_percent, p.own) for p in report.processes]
    assert rows == [  # BatchLens first, then the others by memory
        (OWN, "batchlens", 9 * GIB, "compute", 60, True),
        (4242, "python3", 28 * GIB, "compute", 25, False),
        (777, "Xorg", None, "graphics", None, False),
    ]
    assert report.others_used() == 28 * GIB
    reader.read()
    assert SHARED.calls.count("init") == 1  # NVML is opened once per reader
    reader.close()
    assert SHARED.initialised == 0


def test_a_process_name_this_machine_cannot_see_is_said_plainly():
    fake = FakeNvml([(2**22 + 12345, GIB, "compute")])  # no such PID here (pid_max is at most 2**22)
    report = GpuProcessReader("cuda", 0, fake).read()
    assert report.processes[0].name == "(not visible from here)"


def test_without_nvml_the_reason_is_one_plain_sentence(monkeypatch):
    no_driver = GpuProcessReader("cuda", 0, FakeNvml([], init_error="NVML Shared Library Not Found")).read()
    assert no_driver.processes == () and "cannot be used here" in no_driver.reason
    assert "NVML Shared Library Not Found" in no_driver.reason
    for kind, words in (("mps", "Apple GPU (MPS)"), ("cpu", "the CPU"), ("xpu", "Intel GPU")):
        reason = read_gpu_processes(kind).reason
        assert "needs an NVIDIA GPU" in reason and words in reason and "\n" not in reason
    monkeypatch.setitem(sys.modules, "pynvml", None)  # the package is not installed
    module, reason = load_nvml()
    assert module is None and 'pip install "batchlens[nvml]"' in reason


def test_cuda_visible_devices_maps_cuda_indices_to_nvml_ones(monkeypatch):
    assert nvml_index(1, "") == 1
    assert nvml_index(1, "3,5") == 5
    assert nvml_index(0, "GPU-8a1b,GPU-77") == "GPU-8a1b"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    fake = FakeNvml([])
    GpuProcessReader("cuda", 1, fake).read()
    assert "handle 5" in fake.calls


def test_the_crowded_gpu_warning_names_the_processes_from_the_same_list():
    report = GpuProcessReader("cuda", 0, SHARED, name_of=names).read()
    sample = MemorySample(0.0, 8 * GIB, 9 * GIB, 8 * GIB, 38 * GIB, 80 * GIB)
    message = other_processes_warning(sample, "cuda:0", report=report)
    assert message.startswith(
        "Other processes hold 28.0 GiB (35%) of cuda:0's 80.0 GiB: "
        "python3 (PID 4242) with 28.0 GiB, Xorg (PID 777); this run"
    )
    # Without NVML's list the estimate from the device's memory in use is kept.
    estimate = other_processes_warning(sample, "cuda:0")
    assert "minus what PyTorch reserved" in estimate
    # A card NVML sees only BatchLens on (its own context) gives no warning from the list.
    alone = read_gpu_processes("cuda", 0, FakeNvml([(OWN, 9 * GIB, "compute")]))
    assert other_processes_warning(sample, "cuda:0", report=alone) is not None  # falls back: no others
