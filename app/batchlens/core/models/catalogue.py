"""The torchvision catalogue: every classification, detection and segmentation model torchvision lists.

Everything model-specific comes from torchvision's registry: the list (read without torch from
catalogue_data.py, which scripts/make_catalogue.py writes from `list_models(module=...)`), the
weights (`get_model_weights`), the preprocessing (`weights.transforms()`) and the labels
(`weights.meta["categories"]`). Weights download once into the torch hub cache, with progress.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from torch import nn

from batchlens.core.errors import BatchLensError
from batchlens.core.models import catalogue_index
from batchlens.core.models.base import LoadedModel, ModelInfo, prepare
from batchlens.core.models.catalogue_index import (  # noqa: F401  (the list, re-exported: no torch needed)
    catalogue_tasks,
    describe,
    is_catalogue_model,
    is_downloaded,
    list_catalogue,
    split_id,
)
from batchlens.core.models.errors import DownloadCancelled, WeightsDownloadError
from batchlens.core.models.preprocessing import Preprocessing
from batchlens.core.models.state_dict import torch_load
from batchlens.core.tasks import make_adapter

log = logging.getLogger(__name__)

# progress(bytes_done, bytes_total or None) -> False to cancel
Progress = Callable[[int, int | None], bool | None]

_CHUNK = 1 << 16
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # torch hub's convention: NAME-<sha256 prefix>.pth
_BUILD_LOCK = threading.Lock()


def weights_for(model_id: str) -> tvm.WeightsEnum:
    """The weights a catalogue id names (its DEFAULT weights when no variant is given)."""
    name, variant = split_id(model_id)
    enum = tvm.get_model_weights(name)
    if variant is None:
        return enum.DEFAULT
    try:
        return enum[variant]
    except KeyError:
        choices = ", ".join(m for m in enum.__members__ if m != "DEFAULT")
        raise BatchLensError(f"{name} has no weights {variant!r}; it has {choices}.") from None


def weights_path(weights: tvm.WeightsEnum) -> Path:
    """Where torch hub keeps (or will keep) this weights file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


catalogue_index.torchvision_weights_path = lambda model_id: weights_path(weights_for(model_id))


def download_file(url: str, dest: Path, progress: Progress | None = None, timeout: float = 30) -> Path:
    """Download `url` to `dest` (atomically), checking the hash prefix in the file name if it has one."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as f:
                total = int(response.headers.get("Content-Length") or 0) or None
                done = 0
                if progress is not None and progress(0, total) is False:
                    raise DownloadCancelled(f"Download of {url} cancelled.")
                while chunk := response.read(_CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress is not None and progress(done, total) is False:
                        raise DownloadCancelled(f"Download of {url} cancelled.")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc.strerror or exc
            raise WeightsDownloadError(
                f"Could not download {url}: {reason}. Is this computer offline? The weights are fetched once "
                f"into {dest.parent} (the torch hub cache; set TORCH_HOME to move it). Without a network, "
                "download the file on another machine and copy it there, or pass a weights file with "
                "--weights FILE."
            ) from None
        expected = _HASH_IN_NAME.search(dest.name)
        if expected and not digest.hexdigest().startswith(expected.group(1)):
            raise WeightsDownloadError(f"The download of {url} is corrupt (wrong checksum); try again.")
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return dest


def download_weights(model_id: str, progress: Progress | None = None) -> Path:
    """Make sure the weights of a catalogue model are in the torch hub cache; returns their path."""
    weights = weights_for(model_id)
    path = weights_path(weights)
    if not path.is_file():
        log.info("downloading %s to %s", weights.url, path)
        download_file(weights.url, path, progress)
    return path


def build_architecture(arch: str, num_classes: int | None = None, state_dict: dict | None = None, **kwargs):
    """An untrained torchvision architecture (no download), sized for `num_classes` if given."""
    task = catalogue_tasks().get(arch)
    if task is None:
        raise BatchLensError(
            f"Unknown architecture {arch!r}: use a torchvision model name from `batchlens models` "
            "(for example resnet18, fasterrcnn_resnet50_fpn, deeplabv3_resnet50)."
        )
    if num_classes is not None:
        kwargs.setdefault("num_classes", num_classes)
    if task in ("detection", "segmentation"):
        kwargs.setdefault("weights_backbone", None)  # never download a backbone for a user's weights
    if task == "segmentation" and state_dict and any(k.startswith("aux_classifier.") for k in state_dict):
        kwargs.setdefault("aux_loss", True)
    try:
        return tvm.get_model(arch, weights=None, **kwargs)
    except (TypeError, ValueError) as exc:
        raise BatchLensError(f"Cannot build {arch} with {kwargs}: {exc}.") from None


def _build_pretrained(name: str, weights: tvm.WeightsEnum, state_dict: dict) -> nn.Module:
    """torchvision's builder with its weights: it sets the architecture's options from the weights
    (num_classes, aux heads, image size...) and renames old keys. It would fetch the state_dict through
    weights.get_state_dict, which torch.hub unpickles fully; we hand it the one we loaded with
    weights_only=True instead (for the duration of the build, under a lock)."""
    cls = type(weights)
    with _BUILD_LOCK:
        cls.get_state_dict = lambda self, *args, **kwargs: state_dict
        try:
            return tvm.get_model(name, weights=weights)
        finally:
            del cls.get_state_dict


def drop_aux_head(module: nn.Module) -> nn.Module:
    """Segmentation models' auxiliary head only helps training; without it inference does less work."""
    if getattr(module, "aux_classifier", None) is not None:
        module.aux_classifier = None
    return module


def keypoint_names(weights: tvm.WeightsEnum, num_keypoints: int | None = None) -> dict:
    """{"keypoint_names": [...]} for an adapter, from weights that name their keypoints (Keypoint R-CNN),
    unless the model was built with another number of keypoints; else {}."""
    names = weights.meta.get("keypoint_names")
    return {"keypoint_names": list(names)} if names and num_keypoints in (None, len(names)) else {}


def catalogue_adapter(task: str, weights: tvm.WeightsEnum, options: dict | None = None):
    """The task adapter for catalogue weights: their preprocessing, labels and keypoint names."""
    return make_adapter(
        task,
        transform=weights.transforms(),
        labels=list(weights.meta["categories"]),
        options=dict(options or {}),
        **keypoint_names(weights),
    )


def load_catalogue(
    model_id: str, device: torch.device, options: dict | None = None, progress: Progress | None = None
) -> LoadedModel:
    """A catalogue model with its pretrained weights (downloaded if needed)."""
    options = dict(options or {})
    name, _ = split_id(model_id)
    task = catalogue_tasks()[name]
    weights = weights_for(model_id)
    path = download_weights(model_id, progress)
    state_dict = torch_load(path)  # weights_only=True: torchvision's files are plain state_dicts
    module = drop_aux_head(_build_pretrained(name, weights, state_dict))
    del state_dict
    adapter = catalogue_adapter(task, weights, options)
    size = path.stat().st_size
    info = ModelInfo(model_id, task, "torchvision", describe(weights.meta), size, downloaded=True)
    return LoadedModel(
        info,
        prepare(module, device),
        adapter,
        device,
        takes_list=task == "detection",
        preprocessing=Preprocessing.from_torchvision(weights),
    )
