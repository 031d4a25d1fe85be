"""What every model source hands the engine."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchvision.transforms import v2

from batchlens.core.models.info import ModelInfo
from batchlens.core.models.preprocessing import Preprocessing
from batchlens.core.models.sidecar import Sidecar
from batchlens.core.tasks import TaskAdapter, make_adapter


@dataclass
class LoadedModel:
    info: ModelInfo
    module: nn.Module  # in eval(), on its device
    adapter: TaskAdapter
    device: torch.device
    # Detection models take a list of 3xHxW images of any sizes (torchvision's convention), not a stack.
    takes_list: bool = False
    #: how images are prepared for it, in words summary.json records (None: the source does not say)
    preprocessing: Preprocessing | None = None
    #: what the user should hear once when a run starts (e.g. which of two sidecars was used)
    notes: tuple[str, ...] = ()


def sidecar_transform(sidecar: Sidecar) -> v2.Compose:
    """PIL image -> float tensor, resized, cropped and normalised as the sidecar says."""
    return sidecar.preprocess().to_transform()


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
