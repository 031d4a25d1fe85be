"""Model files a user was handed: TorchScript (.pt/.ts), torch.export programs (.pt2), safetensors and
.pth state_dicts (with an architecture), and, only when trusted, fully pickled modules.

What the model is (task, labels, input size, mean/std, architecture) comes from a sidecar NAME.json next
to the file, overridden by the options --task, --labels, --input-size, --mean, --std and --arch.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from batchlens.core.errors import BatchLensError
from batchlens.core.models.audit import (
    checkpoint_risks,
    pt2_risks,
    scripted_graph_risks,
    summarise,
    torchscript_risks,
)
from batchlens.core.models.catalogue_index import catalogue_tasks
from batchlens.core.models.errors import PickleRefusedError
from batchlens.core.models.info import TASKS, ModelInfo
from batchlens.core.models.preprocessing import Preprocessing
from batchlens.core.models.sidecar import (
    Sidecar,
    normalise_task,
    parse_sidecar,
    read_json_file,
    read_text_file,
)
from batchlens.core.models.sidecar_store import stored_sidecar_path
from batchlens.core.models.size_audit import refuse_oversized

if TYPE_CHECKING:
    import torch
    from torch import nn

    from batchlens.core.models.base import LoadedModel


log = logging.getLogger(__name__)

TORCHSCRIPT_SUFFIXES = {".pt", ".ts", ".torchscript", ".jit"}
EXPORT_SUFFIXES = {".pt2"}
WEIGHTS_SUFFIXES = {".safetensors", ".pth", ".pt", ".bin", ".ckpt"}
MODEL_FILE_SUFFIXES = TORCHSCRIPT_SUFFIXES | EXPORT_SUFFIXES | WEIGHTS_SUFFIXES
# Options that describe the model, as the sidecar keys they override.
SPEC_OPTIONS = ("task", "labels", "input_size", "resize", "crop", "interpolation", "mean", "std", "arch")
# A size given on the command line replaces all of the sidecar's (they would contradict each other).
GEOMETRY_KEYS = ("input_size", "resize", "crop", "crop_pct", "max_size")


def looks_like_model_file(model: str) -> bool:
    path = Path(model)
    return path.suffix.lower() in MODEL_FILE_SUFFIXES or len(path.parts) > 1


def sidecar_candidates(path: Path) -> list[Path]:
    """Where a model file's sidecar may be, in the order they are used: NAME.pt2.json (it names this
    one file), then NAME.json (it may describe several exports of one model), then the copy the window
    saved in BatchLens's data folder when the model's folder was read-only."""
    path = Path(path)
    beside = [path.with_name(path.name + ".json"), path.with_suffix(".json")]
    return [c for c in dict.fromkeys(beside) if c != path] + [stored_sidecar_path(path)]


def sidecar_path_for(path: Path) -> Path | None:
    """The sidecar a model file uses (see sidecar_candidates); None when there is none."""
    for candidate in sidecar_candidates(path):
        if candidate.exists() and not candidate.is_dir():  # a named pipe is found, then refused when read
            return candidate
    return None


def sidecar_note(path: Path) -> str | None:
    """A sentence naming the sidecar used when more than one exists for `path`, else None."""
    found = [c for c in sidecar_candidates(path) if c.exists() and not c.is_dir()]
    if len(found) < 2:
        return None
    return (
        f"{Path(path).name} has {len(found)} sidecars; used {found[0]}, not "
        f"{', '.join(str(f) for f in found[1:])} (NAME.pt2.json comes before NAME.json)."
    )


def file_model_info(model_id: str) -> ModelInfo:
    """What the model picker shows for a model file (its path is its id) before it is loaded: the task
    its sidecar names or its architecture implies, else "from file" (the task is known once it loads)."""
    path = Path(model_id)
    task = "from file"
    sidecar = sidecar_path_for(path)
    if sidecar is not None:
        try:
            data = _read_sidecar_dict(sidecar)
            named = data.get("task") or catalogue_tasks().get(data.get("arch"))
            task = named if named in TASKS else task
        except (BatchLensError, OSError, ValueError):
            pass  # a broken sidecar is reported, with its reason, when the model loads
    size = path.stat().st_size if path.is_file() else None
    return ModelInfo(id=model_id, task=task, source="file", description=path.name, size_bytes=size)


def read_labels(path: Path, what: str = "labels file") -> list[str]:
    """Labels from a .json list or a text file with one label per line (read as sidecar.read_text_file
    reads: a regular file, bounded, UTF-8)."""
    path = Path(path).expanduser()
    if path.suffix.lower() == ".json":
        labels = read_json_file(path, what)
        if not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
            raise BatchLensError(f"{path}: a JSON labels file must hold a list of strings.")
    else:
        labels = [line.strip() for line in read_text_file(path, what).splitlines()]
        while labels and not labels[-1]:
            labels.pop()
    if not labels:
        raise BatchLensError(f"{path}: the labels file is empty.")
    return labels


def _read_sidecar_dict(path: Path) -> dict:
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise BatchLensError(f"{path}: a model sidecar must be a JSON object.")
    if isinstance(data.get("labels"), str):  # a labels file named relative to the sidecar
        data["labels"] = read_labels(_beside(path, data["labels"]))
    # Validate now, so that a mistake is reported against this file rather than the merged options.
    parse_sidecar({"task": "classification", **data}, str(path))
    return data


def _beside(sidecar: Path, name: str) -> Path:
    """The labels file a sidecar names: in the sidecar's folder or below it, never elsewhere on the disk
    (a sidecar that came with a download must not make BatchLens read, say, ~/.ssh into its results)."""
    folder = sidecar.parent.resolve()
    target = (folder / name).resolve()
    if not target.is_relative_to(folder):
        raise BatchLensError(
            f'{sidecar}: "labels" names {name!r}, outside the sidecar\'s folder; a sidecar may only name a '
            "labels file next to it (or pass --labels FILE)."
        )
    return target


def model_spec(path: Path, options: dict, weights_only: bool = False) -> tuple[Sidecar, Path | None]:
    """The sidecar next to `path` (if any) with the command-line options laid over it.
    `weights_only`: the file holds weights, so an architecture is what is missing first."""
    from batchlens.core.models.demo_nets import ARCHITECTURES as DEMO_ARCHITECTURES

    sidecar_file = sidecar_path_for(path)
    data = _read_sidecar_dict(sidecar_file) if sidecar_file else {}
    if any(options.get(key) is not None for key in GEOMETRY_KEYS):
        for key in GEOMETRY_KEYS:
            data.pop(key, None)
    for key in SPEC_OPTIONS:
        if options.get(key) is not None:
            data[key] = read_labels(options[key]) if key == "labels" else options[key]
    if "task" in data:
        data["task"] = normalise_task(data["task"])
    arch = data.get("arch")
    if arch and arch not in catalogue_tasks() and arch not in DEMO_ARCHITECTURES:
        raise BatchLensError(
            f"{sidecar_file or '--arch'}: unknown architecture {arch!r}; use a torchvision model name from "
            "`batchlens models` (for example resnet18, fasterrcnn_resnet50_fpn, deeplabv3_resnet50)."
        )
    arch_task = catalogue_tasks().get(arch or "")
    if "task" not in data and arch_task:
        data["task"] = arch_task
    if "task" not in data and weights_only and not data.get("arch"):
        raise _no_arch_error(path, sidecar_file)
    if "task" not in data:
        where = sidecar_file or path.with_suffix(".json")
        raise BatchLensError(
            f"{path}: BatchLens cannot tell which task this model does. Pass --task "
            "(classification, detection, segmentation or image_to_image) or write a sidecar "
            f'{where.name} next to it with at least {{"task": ...}}.'
        )
    if data["task"] not in TASKS:
        raise BatchLensError(
            f"{sidecar_file or '--task'}: unknown task {data['task']!r}; BatchLens knows "
            f"{', '.join(sorted(TASKS))}."
        )
    return parse_sidecar(data, str(sidecar_file or "the model options")), sidecar_file


def pickle_risk(path: Path) -> list[str]:
    """What loading a model file could do beyond computing, read without loading it (audit.py): the
    Python objects its pickles import, pickled weights or native code in a torch.export archive, any
    operator in a TorchScript or torch.export graph that is not a pure tensor operation (graph_ops.py).
    Empty: nothing to trust (plain weights, safetensors, a clean TorchScript or torch.export file). A
    window asks before loading when this is not empty."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if not path.is_file() or suffix not in MODEL_FILE_SUFFIXES - {".safetensors"}:
        return []
    if suffix in EXPORT_SUFFIXES or _is_torchscript(path):
        try:
            return pt2_risks(path) if suffix in EXPORT_SUFFIXES else torchscript_risks(path)
        except Exception as exc:  # torch may read an archive Python's zipfile cannot: never unchecked
            return [f"contents BatchLens cannot check ({type(exc).__name__})"]
    try:
        return checkpoint_risks(path)
    except Exception:  # not a torch.save zip (legacy format, another file): torch.load(weights_only) guards
        return []


