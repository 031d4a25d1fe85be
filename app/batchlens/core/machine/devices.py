"""Turn what the user typed ("auto", "cpu", "cuda:1", "mps", "xpu") into a torch.device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from batchlens.core.errors import BatchLensError

if TYPE_CHECKING:
    import torch


def _has_mps() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def _has_xpu() -> bool:
    import torch

    return bool(hasattr(torch, "xpu") and torch.xpu.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """Return the device for `name`, or raise BatchLensError saying why it cannot be used."""
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _has_mps():
            return torch.device("mps")
        if _has_xpu():
            return torch.device("xpu", 0)
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise BatchLensError(f"Unknown device {name!r}: use auto, cpu, cuda, cuda:N, mps or xpu.") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BatchLensError(
                f"Device {name!r} was requested but this machine has no usable CUDA GPU "
                "(use --device cpu or auto)."
            )
        count = torch.cuda.device_count()
        index = 0 if device.index is None else device.index
        if index >= count:
            raise BatchLensError(
                f"Device {name!r} does not exist: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}."
            )
        return torch.device("cuda", index)
    if device.type == "mps":
        if not _has_mps():
            raise BatchLensError("Device 'mps' was requested but Apple's MPS backend is not available here.")
        return device
    if device.type == "xpu":
        if not _has_xpu():
            raise BatchLensError("Device 'xpu' was requested but no Intel XPU is available here.")
        return torch.device("xpu", device.index or 0)
    raise BatchLensError(f"Unsupported device {name!r}: use auto, cpu, cuda, cuda:N, mps or xpu.")


@dataclass(frozen=True)
class DeviceChoice:
    """One entry for a device picker: what to pass to resolve_device and how to show it."""

    name: str
    label: str
    total_bytes: int | None = None


def available_devices() -> list[DeviceChoice]:
    """Everything this machine can run on, "auto" first."""
    import torch

    choices = [DeviceChoice("auto", "Auto (best available)")]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gib = props.total_memory / 2**30
            choices.append(
                DeviceChoice(
                    f"cuda:{index}", f"cuda:{index} — {props.name} ({gib:.1f} GiB)", props.total_memory
                )
            )
    if _has_mps():
        choices.append(DeviceChoice("mps", "mps — Apple GPU"))
    if _has_xpu():
        for index in range(torch.xpu.device_count()):
            choices.append(DeviceChoice(f"xpu:{index}", f"xpu:{index} — {torch.xpu.get_device_name(index)}"))
    choices.append(DeviceChoice("cpu", "cpu — processor (RAM)"))
    return choices
