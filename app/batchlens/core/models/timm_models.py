"""timm classifiers: `timm:NAME` with a local checkpoint (--weights FILE: safetensors, or a weights-only
.pth/.bin), and timm's own models on the Hugging Face hub (`hf:timm/NAME`, or the folder `hf download`
leaves), through the optional extra `timm`.

A hub folder is built by timm from its config.json (`timm.create_model("local-dir:FOLDER")`: the
architecture, its arguments and the pretrained config its weights were made with) and its weights are
read from model.safetensors only (never a pickled pytorch_model.bin).

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
from batchlens.core.models.info import TIMM_PREFIX, is_timm_model  # noqa: F401  (re-exported)
from batchlens.core.models.preprocessing import Preprocessing
from batchlens.core.models.size_audit import refuse_config_beyond_weights
from batchlens.core.models.state_dict import load_state_dict_checked, read_weights
from batchlens.core.tasks import make_adapter

log = logging.getLogger(__name__)


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


def _imagenet(timm, num_classes: int):
    """timm's ImageNetInfo for a 1000/21k-class head (synsets and their words); None otherwise."""
    subset = timm.data.infer_imagenet_subset({"num_classes": num_classes})
    return timm.data.ImageNetInfo(subset) if subset else None


def imagenet_labels(timm, num_classes: int) -> list[str] | None:
    """Readable ImageNet class names ("tench", "goldfish"...) for 1000/21k-class heads; None otherwise."""
    imagenet = _imagenet(timm, num_classes)
    return imagenet.label_descriptions() if imagenet else None


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
            f"{model}: give the checkpoint with --weights FILE (safetensors or a weights-only .pth/.bin), "
            f"or use timm's own weights from the Hugging Face hub: hf:timm/{name}.TAG (the tags are on "
            f"https://huggingface.co/timm, e.g. hf:timm/resnet50.a1_in1k)."
        )
    path = Path(options["weights"]).expanduser()
    if not path.is_file():
        raise BatchLensError(f"The weights file {path} does not exist.")
    state_dict = read_weights(path, trust_pickle=bool(options.get("trust_pickle")))
    if not isinstance(state_dict, dict):
        raise BatchLensError(f"{path}: holds a whole pickled model, not weights for timm's {name}.")
    probe = timm.create_model(name, pretrained=False)  # reads the classifier name and default config
    num_classes = _num_classes(probe, state_dict, name, path)
    module = (
        probe
        if num_classes == probe.num_classes
        else timm.create_model(name, pretrained=False, num_classes=num_classes)
    )
    del probe
    load_state_dict_checked(module, state_dict, str(path), name)
    del state_dict
    labels = read_labels(options["labels"]) if options.get("labels") else imagenet_labels(timm, num_classes)
    params = sum(p.numel() for p in module.parameters())
    description = f"timm {name} ({params / 1e6:.1f} M params, {num_classes} classes) from {path.name}"
    info = ModelInfo(f"{model} ({path.name})", "classification", "timm", description, path.stat().st_size)
    return _classifier(timm, module, name, info, labels, device, options)


def load_timm_folder(
    model: str, folder: Path, device: torch.device, options: dict | None = None
) -> LoadedModel:
    """A timm model folder from the hub (see the module docstring); `model` is its id (hf:timm/NAME or
    the folder's path)."""
    from batchlens.core.models.files import read_labels

    options = dict(options or {})
    timm = _timm()
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise BatchLensError(
            f"{folder}: no model.safetensors; BatchLens loads timm weights from the hub only from "
            "safetensors (a pytorch_model.bin is a pickle)."
        )
    try:
        build = lambda: timm.create_model(f"local-dir:{folder}", pretrained=False)  # noqa: E731 (config only)
        refuse_config_beyond_weights(build, [weights], str(folder))
        module = build()
    except BatchLensError:
        raise
    except Exception as exc:  # an architecture this timm does not have, arguments it does not take
        first = (str(exc).strip().splitlines() or [""])[0]
        raise BatchLensError(
            f"{folder}: timm {timm.__version__} could not build this model ({type(exc).__name__}: {first}); "
            "a newer timm may know it."
        ) from None
    name = module.pretrained_cfg.get("architecture") or type(module).__name__
    state_dict = read_weights(weights, trust_pickle=False)
    load_state_dict_checked(module, state_dict, str(weights), name)
    del state_dict
    num_classes = int(module.num_classes)
    labels = (
        read_labels(options["labels"]) if options.get("labels") else _config_labels(timm, module, num_classes)
    )
    params = sum(p.numel() for p in module.parameters())
    tag = module.pretrained_cfg.get("tag")
    description = (
        f"timm {name}{'.' + tag if tag else ''} ({params / 1e6:.1f} M params, {num_classes} classes)"
    )
    info = ModelInfo(model, "classification", "timm", description, weights.stat().st_size)
    return _classifier(timm, module, name, info, labels, device, options)


def _config_labels(timm, module, num_classes: int) -> list[str] | None:
    """Class names from a hub config: its descriptions; its names, in words where they are ImageNet's
    synsets (n01440764 -> "tench, Tinca tinca"); ImageNet's words for a 1000/21k-class head without names."""
    config = module.pretrained_cfg
    names, descriptions = config.get("label_names"), config.get("label_descriptions")
    if isinstance(descriptions, dict) and names:
        return [str(descriptions.get(n, n)) for n in names]
    if isinstance(descriptions, list) and len(descriptions) == num_classes:
        return [str(d) for d in descriptions]
    if names:
        imagenet = _imagenet(timm, num_classes)
        if imagenet is not None and list(names) == imagenet.label_names():
            return imagenet.label_descriptions()
        return [str(n) for n in names]
    return imagenet_labels(timm, num_classes)


def _classifier(timm, module, name: str, info: ModelInfo, labels, device, options: dict) -> LoadedModel:
    """The loaded timm classifier, prepared as timm's own data config says (resolve_data_config)."""
    preprocessing = Preprocessing.from_timm(timm.data.resolve_data_config({}, model=module), name)
    adapter = make_adapter(
        "classification",
        transform=preprocessing.to_transform(),
        labels=labels,
        color_mode=preprocessing.color_mode,
        options=options,
    )
    return LoadedModel(info, prepare(module, device), adapter, device, preprocessing=preprocessing)