def _refuse_untrusted(path: Path, scripted: bool) -> None:
    """Refuse a torch.export or TorchScript file that would run code or touch files when loaded or run."""
    risks = pickle_risk(path)
    if not risks:
        return
    if scripted or risks[0].startswith(
        ("the operator", "the custom class", "a size expression", "a shape guard")
    ):
        raise _graph_refused(path, risks)
    raise PickleRefusedError(
        path, summarise(risks), "Python pickles or native code, not only weights and a graph"
    )


def _graph_refused(path: Path, risks: list[str]) -> PickleRefusedError:
    """The refusal of a graph that calls what is not a pure tensor operation: the first one named."""
    return PickleRefusedError(
        path,
        risks[0] + (f" and {len(risks) - 1} more" if len(risks) > 1 else ""),
        "a model graph that calls more than pure tensor operations",
        "could read or write your files or run programs",
    )


def detections_only(inner: nn.Module) -> nn.Module:
    """Scripted torchvision detectors return (losses, detections); the engine wants the detections."""

    from torch import nn

    class DetectionsOnly(nn.Module):
        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, images):
            out = self.inner(images)
            if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], dict):
                return out[1]
            return out

    return DetectionsOnly(inner)


def is_weights_file(path: Path) -> bool:
    """A file of weights only (a state_dict: safetensors, .pth...), which needs an architecture."""
    return Path(path).suffix.lower() in WEIGHTS_SUFFIXES and not _is_torchscript(Path(path))


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a code/ folder; torch.save files are zips without one."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name or name.startswith("code/") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _load_program(path: Path) -> nn.Module:
    import torch

    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise BatchLensError(f"{path}: not a torch.export program ({type(exc).__name__}: {exc}).") from None
    return program.module()


