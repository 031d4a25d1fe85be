"""The built-in demo models: small safetensors weights + sidecars in resources/models/."""

from __future__ import annotations

from typing import TYPE_CHECKING

from batchlens.core.models.info import ModelInfo
from batchlens.core.models.sidecar import read_sidecar
from batchlens.core.resources import resource_path

if TYPE_CHECKING:
    import torch

    from batchlens.core.models.base import LoadedModel


BUILTIN_IDS = ("demo-shapes", "demo-denoise")


def list_builtin() -> list[ModelInfo]:
    infos = []
    for model_id in BUILTIN_IDS:
        sidecar = read_sidecar(resource_path("models", f"{model_id}.json"))
        weights = resource_path("models", f"{model_id}.safetensors")
        size = weights.stat().st_size if weights.exists() else None
        infos.append(ModelInfo(model_id, sidecar.task, "built-in", sidecar.description, size))
    return infos


def load_builtin(model_id: str, device: torch.device, options: dict | None = None) -> LoadedModel:
    from safetensors.torch import load_file

    from batchlens.core.models.base import LoadedModel, adapter_from_sidecar, prepare
    from batchlens.core.models.demo_nets import ARCHITECTURES

    sidecar = read_sidecar(resource_path("models", f"{model_id}.json"))
    module = ARCHITECTURES[sidecar.arch](**sidecar.arch_kwargs)
    weights = resource_path("models", f"{model_id}.safetensors")
    module.load_state_dict(load_file(str(weights)))
    info = ModelInfo(model_id, sidecar.task, "built-in", sidecar.description, weights.stat().st_size)
    adapter = adapter_from_sidecar(sidecar, options)
    preprocessing = sidecar.preprocess().with_source(f"the sidecar of {model_id}")
    return LoadedModel(info, prepare(module, device), adapter, device, preprocessing=preprocessing)
