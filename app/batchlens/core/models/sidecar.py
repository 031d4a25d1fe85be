"""The sidecar NAME.json that says what a model is: task, labels, input size, normalisation."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from batchlens.core.errors import BatchLensError

KNOWN_KEYS = {
    "task",
    "labels",
    "input_size",
    "mean",
    "std",
    "color_mode",
    "arch",
    "arch_kwargs",
    "description",
    "name",
}


@dataclass(frozen=True)
class Sidecar:
    task: str
    labels: list[str] | None = None
    input_size: tuple[int, int] | None = None  # (height, width)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    color_mode: str = "RGB"
    arch: str | None = None
    arch_kwargs: dict = field(default_factory=dict)
    description: str = ""
    name: str | None = None


def parse_sidecar(data: dict, source: str) -> Sidecar:
    """Validate a sidecar's contents; `source` (a file name) is used in error messages."""
    if not isinstance(data, dict):
        raise BatchLensError(f"{source}: a model sidecar must be a JSON object.")
    unknown = set(data) - KNOWN_KEYS
    if unknown:
        raise BatchLensError(
            f"{source}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"known keys are {', '.join(sorted(KNOWN_KEYS))}."
        )
    if "task" not in data:
        raise BatchLensError(f'{source}: the sidecar must say which task the model does ("task").')
    labels = data.get("labels")
    if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        raise BatchLensError(f'{source}: "labels" must be a list of strings.')
    size = data.get("input_size")
    if size is not None:
        if isinstance(size, int):
            size = [size, size]
        if not (
            isinstance(size, list) and len(size) == 2 and all(isinstance(x, int) and x > 0 for x in size)
        ):
            raise BatchLensError(f'{source}: "input_size" must be [height, width] in pixels.')
        size = (size[0], size[1])
    color_mode = data.get("color_mode", "RGB")
    if color_mode not in ("RGB", "L"):
        raise BatchLensError(f'{source}: "color_mode" must be "RGB" or "L" (greyscale).')
    channels = 1 if color_mode == "L" else 3
    stats = {}
    for key in ("mean", "std"):
        value = data.get(key)
        if value is not None:
            if not (
                isinstance(value, list)
                and len(value) == channels
                and all(isinstance(x, (int, float)) for x in value)
            ):
                raise BatchLensError(f'{source}: "{key}" must be a list of {channels} numbers.')
            value = tuple(float(x) for x in value)
        stats[key] = value
    return Sidecar(
        task=data["task"],
        labels=labels,
        input_size=size,
        mean=stats["mean"],
        std=stats["std"],
        color_mode=color_mode,
        arch=data.get("arch"),
        arch_kwargs=data.get("arch_kwargs") or {},
        description=data.get("description", ""),
        name=data.get("name"),
    )


def read_sidecar(path: Path) -> Sidecar:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BatchLensError(f"{path}: sidecar file not found.") from None
    except json.JSONDecodeError as exc:
        raise BatchLensError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    return parse_sidecar(data, str(path))