def _no_arch_error(path: Path, sidecar_file: Path | None) -> BatchLensError:
    where = f'"arch" in {sidecar_file}' if sidecar_file else f'"arch" in a sidecar {path.stem}.json'
    return BatchLensError(
        f"{path} holds only weights (a state_dict). Say which architecture they belong to with --arch "
        f"NAME or {where}, e.g. resnet18 (`batchlens models` lists the torchvision names)."
    )


def _build_from_state_dict(
    path: Path, state_dict: dict, spec: Sidecar, sidecar_file: Path | None
) -> nn.Module:
    from batchlens.core.models.catalogue import build_architecture, drop_aux_head
    from batchlens.core.models.demo_nets import ARCHITECTURES as DEMO_ARCHITECTURES
    from batchlens.core.models.state_dict import load_state_dict_checked

    arch = spec.arch
    if not arch:
        raise _no_arch_error(path, sidecar_file)
    kwargs = dict(spec.arch_kwargs)
    if arch in DEMO_ARCHITECTURES:
        module = DEMO_ARCHITECTURES[arch](**kwargs)
    else:
        num_classes = len(spec.labels) if spec.labels and "num_classes" not in kwargs else None
        module = build_architecture(arch, num_classes, state_dict, **kwargs)
    load_state_dict_checked(module, state_dict, str(path), arch)
    return drop_aux_head(module)


