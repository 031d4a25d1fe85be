"""The torchvision catalogue as a list, without importing torch or torchvision.

The window's model list and `batchlens models` read `catalogue_data.py`, which
`scripts/make_catalogue.py` writes from torchvision's registry (`generate()` below): per model its task,
its weights (torch hub file name and size) and what the list says about it. Loading a model still asks
torchvision itself (catalogue.py). tests/core/test_catalogue_index.py checks that the data equals what
the installed torchvision lists, so a torchvision upgrade shows up as a failing test.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from batchlens.core.errors import BatchLensError
from batchlens.core.models.catalogue_data import CATALOGUE
from batchlens.core.models.info import ModelInfo

#: the torchvision modules BatchLens has adapters for, by task
TASK_MODULES = {"classification": "", "detection": "detection", "segmentation": "segmentation"}


def catalogue_tasks() -> dict[str, str]:
    """torchvision model name -> task, for the modules BatchLens has adapters for."""
    return {name: entry["task"] for name, entry in CATALOGUE.items()}


def split_id(model_id: str) -> tuple[str, str | None]:
    """ "resnet50" -> ("resnet50", None); "resnet50:IMAGENET1K_V1" -> ("resnet50", "IMAGENET1K_V1")."""
    name, _, variant = model_id.partition(":")
    return name, variant or None


def is_catalogue_model(model_id: str) -> bool:
    return split_id(model_id)[0] in CATALOGUE


def hub_dir() -> Path:
    """torch.hub.get_dir(), without importing torch when it is not loaded yet (its own rule: TORCH_HOME,
    else $XDG_CACHE_HOME/torch, then hub/)."""
    hub = sys.modules.get("torch.hub")
    if hub is not None:  # it may have been moved with torch.hub.set_dir
        return Path(hub.get_dir())
    cache = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    return Path(os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache, "torch")))) / "hub"


def weights_entry(model_id: str) -> tuple[str, float | None]:
    """(file name in the torch hub cache, size in MiB) of the weights a catalogue id names."""
    name, variant = split_id(model_id)
    entry = CATALOGUE[name]
    weights = entry["weights"]
    variant = variant or entry["default"]
    if variant not in weights:
        choices = ", ".join(weights)
        raise BatchLensError(f"{name} has no weights {variant!r}; it has {choices}.")
    file_name, mib = weights[variant]
    return file_name, mib


# Set by catalogue.py when it is imported (torchvision is loaded then): the weights file torchvision
# itself names, which a test or a future torchvision may point elsewhere than catalogue_data says.
torchvision_weights_path: Callable[[str], Path] | None = None


def is_downloaded(model_id: str) -> bool:
    if torchvision_weights_path is not None:
        return torchvision_weights_path(model_id).is_file()
    return (hub_dir() / "checkpoints" / weights_entry(model_id)[0]).is_file()


def list_catalogue(task: str | None = None) -> list[ModelInfo]:
    infos = []
    checkpoints = hub_dir() / "checkpoints"
    for name, entry in CATALOGUE.items():
        if task and entry["task"] != task:
            continue
        file_name, mib = entry["weights"][entry["default"]]
        size = int(mib * 1024 * 1024) if mib else None
        downloaded = (checkpoints / file_name).is_file()
        infos.append(ModelInfo(name, entry["task"], "torchvision", entry["description"], size, downloaded))
    return infos


def describe(meta: dict) -> str:
    """What the list says about catalogue weights: their first metrics, parameters and classes."""
    parts = []
    for dataset, metrics in meta.get("_metrics", {}).items():
        shown = ", ".join(f"{k} {v}" for k, v in metrics.items())
        parts.append(f"{dataset}: {shown}")
        break
    parts.append(f"{meta['num_params'] / 1e6:.1f} M params")
    parts.append(f"{len(meta['categories'])} classes")
    return "; ".join(parts)


def generate() -> dict[str, dict]:
    """The catalogue as the installed torchvision lists it (imports torchvision)."""
    from urllib.parse import urlparse

    import torchvision.models as tvm

    catalogue: dict[str, dict] = {}
    for task, submodule in TASK_MODULES.items():
        module = getattr(tvm, submodule) if submodule else tvm
        for name in tvm.list_models(module=module):
            enum = tvm.get_model_weights(name)
            default = enum.DEFAULT
            weights = {
                member.name: [os.path.basename(urlparse(member.url).path), member.meta.get("_file_size")]
                for member in enum
            }
            catalogue[name] = {
                "task": task,
                "default": default.name,
                "weights": weights,
                "categories": len(default.meta["categories"]),
                "description": describe(default.meta),
            }
    return catalogue


def write_data_module(path: Path) -> None:
    """Write catalogue_data.py from the installed torchvision (scripts/make_catalogue.py)."""
    import torchvision

    lines = [
        f'"""The torchvision {torchvision.__version__.split("+")[0]} catalogue, written by '
        "scripts/make_catalogue.py from torchvision's registry;",
        'do not edit: run the script again after upgrading torchvision."""',
        "",
        "# ruff: noqa: E501",
        "# fmt: off",
        "CATALOGUE = {",
    ]
    for name, entry in generate().items():
        lines.append(f"    {name!r}: {entry!r},")
    lines += ["}", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
