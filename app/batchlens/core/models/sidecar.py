"""The sidecar NAME.json that says what a model is: task, labels, input size, normalisation.

Sidecars and labels files come with model files from anywhere, so they are read defensively, here and
only here: a regular file (never a named pipe or device, which would block or never end), at most
MAX_SIDE_FILE_BYTES, UTF-8, JSON of sane depth, and values of the right types; each problem is one
sentence naming the file.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from batchlens.core.errors import BatchLensError
from batchlens.core.models.preprocessing import SIDECAR_KEYS, Preprocessing

MAX_SIDE_FILE_BYTES = 10 * 2**20  # a sidecar or labels file; 21k ImageNet labels are ~0.5 MB

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
    *SIDECAR_KEYS,  # how images are prepared: resize, crop, interpolation, mean/std... (preprocessing.py)
}


def normalise_task(task):
    """Forgiving where it is unambiguous: "Image-to-Image" and "image to image" mean image_to_image."""
    if not isinstance(task, str):
        return task
    return "_".join(task.strip().lower().replace("-", " ").split())


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
    preprocessing: Preprocessing | None = None  # None: built from input_size, mean, std, color_mode
    #: the sidecar says how images are prepared (else a source may use its own default, e.g. torchvision's)
    states_preprocessing: bool = False

    def preprocess(self) -> Preprocessing:
        if self.preprocessing is not None:
            return self.preprocessing
        return Preprocessing(
            resize=tuple(self.input_size) if self.input_size else None,
            mean=self.mean,
            std=self.std,
            color_mode=self.color_mode,
        )


def parse_sidecar(data: dict, source: str) -> Sidecar:
    """Validate a sidecar's contents; `source` (a file name) is used in error messages."""
    if not isinstance(data, dict):
        raise BatchLensError(f"{source}: a model sidecar must be a JSON object.")
    unknown = set(data) - KNOWN_KEYS
    if unknown:
        raise BatchLensError(
            # repr: quoted, with a new line or other unprintable character in a key shown escaped
            f"{source}: unknown key(s) {', '.join(map(repr, sorted(unknown)))}; "
            f"known keys are {', '.join(sorted(KNOWN_KEYS))}."
        )
    if data.get("task") is None:  # absent, or null: a sidecar always names its task
        raise BatchLensError(f'{source}: the sidecar must say which task the model does ("task").')
    for key in ("task", "arch", "description", "name", "color_mode"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise BatchLensError(f'{source}: "{key}" must be a string, not {_json_type(data[key])}.')
    if data.get("arch_kwargs") is not None and not isinstance(data["arch_kwargs"], dict):
        raise BatchLensError(f'{source}: "arch_kwargs" must be a JSON object (names to values).')
    labels = data.get("labels")
    if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        raise BatchLensError(f'{source}: "labels" must be a list of strings.')
    preprocessing = Preprocessing.from_sidecar(data, source)
    return Sidecar(
        task=normalise_task(data["task"]),
        labels=labels,
        input_size=preprocessing.resize if preprocessing.resize and len(preprocessing.resize) == 2 else None,
        mean=preprocessing.mean,
        std=preprocessing.std,
        color_mode=preprocessing.color_mode,
        arch=data.get("arch"),
        arch_kwargs=data.get("arch_kwargs") or {},
        description=data.get("description", ""),
        name=data.get("name"),
        preprocessing=preprocessing,
        states_preprocessing=any(key in data for key in SIDECAR_KEYS if key != "color_mode"),
    )


def read_text_file(path: Path, what: str = "sidecar") -> str:
    """The text of a small file that came with a model (a sidecar, a labels file), read safely.

    Only a regular file is opened (a named pipe would block forever, /dev/zero never ends), at most
    MAX_SIDE_FILE_BYTES are read, and it must be UTF-8 (a byte-order mark is allowed)."""
    path = Path(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise BatchLensError(
                f"{path}: the {what} is not a regular file (a folder, named pipe or device), so it was "
                "not read."
            )
        # O_NONBLOCK: should the file be swapped for a named pipe after the check, open still returns.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise BatchLensError(f"{path}: the {what} is not a regular file, so it was not read.")
            data = f.read(MAX_SIDE_FILE_BYTES + 1)
    except FileNotFoundError:
        raise BatchLensError(f"{path}: {what} not found.") from None
    except OSError as exc:
        raise BatchLensError(f"{path}: cannot read the {what} ({exc.strerror or exc}).") from None
    if len(data) > MAX_SIDE_FILE_BYTES:
        raise BatchLensError(
            f"{path}: the {what} is larger than {MAX_SIDE_FILE_BYTES // 2**20} MB, far more than a {what} "
            "needs, so it was not read."
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BatchLensError(
            f"{path}: the {what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at position {exc.start}); "
            "save it as UTF-8."
        ) from None


def read_json_file(path: Path, what: str = "sidecar"):
    """read_text_file, parsed as JSON, with one sentence for each way that can fail."""
    text = read_text_file(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BatchLensError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}).") from None
    except RecursionError:
        raise BatchLensError(
            f"{path}: the {what} nests lists or objects too deeply to read (thousands of levels)."
        ) from None


def read_sidecar(path: Path) -> Sidecar:
    return parse_sidecar(read_json_file(path), str(path))


def _json_type(value) -> str:
    names = {list: "a list", dict: "an object", bool: "true/false", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)
