"""Where models come from. `list_models()` for pickers, `load_model()` for the runner.

Sources, one module each, all producing a LoadedModel with its Preprocessing: the built-in demos
(resources/), the torchvision catalogue (catalogue.py), model files + sidecar (files.py: TorchScript,
torch.export, safetensors and .pth state_dicts), Hugging Face folders and the HF cache (hf.py,
hf_cache.py) and timm checkpoints (timm_models.py). `SOURCES` says which one takes a model id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

# Only what lists models and answers questions about them is imported here; the loaders (torch,
# torchvision, transformers, timm) are imported when a model loads, so the window and `batchlens
# models` start without them.
from batchlens.core.errors import BatchLensError
from batchlens.core.models.builtin import BUILTIN_IDS, list_builtin
from batchlens.core.models.catalogue_index import is_catalogue_model, is_downloaded, list_catalogue
from batchlens.core.models.errors import (
    DownloadCancelled,
    PickleRefusedError,
    StateDictMismatchError,
    WeightsDownloadError,
)
from batchlens.core.models.files import MODEL_FILE_SUFFIXES, looks_like_model_file, pickle_risk
from batchlens.core.models.hf_cache import HF_PREFIX, is_cached, list_hf_cache, snapshot_for
from batchlens.core.models.info import ModelInfo, is_hf_model, is_timm_model

if TYPE_CHECKING:
    import torch

    from batchlens.core.models.base import LoadedModel
    from batchlens.core.models.catalogue import Progress


def __getattr__(name: str):
    if name == "LoadedModel":  # imports torch: loaded when first asked for
        from batchlens.core.models.base import LoadedModel

        return LoadedModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _load_builtin(model: str, device: torch.device, options: dict, progress: Progress | None) -> LoadedModel:
    from batchlens.core.models.builtin import load_builtin

    return load_builtin(model, device, options)


def _load_hf(model: str, device: torch.device, options: dict, progress: Progress | None) -> LoadedModel:
    from batchlens.core.models.hf import load_hf

    return load_hf(model, device, options)


def _load_timm(model: str, device: torch.device, options: dict, progress: Progress | None) -> LoadedModel:
    from batchlens.core.models.timm_models import load_timm

    return load_timm(model, device, options)


def _is_file(model: str) -> bool:
    return Path(model).expanduser().is_file()


def _load_file(model: str, device: torch.device, options: dict, progress: Progress | None) -> LoadedModel:
    from batchlens.core.models.files import load_model_file

    return load_model_file(Path(model).expanduser(), device, options)


def _load_torchvision(model: str, device: torch.device, options: dict, progress: Progress | None):
    from batchlens.core.models.catalogue import load_catalogue
    from batchlens.core.models.files import load_model_file

    if options.get("weights"):  # the architecture with the user's state_dict, no download
        weights = Path(options["weights"]).expanduser()
        return load_model_file(weights, device, {**options, "arch": model}, f"{model} ({weights.name})")
    return load_catalogue(model, device, options, progress)


def _never(model: str, options: dict) -> bool:
    return False


def _hf_needs_download(model: str, options: dict) -> bool:
    return model.startswith(HF_PREFIX) and not is_cached(model)  # (a folder is never downloaded)


def _download_hf(model: str, progress: Progress | None) -> Path:
    return snapshot_for(model, progress)


def _torchvision_needs_download(model: str, options: dict) -> bool:
    return not options.get("weights") and not is_downloaded(model)


def _download_torchvision(model: str, progress: Progress | None) -> Path:
    from batchlens.core.models.catalogue import download_weights as download_catalogue_weights

    return download_catalogue_weights(model, progress)


@dataclass(frozen=True)
class ModelSource:
    """One place models come from: `claims(model id)` says whether the id is its to load, and
    `load(model id, device, options, progress)` returns the LoadedModel (or raises BatchLensError);
    `needs_download(model id, options)` whether loading would first download something, which
    `download(model id, progress)` fetches into the source's cache."""

    name: str
    claims: Callable[[str], bool]
    load: Callable[..., LoadedModel]
    needs_download: Callable[[str, dict], bool] = _never
    download: Callable[..., Path] = _download_torchvision  # (torch hub: what the torchvision ids fetch)


