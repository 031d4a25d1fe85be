"""Where models come from. `list_models()` for pickers, `load_model()` for the runner.

Sources, one module each, all producing a LoadedModel with its Preprocessing: the built-in demos
(resources/), the torchvision catalogue (catalogue.py), model files + sidecar (files.py: TorchScript,
torch.export, safetensors and .pth state_dicts), Hugging Face folders and the HF cache (hf.py,
hf_cache.py) and timm checkpoints (timm_models.py). `SOURCES` says which one takes a model id.
"""

from __future__ import annotations

from pathlib import Path

import torch

from batchlens.core.errors import BatchLensError
from batchlens.core.models.base import LoadedModel, ModelInfo
from batchlens.core.models.builtin import BUILTIN_IDS, list_builtin, load_builtin
from batchlens.core.models.catalogue import (
    Progress,
    download_weights,
    is_catalogue_model,
    is_downloaded,
    list_catalogue,
    load_catalogue,
)
from batchlens.core.models.errors import (
    DownloadCancelled,
    PickleRefusedError,
    StateDictMismatchError,
    WeightsDownloadError,
)
from batchlens.core.models.files import (
    MODEL_FILE_SUFFIXES,
    load_model_file,
    looks_like_model_file,
    pickle_risk,
)
from batchlens.core.models.hf import is_hf_model, load_hf
from batchlens.core.models.hf_cache import list_hf_cache
from batchlens.core.models.timm_models import is_timm_model, load_timm

# Sources that recognise their model ids by a prefix or a folder layout (hf:ORG/NAME or a folder with
# config.json; timm:NAME): (claims(model id), load(model id, device, options)).
SOURCES = [(is_hf_model, load_hf), (is_timm_model, load_timm)]


def list_models(task: str | None = None) -> list[ModelInfo]:
    """The built-in demos first, then the torchvision catalogue (classification, detection,
    segmentation), then the vision models in the Hugging Face cache on this computer. Model files are
    not listed: they are opened by path."""
    builtin = [m for m in list_builtin() if task in (None, m.task)]
    cached = [m for m in list_hf_cache() if task in (None, m.task)]
    return builtin + list_catalogue(task) + cached


def file_to_trust(model: str, options: dict | None = None) -> tuple[Path, list[str]] | None:
    """(file, the Python objects it imports) when running `model` would unpickle a file in full, which
    needs the user's trust ("trust_pickle"); None when nothing needs trusting."""
    options = options or {}
    path = Path(options.get("weights") or model).expanduser()
    if options.get("trust_pickle") or not path.is_file():
        return None
    objects = pickle_risk(path)
    return (path, objects) if objects else None


def needs_download(model: str, options: dict | None = None) -> bool:
    """True when `load_model(model, ...)` would first download catalogue weights."""
    options = options or {}
    if options.get("weights") or model in BUILTIN_IDS or Path(model).expanduser().is_file():
        return False
    return is_catalogue_model(model) and not is_downloaded(model)


def load_model(
    model: str, device: torch.device, options: dict | None = None, progress: Progress | None = None
) -> LoadedModel:
    """Load `model` onto `device`, or raise BatchLensError.

    `model` is a built-in id, a torchvision model name (optionally NAME:WEIGHTS, e.g.
    resnet50:IMAGENET1K_V1) or the path of a model file. `options` may hold "weights" (a state_dict file
    for a torchvision architecture), the model description options ("task", "labels", "input_size",
    "mean", "std", "arch"), "trust_pickle", and the task's options ("min_score"). `progress` follows a
    catalogue download (see catalogue.Progress)."""
    options = dict(options or {})
    if model in BUILTIN_IDS:
        return load_builtin(model, device, options)
    for claims, load in SOURCES:
        if claims(model):
            return load(model, device, options)
    path = Path(model).expanduser()
    if path.is_file():
        return load_model_file(path, device, options)
    if is_catalogue_model(model):
        if options.get("weights"):
            weights = Path(options["weights"]).expanduser()
            return load_model_file(weights, device, {**options, "arch": model}, f"{model} ({weights.name})")
        return load_catalogue(model, device, options, progress)
    if looks_like_model_file(model):
        raise BatchLensError(f"The model file {path} does not exist.")
    raise BatchLensError(
        f"Unknown model {model!r}. Run `batchlens models` to see the models you can use, or give the path "
        f"of a model file ({', '.join(sorted(MODEL_FILE_SUFFIXES))})."
    )


__all__ = [
    "DownloadCancelled",
    "LoadedModel",
    "ModelInfo",
    "PickleRefusedError",
    "StateDictMismatchError",
    "WeightsDownloadError",
    "download_weights",
    "file_to_trust",
    "list_models",
    "load_model",
    "needs_download",
]