def _read_module(path: Path, scripted: bool, spec, sidecar_file, options: dict):
    """The module a model file holds, by its kind (checked before: see `load_model_file`), and the
    words for that kind."""
    import torch
    from torch import nn

    from batchlens.core.models.state_dict import read_weights

    suffix = path.suffix.lower()
    if suffix in EXPORT_SUFFIXES:
        module, kind = _load_program(path), "torch.export program"
    elif scripted:
        try:
            module, kind = torch.jit.load(str(path), map_location="cpu"), "TorchScript"
        except RuntimeError as exc:
            raise BatchLensError(f"{path}: not a loadable TorchScript file ({exc}).") from None
        if not options.get("trust_pickle"):  # the graphs as torch compiled them, beside the code's text
            risks = scripted_graph_risks(module)
            if risks:
                raise _graph_refused(path, risks)
    elif suffix in TORCHSCRIPT_SUFFIXES - WEIGHTS_SUFFIXES:
        raise BatchLensError(f"{path}: not a TorchScript file (save it with torch.jit.save).")
    elif suffix in WEIGHTS_SUFFIXES:
        weights = read_weights(path, trust_pickle=bool(options.get("trust_pickle")))
        if isinstance(weights, nn.Module):  # a whole pickled model; only with trust_pickle
            module, kind = weights, "pickled model"
        else:
            module, kind = _build_from_state_dict(path, weights, spec, sidecar_file), f"{spec.arch} weights"
            del weights
    else:
        raise BatchLensError(
            f"{path}: unknown model file type {suffix!r}; BatchLens reads "
            f"{', '.join(sorted(MODEL_FILE_SUFFIXES))}."
        )
    return module, kind


def load_model_file(
    path: Path, device: torch.device, options: dict | None = None, model_id: str | None = None
) -> LoadedModel:
    """Load a model file (see the module docstring). `options` may carry the spec options above,
    "trust_pickle", and the task's options (min_score...)."""
    from batchlens.core.models.base import LoadedModel, prepare, sidecar_transform
    from batchlens.core.models.catalogue import keypoint_names, weights_for
    from batchlens.core.tasks import make_adapter

    options = dict(options or {})
    path = Path(path).expanduser()
    if not path.is_file():
        raise BatchLensError(f"The model file {path} does not exist.")
    suffix = path.suffix.lower()
    scripted = suffix in TORCHSCRIPT_SUFFIXES and _is_torchscript(path)
    weights_only = suffix in WEIGHTS_SUFFIXES and not scripted and not options.get("trust_pickle")
    if scripted or suffix in EXPORT_SUFFIXES:  # (state_dict files: read_weights checks them)
        if not options.get("trust_pickle"):
            _refuse_untrusted(path, scripted)
        refuse_oversized(path)  # before torch allocates anything, trusted or not
    spec, sidecar_file = model_spec(path, options, weights_only)
    module, kind = _read_module(path, scripted, spec, sidecar_file, options)
    if spec.task == "detection":
        module = detections_only(module)

    labels = spec.labels
    transform = None
    preprocessing = spec.preprocess()
    extra = {}
    if spec.arch in catalogue_tasks():
        # A torchvision architecture with the user's weights: its default weights say how images are
        # prepared and, when the class count is unchanged, what the classes are called.
        default = weights_for(spec.arch)
        if not spec.states_preprocessing:
            transform, preprocessing = default.transforms(), Preprocessing.from_torchvision(default)
        num_classes = spec.arch_kwargs.get("num_classes")
        if labels is None and num_classes in (None, len(default.meta["categories"])):
            labels = list(default.meta["categories"])
        extra = keypoint_names(default, spec.arch_kwargs.get("num_keypoints"))
    if transform is None:
        transform = sidecar_transform(spec)
    adapter = make_adapter(
        spec.task, transform=transform, labels=labels, color_mode=spec.color_mode, options=options, **extra
    )
    description = spec.description or f"{kind} from {path.name}"
    info = ModelInfo(model_id or str(path), spec.task, "file", description, path.stat().st_size)
    note = sidecar_note(path)
    if note:
        log.info("%s", note)
    return LoadedModel(
        info,
        prepare(module, device),
        adapter,
        device,
        takes_list=spec.task == "detection",
        preprocessing=preprocessing,
        notes=(note,) if note else (),
    )