# In the order they are asked; a new source is one module and one line here.
SOURCES = (
    ModelSource("built-in", lambda model: model in BUILTIN_IDS, _load_builtin),
    # hf:ORG/NAME (downloaded into the Hugging Face cache), folders
    ModelSource("huggingface", is_hf_model, _load_hf, _hf_needs_download, _download_hf),
    ModelSource("timm", is_timm_model, _load_timm),  # timm:NAME
    ModelSource("file", _is_file, _load_file),  # TorchScript, torch.export, state_dicts + sidecar
    ModelSource("torchvision", is_catalogue_model, _load_torchvision, _torchvision_needs_download),
)


#: The options that describe a model file (docs/models.md): the other sources fix these themselves (a
#: built-in demo its sidecar, torchvision its weights' preset, Hugging Face and timm their configs).
FILE_ONLY_OPTIONS = ("arch", "input_size", "resize", "crop", "interpolation", "mean", "std")


def refuse_options_that_do_not_apply(model: str, options: dict | None = None) -> None:
    """BatchLensError (one sentence) when `options` hold a model file's options for a model whose
    preprocessing is fixed, where they would be silently ignored (--mean for demo-shapes)."""
    options = options or {}
    source = next((s for s in SOURCES if s.claims(model)), None)
    if source is None or source.name == "file":
        return
    # torchvision's architecture with the user's state_dict: loaded as a model file, arch = the model
    allowed = {key for key in FILE_ONLY_OPTIONS if key != "arch"} if source.name == "torchvision" else set()
    given = [key for key in FILE_ONLY_OPTIONS if options.get(key) is not None]
    if not options.get("weights"):
        allowed = set()
    refused = [key for key in given if key not in allowed]
    if refused:
        flags = " and ".join(", ".join(f"--{key.replace('_', '-')}" for key in refused).rsplit(", ", 1))
        raise BatchLensError(
            f"{flags} {'does' if len(refused) == 1 else 'do'} not apply to {model}: its preprocessing is "
            f"fixed by the {source.name} model itself, so leave {'it' if len(refused) == 1 else 'them'} out "
            "(those options describe a model file: docs/models.md)."
        )


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
    """True when `load_model(model, ...)` would first download catalogue weights or a Hugging Face
    model (hf:ORG/NAME not in the cache)."""
    source = _source_of(model)
    return source is not None and source.needs_download(model, options or {})


def download_weights(model: str, progress: Progress | None = None) -> Path:
    """Fetch what `model` needs into its cache (torch hub, or the Hugging Face cache), with progress."""
    source = _source_of(model)
    return (source.download if source else _download_torchvision)(model, progress)


def _source_of(model: str) -> ModelSource | None:
    """The source that takes `model`: the first of SOURCES that claims it."""
    return next((source for source in SOURCES if source.claims(model)), None)


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
    refuse_options_that_do_not_apply(model, options)
    for source in SOURCES:
        if source.claims(model):
            return source.load(model, device, options, progress)
    raise unknown_model(model)


def check_model_id(model: str) -> None:
    """Raise the BatchLensError `load_model` would for an id no source takes (a typo, a model file that
    is not there), without importing torch: `batchlens run` says it before PyTorch loads."""
    if not any(source.claims(model) for source in SOURCES):
        raise unknown_model(model)


def unknown_model(model: str) -> BatchLensError:
    if looks_like_model_file(model):
        return BatchLensError(f"The model file {Path(model).expanduser()} does not exist.")
    return BatchLensError(
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
    "check_model_id",
    "download_weights",
    "file_to_trust",
    "list_models",
    "load_model",
    "needs_download",
    "refuse_options_that_do_not_apply",
]
