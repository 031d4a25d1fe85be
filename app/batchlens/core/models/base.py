"""What every model source hands the engine."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.transforms import v2

from batchlens.core.models.sidecar import Sidecar
from batchlens.core.tasks import TaskAdapter, make_adapter


@dataclass(frozen=True)
class ModelInfo:
    """One entry of `batchlens models` and of the window's model picker."""

    id: str
    task: str
    source: str  # "built-in", "torchvision", "file"
    description: str = ""
    size_bytes: int | None = None
    downloaded: bool | None = None  # catalogue weights already in the torch hub cache (None: not applicable)


@dataclass
class LoadedModel:
    info: ModelInfo
    module: nn.Module  # in eval(), on its device
    adapter: TaskAdapter
    device: torch.device
    # Detection models take a list of 3xHxW images of any sizes (torchvision's convention), not a stack.
    takes_list: bool = False


def sidecar_transform(sidecar: Sidecar) -> v2.Compose:
    """PIL image -> float tensor, resized and normalised as the sidecar says."""
    steps = []
    if sidecar.input_size:
        steps.append(v2.Resize(list(sidecar.input_size), antialias=True))
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if sidecar.mean and sidecar.std:
        steps.append(v2.Normalize(list(sidecar.mean), list(sidecar.std)))
    return v2.Compose(steps)


def adapter_from_sidecar(sidecar: Sidecar, options: dict | None = None) -> TaskAdapter:
    return make_adapter(
        sidecar.task,
        transform=sidecar_transform(sidecar),
        labels=sidecar.labels,
        color_mode=sidecar.color_mode,
        options=dict(options or {}),
    )


def prepare(module: nn.Module, device: torch.device) -> nn.Module:
    """Eval mode, no gradients wanted, on the device."""
    try:
        module.eval()
    except NotImplementedError:
        pass  # a torch.export program runs as it was exported (export it in eval mode)
    for parameter in module.parameters():  # (a ScriptModule refuses module.requires_grad_)
        parameter.requires_grad_(False)
    return module.to(device)
