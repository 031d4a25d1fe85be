"""timm classifiers: `timm:NAME` with a local checkpoint (--weights FILE: safetensors, or a weights-only
.pth/.bin), through the optional extra `timm`.

The architecture is built with `timm.create_model(NAME, pretrained=False)` sized for the checkpoint's
classifier (nothing is downloaded); preprocessing comes from timm's pretrained config for NAME
(`resolve_data_config`: input size, interpolation, crop_pct, mean/std); labels from a labels file, or
ImageNet's class names (timm ships them) when the checkpoint has an ImageNet-sized classifier.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from batchlens.core.errors import BatchLensError
from batchlens.core.models.base import LoadedModel, ModelInfo, prepare
from batchlens.core.models.preprocessing import Preprocessing
from batchlens.core.models.state_dict import load_state_dict_checked, read_weights
from batchlens.core.tasks import make_adapter

log = logging.getLogger(__name__)

TIMM_PREFIX = "timm:"


def is_timm_model(model: str) -> bool:
    return model.startswith(TIMM_PREFIX)


def _timm():
    try:
        import timm
    except ImportError:
        raise BatchLensError("timm models need the timm library: pip install 'batchlens[timm]'.") from None
    return timm


def _num_classes(module, state_dict: dict, name: str, path: Path) -> int:
    """The class count the checkpoint's classifier was trained for (timm names the classifier layer
    in pretrained_cfg["classifier"], e.g. "fc" or "head.fc")."""
    classifier = module.pretrained_cfg.get("classifier") or "fc"
    names = classifier if isinstance(classifier, (list, tuple)) else [classifier]
    for layer in names:
        weight = state_dict.get(f"{layer}.weight")
        if weight is not None:
            return int(weight.shape[0])
    return int(getattr(module, "num_classes", 0))


def imagenet_labels(timm, num_classes: int) -> list[str] | None:
    """Readable ImageNet class names ("tench", "goldfish"...) for 1000/21k-class heads; None otherwise."""
    subset = timm.data.infer_imagenet_subset({"num_classes": num_classes})
    if subset is None:
        return None
    return timm.data.ImageNetInfo(subset).label_descriptions()


def load_timm(model: str, device: torch.device, options: dict | None = None) -> LoadedModel:
    """`timm:NAME` with options["weights"] (see the module docstring)."""
    from batchlens.core.models.files import read_labels  # (files.py imports the sources' registry)

    options = dict(options or {})
    name = model.removeprefix(TIMM_PREFIX)
    timm = _timm()
    if not timm.is_model(name):
        raise BatchLensError(
            f"{model}: timm has no model called {name!r} (timm.list_models() lists them, e.g. resnet50, "
            "vit_base_patch16_224, convnext_tiny)."
        )
    if not options.get("weights"):
        raise BatchLensError(
            f"{model}: give the checkpoint with --weights FILE (safetensors or a weights-only .pth/.bin); "
            "BatchLens does not download timm weights."
        )
    path = Path(options["weights"]).expanduser()
    if not path.is_file():
        raise BatchLensError(f"The weights file {path} does not exist.")
    state_dict = read_weights(path, trust_pickle=bool(options.get("trust_pickle")))
    if not isinstance(state_dict, dict):
        raise BatchLensError(f"{path}: holds a whole pickled model, not weights for timm's {name}.")
    probe = timm.create_model(name, pretrained=False)  # reads the classifier name and default config
    num_classes = _num_classes(probe, state_dict, name, path)
    module = probe if num_classes == probe.num_classes else timm.create_model(
        name, pretrained=False, num_classes=num_classes
    )
    del probe
    load_state_dict_checked(module, state_dict, str(path), name)
    del state_dict
    config = timm.data.resolve_data_config({}, model=module)
    preprocessing = Preprocessing.from_timm(config, name)
    labels = read_labels(options["labels"]) if options.get("labels") else imagenet_labels(timm, num_classes)
    adapter = make_adapter(
        "classification",
        transform=preprocessing.to_transform(),
        labels=labels,
        color_mode=preprocessing.color_mode,
        options=options,
    )
    params = sum(p.numel() for p in module.parameters())
    description = f"timm {name} ({params / 1e6:.1f} M params, {num_classes} classes) from {path.name}"
    info = ModelInfo(f"{model} ({path.name})", "classification", "timm", description, path.stat().st_size)
    return LoadedModel(info, prepare(module, device), adapter, device, preprocessing=preprocessing)
